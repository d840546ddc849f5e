package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
)

// addJob appends a scan job to a shard stream the way the coordinator does.
func addJob(t *testing.T, rdb redis.UniversalClient, shard int, env events.Envelope) {
	t.Helper()
	values, err := env.StreamValues()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: events.JobStream(shard), Values: values}).Err(); err != nil {
		t.Fatal(err)
	}
}

func jobEnvelope(t *testing.T, tenant, host string, port int, scheduled time.Time) (events.Envelope, events.ScanRequestedV1) {
	t.Helper()
	domainID := uuid.NewString()
	job := events.ScanRequestedV1{
		JobID: events.JobID(domainID, scheduled.UnixMilli()), DomainID: domainID,
		Host: host, Port: port, ScheduledAt: scheduled,
	}
	env, err := events.NewWithID(job.JobID, events.ScanRequested, tenant, domainID, job)
	if err != nil {
		t.Fatal(err)
	}
	return env, job
}

// waitFor polls f until it returns "" or the deadline passes, then fails
// with f's last complaint.
func waitFor(t *testing.T, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgent(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)

	root := testenv.NewCA(t, "certfleet test root")
	now := time.Now()
	addr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"svc.example.test"}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour))))
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	resolver := startDNS(t, zoneOf(t, "svc.example.test. 60 IN A 127.0.0.1"))

	const shard, region = 3, "eu"
	tenant := events.TenantID("ops@example.test")
	fresh, job := jobEnvelope(t, tenant, "svc.example.test", port, now.Add(-time.Minute))
	stale, _ := jobEnvelope(t, tenant, "svc.example.test", port, now.Add(-2*time.Hour))
	wantID := events.ScanEventID(job.JobID, region)
	group := Group(region)

	// A consumer of the region takes the job and dies before acknowledging
	// it: the agent must claim it.
	if err := stream.CreateGroup(ctx, rdb, events.JobStream(shard), group, "0"); err != nil {
		t.Fatal(err)
	}
	addJob(t, rdb, shard, fresh)
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{events.JobStream(shard), ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	addJob(t, rdb, shard, stale)

	a, err := New(Config{
		Region: region, Name: "agent-test", Shards: 4, Block: 50 * time.Millisecond, ClaimIdle: 300 * time.Millisecond,
		Scanner: ScannerConfig{Resolver: resolver, ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(t), HandshakeTimeout: time.Second},
	}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(runCtx) }()
	defer func() {
		stop()
		<-runErr
	}()

	results := func() []events.Envelope {
		out, err := events.ReadAll(ctx, rdb, events.StreamResults)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	pending := func() int64 {
		p, err := rdb.XPending(ctx, events.JobStream(shard), group).Result()
		if err != nil {
			t.Fatal(err)
		}
		return p.Count
	}
	settled := func(n int) func() string {
		return func() string {
			if got, pend := len(results()), pending(); got != n || pend != 0 {
				return "got " + strconv.Itoa(got) + " results and " + strconv.FormatInt(pend, 10) +
					" pending jobs, want " + strconv.Itoa(n) + " and 0"
			}
			return ""
		}
	}

	// The claimed job is scanned and acknowledged; the stale one is
	// acknowledged without a result.
	waitFor(t, 10*time.Second, settled(1))
	// Jobs no agent can scan are dead-lettered, never left to block the
	// shard or dropped silently: an entry that is no event, an event that
	// is no job, a job without a host.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.JobStream(shard), Values: []string{"foo", "bar"}}).Err(); err != nil {
		t.Fatal(err)
	}
	notJob, err := events.New(events.DomainAdded, tenant, "d1", events.DomainAddedV1{})
	if err != nil {
		t.Fatal(err)
	}
	addJob(t, rdb, shard, notJob)
	noHost, _ := jobEnvelope(t, tenant, "", port, now)
	addJob(t, rdb, shard, noHost)
	waitFor(t, 10*time.Second, func() string {
		dl, err := rdb.XRange(ctx, stream.DeadLetterStream, "-", "+").Result()
		if err != nil {
			return err.Error()
		}
		if len(dl) != 3 || pending() != 0 {
			return "got " + strconv.Itoa(len(dl)) + " dead letters and " + strconv.FormatInt(pending(), 10) + " pending, want 3 and 0"
		}
		return ""
	})
	// The coordinator dispatching the same job again yields the same event.
	addJob(t, rdb, shard, fresh)
	waitFor(t, 10*time.Second, settled(2))

	for i, e := range results() {
		var got events.ScanCompletedV1
		if err := e.Decode(&got); err != nil {
			t.Fatal(err)
		}
		checks := []struct {
			field    string
			got, val any
		}{
			{"event_id", e.EventID, wantID},
			{"name", e.Name, events.ScanCompleted},
			{"tenant_id", e.TenantID, tenant},
			{"aggregate_id", e.AggregateID, job.DomainID},
			{"job_id", got.JobID, job.JobID},
			{"domain_id", got.DomainID, job.DomainID},
			{"host", got.Host, "svc.example.test"},
			{"port", got.Port, port},
			{"region", got.Region, region},
			{"agent", got.Agent, "agent-test"},
			{"results", len(got.Results), 1},
			{"started_before_finished", !got.FinishedAt.Before(got.StartedAt), true},
		}
		for _, c := range checks {
			if c.got != c.val {
				t.Errorf("result %d %s: got %v, want %v", i, c.field, c.got, c.val)
			}
		}
		if len(got.Results) == 1 {
			r := got.Results[0]
			if r.IP != "127.0.0.1" || r.Outcome != events.OutcomeOK || !r.ChainValid || !r.HostnameValid {
				t.Errorf("result %d: got %s %s chain=%v host=%v, want 127.0.0.1 ok chain=true host=true",
					i, r.IP, r.Outcome, r.ChainValid, r.HostnameValid)
			}
		}
	}

	stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
		runErr <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return within 5s of ctx ending")
	}
}

