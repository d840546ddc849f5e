package chaos

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/layout"
)

// TestNewerLayout: a certfleet newer than the running one raised the
// data's layout generation (as its start does, internal/layout). The
// running API server and coordinator must stop within the watch interval
// rather than misread the newer data, one started again must refuse to
// start, naming the key, and the agent, which reads only jobs, goes on.
// Before the gate, an API server of before went on and misread views and
// records of the newer layouts (docs/operations.md, "Upgrading").
func TestNewerLayout(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	if got := f.rdb.Get(ctx, layout.Key).Val(); got != strconv.Itoa(layout.Generation) {
		t.Fatalf("%s = %q after the fleet started, want %d", layout.Key, got, layout.Generation)
	}
	if err := f.rdb.Set(ctx, layout.Key, layout.Generation+1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"apiserver", "coordinator"} {
		p := f.procs[role]
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still running 30 s after a newer layout generation was recorded", role)
		}
		if p.err == nil {
			t.Errorf("%s exited without an error", role)
		}
		if log := tail(p.log, 20); !strings.Contains(log, layout.Key) {
			t.Errorf("%s's log does not name %s:\n%s", role, layout.Key, log)
		}
	}
	if !f.procs["agent"].running() {
		t.Errorf("the agent stopped too:\n%s", tail(f.procs["agent"].log, 20))
	}

	api := f.procs["apiserver"]
	api.run(t, f.bin)
	select {
	case <-api.done:
	case <-time.After(30 * time.Second):
		t.Fatal("an apiserver older than the data started")
	}
	if log := tail(api.log, 5); api.err == nil || !strings.Contains(log, "newer certfleet layout") {
		t.Errorf("apiserver against newer data: exit %v, log:\n%s", api.err, log)
	}
}
