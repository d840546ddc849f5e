package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
)

// certfleet regions list shows each region's state; forget drops a gone
// one and says so when there is none by that name.
func TestRegionsCommand(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	rdb := redisSrv.Client(t)
	for region, ago := range map[string]time.Duration{"eu-west": time.Second, "us-east": time.Hour} {
		if err := presence.Seen(ctx, rdb, region, time.Now().Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	if err := events.CheckShards(ctx, rdb, 4); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		for _, region := range []string{"eu-west", "us-east"} {
			if err := stream.CreateGroup(ctx, rdb, events.JobStream(i), agent.Group(region), "$"); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errOut strings.Builder
		code := runMain(ctx, append(args, "--redis-url", redisSrv.URL, "--log-level", "warn"), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := run("regions", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "eu-west") || !strings.HasSuffix(lines[1], "active") ||
		!strings.HasPrefix(lines[2], "us-east") || !strings.HasSuffix(lines[2], "stale") {
		t.Fatalf("regions list: exit %d, out:\n%s\nerr: %s", code, out, errOut)
	}
	if code, out, errOut := run("regions", "forget", "--region", "us-east"); code != 0 || !strings.Contains(out, "forgot region us-east and dropped its consumer group on 4 job streams") {
		t.Fatalf("forget: exit %d, out %q, err %q", code, out, errOut)
	}
	for i := range 4 {
		groups, err := rdb.XInfoGroups(ctx, events.JobStream(i)).Result()
		if err != nil || len(groups) != 1 || groups[0].Name != agent.Group("eu-west") {
			t.Errorf("groups of %s after forgetting us-east: %+v (%v), want eu-west's only", events.JobStream(i), groups, err)
		}
	}
	if code, _, errOut := run("regions", "forget", "--region", "us-east"); code != 1 || !strings.Contains(errOut, `no region "us-east"`) {
		t.Errorf("forget again: exit %d, err %q; want 1 and no such region", code, errOut)
	}
	if code, _, _ := run("regions", "forget"); code != 2 {
		t.Errorf("forget without a region: exit %d, want 2", code)
	}
	if _, out, _ := run("regions", "list"); strings.Contains(out, "us-east") {
		t.Errorf("us-east still listed after forget:\n%s", out)
	}
}
