package agent

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/testenv"
)

// With Wait set, a job is acknowledged only once a replica holds its
// result: without a replica the job stays pending, however often it is
// scanned; once a replica is there it is acknowledged, and the replica
// has the result.
func TestResultWaitsForReplica(t *testing.T) {
	ctx := context.Background()
	master := testenv.RedisPrimary(t)
	rdb := master.Client(t)
	a, err := New(Config{
		Region: "eu", Name: "agent-test", Shards: 1, Block: 50 * time.Millisecond, ClaimIdle: 200 * time.Millisecond,
		Scanner: ScannerConfig{Resolver: "127.0.0.1:53", Allow: loopbackAllow(t), HandshakeTimeout: time.Second},
		Wait:    replicated.Config{Replicas: 1, Timeout: 100 * time.Millisecond},
	}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// Nothing listens on the port: the scan ends at once (refused).
	env, _ := jobEnvelope(t, events.TenantID("ops@example.test"), "127.0.0.1", testenv.FreePort(t), time.Now())
	addJob(t, rdb, 0, env)
	pending := func() int64 {
		p, err := rdb.XPending(ctx, events.JobStream(0), Group("eu")).Result()
		if err != nil {
			return -1
		}
		return p.Count
	}
	// Published (on the master), never acknowledged.
	waitFor(t, 10*time.Second, func() string {
		if n := rdb.XLen(ctx, events.StreamResults).Val(); n < 2 {
			return "got " + strconv.FormatInt(n, 10) + " results published, want the job scanned twice"
		}
		return ""
	})
	if got := pending(); got != 1 {
		t.Fatalf("without a replica: got %d pending jobs, want the job still pending", got)
	}

	replica := master.Replica(t)
	waitFor(t, 20*time.Second, func() string {
		if got := pending(); got != 0 {
			return "with a replica: got " + strconv.FormatInt(got, 10) + " pending jobs, want the job acknowledged"
		}
		return ""
	})
	if n := replica.Client(t).XLen(ctx, events.StreamResults).Val(); n == 0 {
		t.Error("the job is acknowledged but the replica has no result")
	}
}