// An agent started with a shard count the fleet does not run refuses to
// start instead of leaving shards unread.
func TestAgentShardMismatch(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	if err := events.CheckShards(ctx, rdb, 16); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Region: "eu", Shards: 4, Scanner: ScannerConfig{Resolver: "127.0.0.1:53"}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "16") {
		t.Errorf("got %v, want an error naming the fleet's 16 shards", err)
	}
}

// A running agent marks its region as seen at start and on every beat,
// whether or not it has jobs.
func TestAgentHeartbeat(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	a, err := New(Config{Region: "ap-south", Name: "agent-test", Shards: 2, Block: 50 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, Scanner: ScannerConfig{Resolver: "127.0.0.1:53"}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(runCtx) }()
	defer func() {
		stop()
		<-runErr
	}()
	seenSince := func(since time.Time) func() string {
		return func() string {
			regions, err := presence.Active(ctx, rdb, since)
			if err != nil {
				return err.Error()
			}
			if len(regions) != 1 || regions[0] != "ap-south" {
				return "active regions since " + since.Format(time.RFC3339Nano) + ": got " + strings.Join(regions, ",") + ", want ap-south"
			}
			return ""
		}
	}
	waitFor(t, 2*time.Second, seenSince(started))
	// Beats keep coming while the agent idles.
	waitFor(t, 2*time.Second, seenSince(time.Now().Add(50*time.Millisecond)))
}

func TestConfigValidate(t *testing.T) {
	err := Config{Shards: 0, Concurrency: -1, Block: 0, ClaimIdle: 0, HeartbeatInterval: -1}.Validate()
	for _, w := range []string{"region", "name", "shards", "concurrency", "block", "claim idle", "heartbeat"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got %v, want an error about %s", err, w)
		}
	}
}

