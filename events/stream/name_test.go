package stream

import (
	"os"
	"strconv"
	"testing"
)

func TestConsumerName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skipf("this machine has no host name (%v): the role is the name", err)
	}
	for _, tc := range []struct {
		withPID bool
		want    string
	}{
		{false, host},
		{true, host + "-" + strconv.Itoa(os.Getpid())},
	} {
		t.Run(strconv.FormatBool(tc.withPID), func(t *testing.T) {
			if got := ConsumerName("agent", tc.withPID); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
