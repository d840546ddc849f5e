package pebble

import (
	"os/exec"
	"syscall"
)

// setParentDeath has Linux kill Pebble when its parent dies, so that no CA
// outlives a lab or test binary that was killed.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