// On ctx end the agent stops reading and lets the jobs in flight finish and
// publish, up to ShutdownTimeout; a job cut off after that is neither
// published nor acknowledged, so another agent scans it again.
func TestAgentShutdown(t *testing.T) {
	tests := []struct {
		name            string
		shutdownTimeout time.Duration
		wantResults     int
		wantPending     int64
		maxRunAfterStop time.Duration
	}{
		{name: "in-flight job finishes", shutdownTimeout: 5 * time.Second, wantResults: 1, wantPending: 0, maxRunAfterStop: 3 * time.Second},
		{name: "job cut off at the bound", shutdownTimeout: 50 * time.Millisecond, wantResults: 0, wantPending: 1, maxRunAfterStop: 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := testenv.Redis(t).Client(t)
			// A server that never answers keeps the job in its handshake.
			addr, accepted := silentServerCounting(t)
			_, p, _ := net.SplitHostPort(addr)
			port, _ := strconv.Atoi(p)

			a, err := New(Config{
				Region: "eu", Name: "agent-test", Shards: 2, Block: 50 * time.Millisecond, ShutdownTimeout: tc.shutdownTimeout,
				Scanner: ScannerConfig{Resolver: "127.0.0.1:53", Allow: loopbackAllow(t), HandshakeTimeout: time.Second},
			}, rdb, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			runErr := make(chan error, 1)
			go func() { runErr <- a.Run(runCtx) }()

			env, _ := jobEnvelope(t, events.TenantID("ops@example.test"), "127.0.0.1", port, time.Now())
			addJob(t, rdb, 1, env)
			pending := func() int64 {
				p, err := rdb.XPending(ctx, events.JobStream(1), Group("eu")).Result()
				if err != nil {
					return -1
				}
				return p.Count
			}
			// Taken (pending) is not yet in flight: wait until the scan is
			// in its handshake with the silent server.
			waitFor(t, 5*time.Second, func() string {
				if got := pending(); got != 1 {
					return "got " + strconv.FormatInt(got, 10) + " pending jobs, want the job taken"
				}
				if accepted.Load() == 0 {
					return "the scan has not connected yet"
				}
				return ""
			})
			stopped := time.Now()
			stop()
			select {
			case err := <-runErr:
				if err != nil {
					t.Fatalf("run: got %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("run did not return")
			}
			if took := time.Since(stopped); took > tc.maxRunAfterStop {
				t.Errorf("run returned %s after ctx ended, want at most %s", took, tc.maxRunAfterStop)
			}
			n, err := rdb.XLen(ctx, events.StreamResults).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(tc.wantResults) {
				t.Errorf("got %d results, want %d", n, tc.wantResults)
			}
			if got := pending(); got != tc.wantPending {
				t.Errorf("got %d pending jobs, want %d", got, tc.wantPending)
			}
		})
	}
}

// An agent stopped mid-job leaves the job pending under its name; an agent
// restarted with that name scans it at once, from its own pending list,
// with a claim idle far too long for any claim to be what brings it back.
func TestRestartedAgentTakesBackItsJobs(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	addr, accepted := silentServerCounting(t)
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	start := func() (stop func()) {
		a, err := New(Config{
			Region: "eu", Name: "agent-same", Shards: 2, Block: 20 * time.Millisecond,
			ClaimIdle: time.Hour, ShutdownTimeout: 10 * time.Millisecond,
			Scanner: ScannerConfig{Resolver: "127.0.0.1:53", Allow: loopbackAllow(t), HandshakeTimeout: 300 * time.Millisecond},
		}, rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: got %v, want nil", err)
			}
		}
	}
	stop := start()
	env, _ := jobEnvelope(t, events.TenantID("ops@example.test"), "127.0.0.1", port, time.Now())
	addJob(t, rdb, 1, env)
	waitFor(t, 5*time.Second, func() string {
		if accepted.Load() == 0 {
			return "the first run has not connected yet"
		}
		return ""
	})
	stop()
	if n := rdb.XLen(ctx, events.StreamResults).Val(); n != 0 {
		t.Fatalf("got %d results from the stopped run, want 0 (job cut off)", n)
	}
	stop = start()
	defer stop()
	waitFor(t, 5*time.Second, func() string {
		pend, err := rdb.XPending(ctx, events.JobStream(1), Group("eu")).Result()
		if err != nil {
			return err.Error()
		}
		if n := rdb.XLen(ctx, events.StreamResults).Val(); n != 1 || pend.Count != 0 {
			return fmt.Sprintf("got %d results and %d pending jobs, want 1 and 0", n, pend.Count)
		}
		return ""
	})
}
