package stream

import (
	"os"
	"strconv"
)

// ConsumerName is the default consumer name of a replica running role:
// the host's name (a pod's name in Kubernetes, a container's id in
// Docker), or role when the host has none. A host name outlives a
// restart, so the restarted replica reads its own pending entries first
// instead of leaving them to a claim after ClaimIdle. withPID appends
// "-PID" for the consumers whose restarted process must not take the old
// one's pending entries as its own.
func ConsumerName(role string, withPID bool) string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = role
	}
	if withPID {
		name += "-" + strconv.Itoa(os.Getpid())
	}
	return name
}
