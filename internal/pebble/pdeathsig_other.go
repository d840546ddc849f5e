//go:build !linux

package pebble

import "os/exec"

// setParentDeath does nothing where the kernel cannot tie a child's life
// to its parent's: Stop (and the lab's Close) end Pebble there.
func setParentDeath(*exec.Cmd) {}
