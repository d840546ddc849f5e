package scalebench

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// envInt reads a positive number from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// fleet publishes a fleet's events as the API server and the agents do.
type fleet struct {
	t        *testing.T
	rdb      *redis.Client
	doms     []fleetDomain
	notAfter time.Time
}

type fleetDomain struct{ id, tenant, host string }

func newFleet(t *testing.T, rdb *redis.Client, n int) *fleet {
	f := &fleet{t: t, rdb: rdb, notAfter: time.Now().Add(60 * 24 * time.Hour).UTC().Truncate(time.Second)}
	for i := range n {
		tenant := events.TenantID(fmt.Sprintf("owner%d@example.com", i/100))
		f.doms = append(f.doms, fleetDomain{uuid.NewString(), tenant, fmt.Sprintf("www%d.shop%d.example", i%100, i/100)})
	}
	return f
}

// scan is the scan.completed event of domain i from region, finished at
// at, with two IPs.
func (f *fleet) scan(i int, region string, at time.Time) events.Envelope {
	d := f.doms[i]
	job := uuid.New()
	p := events.ScanCompletedV1{JobID: job, DomainID: d.id, Host: d.host, Port: 443, Region: region, Agent: region + "-1",
		ScheduledAt: at.Add(-time.Second), StartedAt: at.Add(-300 * time.Millisecond), FinishedAt: at}
	for ip := range 2 {
		p.Results = append(p.Results, events.IPResult{
			IP: fmt.Sprintf("198.51.%d.%d", i%250, ip+1), Outcome: events.OutcomeOK, CertificateFound: true,
			Subject: "CN=" + d.host, Issuer: "CN=Example Issuing CA 1,O=Example", SANs: []string{d.host},
			NotBefore: f.notAfter.Add(-90 * 24 * time.Hour), NotAfter: f.notAfter,
			LeafSHA256: fmt.Sprintf("%064x", i), ChainLength: 2, ChainValid: true, HostnameValid: true,
			TLSVersion: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256", KeyType: "ECDSA", KeyBits: 256,
			SignatureAlgorithm: "ECDSA-SHA256", ConnectMS: 12, HandshakeMS: 30,
		})
	}
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, d.tenant, d.id, p)
	if err != nil {
		f.t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}

// publish appends events to their streams, pipelined.
func (f *fleet) publish(ctx context.Context, evs []events.Envelope) {
	pipe := f.rdb.Pipeline()
	for i, e := range evs {
		values, err := e.StreamValues()
		if err != nil {
			f.t.Fatal(err)
		}
		st := events.StreamResults
		if e.Name != events.ScanCompleted {
			st = events.EventStream(e.TenantID)
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: st, Values: values})
		if pipe.Len() >= 500 || i == len(evs)-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

// groupLag is the entries of the projector's streams group has not
// acknowledged; -1 until the group reads the results stream.
func groupLag(ctx context.Context, rdb *redis.Client, group string) int64 {
	var lag int64
	found := false
	for _, st := range append(events.EventStreams(), events.StreamResults) {
		groups, err := rdb.XInfoGroups(ctx, st).Result()
		if err != nil {
			continue // not created yet
		}
		for _, g := range groups {
			if g.Name == group {
				lag += max(g.Lag, 0) + g.Pending
				found = found || st == events.StreamResults
			}
		}
	}
	if !found {
		return -1
	}
	return lag
}

func waitDrained(t *testing.T, ctx context.Context, rdb *redis.Client, group string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for groupLag(ctx, rdb, group) != 0 {
		if time.Since(start) > d {
			t.Fatalf("%s still %d entries behind after %s", group, groupLag(ctx, rdb, group), d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// tableBytes is the rows and compressed bytes of a table's active parts.
func tableBytes(t *testing.T, ctx context.Context, conn driver.Conn, table string) (rows, bytes uint64) {
	t.Helper()
	if err := conn.QueryRow(ctx, `SELECT sum(rows), sum(data_compressed_bytes) FROM system.parts
		WHERE database = currentDatabase() AND table = ? AND active`, table).Scan(&rows, &bytes); err != nil {
		t.Fatal(err)
	}
	return rows, bytes
}

// TestEventStoreAtScale runs the sink and the projector (with the alert
// engine) on a fleet's history and reports: the sink's rows/s draining a
// backlog, ClickHouse bytes per scan row and per event, the view snapshot's
// time, the view rebuild from the snapshot against the full replay in the
// same run (the views must come out the same), and the projector's and
// sink's lag while agents' results arrive at the rate 1M domains x 3
// regions at a 12 h interval implies (70 scans/s) and at 10x.
// CERTFLEET_BENCH_DOMAINS (default 300), CERTFLEET_BENCH_ROUNDS scans of
// every domain from every region before the snapshot (default 2),
// CERTFLEET_BENCH_RATE_SECONDS per rate (default 1).
func TestEventStoreAtScale(t *testing.T) {
	// The test suite's size: a check that every step works, in seconds.
	n := envInt(t, "CERTFLEET_BENCH_DOMAINS", 300)
	rounds := envInt(t, "CERTFLEET_BENCH_ROUNDS", 2)
	rateFor := time.Duration(envInt(t, "CERTFLEET_BENCH_RATE_SECONDS", 1)) * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb := testenv.Redis(t).Client(t)
	conn := testenv.ClickHouse(t).Conn(t)
	logger := zap.NewNop()
	if err := schema.Migrate(ctx, conn, logger); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, rdb, n)

	// The history: every domain added, then scanned rounds times from
	// every region, an hour apart, published before the sink runs.
	began := time.Now().Add(-time.Duration(rounds+1) * time.Hour).UTC().Truncate(time.Millisecond)
	var history []events.Envelope
	for i, d := range f.doms {
		e, err := events.New(events.DomainAdded, d.tenant, d.id, events.DomainAddedV1{DomainID: d.id, Host: d.host, Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		e.OccurredAt = began.Add(time.Duration(i) * time.Millisecond)
		history = append(history, e)
	}
	for r := range rounds {
		for i := range f.doms {
			for _, region := range regions {
				history = append(history, f.scan(i, region, began.Add(time.Duration(r+1)*time.Hour+time.Duration(i)*time.Millisecond)))
			}
		}
	}
	f.publish(ctx, history)
	scans := n * len(regions) * rounds

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	sk, err := sink.New(sink.Config{Consumer: "sink"}, rdb, conn, logger)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = sk.Run(ctx) })
	took := waitDrained(t, ctx, rdb, sink.Group, time.Duration(len(history)/100+120)*time.Second)
	scanRows, scanBytes := tableBytes(t, ctx, conn, "scan_results")
	evRows, evBytes := tableBytes(t, ctx, conn, "events")
	t.Logf("sink: %d events (%d scans, %d scan rows) stored in %s: %.0f events/s, %.0f scan rows/s (one replica, batches of 5000)",
		len(history), scans, scanRows, took.Round(time.Millisecond), float64(len(history))/took.Seconds(), float64(scanRows)/took.Seconds())
	t.Logf("clickhouse: %.0f B per scan_results row (%d rows, %.1f MB), %.0f B per stored event (%d events, %.1f MB), compressed, before merges",
		float64(scanBytes)/float64(scanRows), scanRows, float64(scanBytes)/1e6, float64(evBytes)/float64(evRows), evRows, float64(evBytes)/1e6)

	// In a running fleet the history was stored as it happened, long
	// before any snapshot; here it was stored a moment ago, and the
	// replay after a snapshot takes every event stored since its
	// watermark. Date the rows back to when they occurred.
	if err := conn.Exec(ctx, "ALTER TABLE events UPDATE inserted_at = occurred_at WHERE 1"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var running uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0").Scan(&running); err != nil {
			t.Fatal(err)
		}
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events not dated back after a minute")
		}
	}

	proj := newProjector(t, rdb, logger)
	wg.Go(func() { _ = proj.Run(ctx) })
	took = waitDrained(t, ctx, rdb, projector.Group, time.Duration(len(history)/100+120)*time.Second)
	t.Logf("projector: %d events applied in %s (%.0f/s, with the alert engine)", len(history), took.Round(time.Millisecond), float64(len(history))/took.Seconds())

	// The snapshot, then one more round of scans after it.
	snapper, err := projector.NewSnapshotter(projector.SnapshotConfig{Interval: time.Hour}, rdb, conn, logger)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapper.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, snapBytes := tableBytes(t, ctx, conn, "view_snapshot_rows")
	t.Logf("view snapshot: %d views in %s (%.0f views/s), %.0f B per view in ClickHouse",
		snap.Views, snap.CompletedAt.Sub(snap.StartedAt).Round(time.Millisecond),
		float64(snap.Views)/snap.CompletedAt.Sub(snap.StartedAt).Seconds(), float64(snapBytes)/float64(snap.Views))
	var after []events.Envelope
	now := time.Now().UTC()
	for i := range f.doms {
		for _, region := range regions {
			after = append(after, f.scan(i, region, now.Add(time.Duration(i)*time.Millisecond)))
		}
	}
	f.publish(ctx, after)
	waitDrained(t, ctx, rdb, projector.Group, time.Duration(len(after)/100+120)*time.Second)
	waitDrained(t, ctx, rdb, sink.Group, time.Duration(len(after)/100+120)*time.Second)

	// Agents' results at 70 scans/s and at 700/s, spread over the
	// fleet: how far behind do the projector and the sink fall?
	for _, rate := range []int{70, 700} {
		var maxProj, maxSink int64
		cmdsBefore := redisCalls(t, ctx, rdb)
		tick := time.NewTicker(10 * time.Millisecond)
		start := time.Now()
		sent, next := 0, 0
		for time.Since(start) < rateFor {
			<-tick.C
			due := int(time.Since(start).Seconds() * float64(rate))
			var evs []events.Envelope
			for ; sent < due; sent++ {
				evs = append(evs, f.scan(next%n, regions[next%len(regions)], time.Now().UTC()))
				next++
			}
			if len(evs) > 0 {
				f.publish(ctx, evs)
			}
			maxProj, maxSink = max(maxProj, groupLag(ctx, rdb, projector.Group)), max(maxSink, groupLag(ctx, rdb, sink.Group))
		}
		tick.Stop()
		settle := waitDrained(t, ctx, rdb, projector.Group, time.Minute)
		settleSink := waitDrained(t, ctx, rdb, sink.Group, time.Minute)
		cmds := redisCalls(t, ctx, rdb) - cmdsBefore
		t.Logf("agents at %d scans/s for %s (%d scans): projector at most %d entries behind (%.0f ms of results), caught up %s after; sink at most %d behind (%.0f ms), caught up %s after; %.1f Redis commands per scan (publish, projector, alert engine, sink, their polls)",
			rate, rateFor, sent, maxProj, float64(maxProj)*1000/float64(rate), settle.Round(time.Millisecond),
			maxSink, float64(maxSink)*1000/float64(rate), settleSink.Round(time.Millisecond), float64(cmds)/float64(sent))
	}
	cancel()
	wg.Wait()
	want := readViews(t, rdb, f.ids())

	fromSnap, err := projector.RebuildFromSnapshot(context.Background(), rdb, conn, projector.RebuildConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if got := readViews(t, rdb, f.ids()); !reflect.DeepEqual(got, want) {
		t.Errorf("views rebuilt from the snapshot differ from the live ones in %d domains", diffCount(got, want))
	}
	full, err := projector.RebuildFromSnapshot(context.Background(), rdb, conn, projector.RebuildConfig{Full: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if got := readViews(t, rdb, f.ids()); !reflect.DeepEqual(got, want) {
		t.Errorf("views rebuilt from every event differ from the live ones in %d domains", diffCount(got, want))
	}
	t.Logf("view rebuild at %d domains: from the snapshot %s (%d views restored in %s, %d events replayed); from the first event %s (%d events); %.1fx faster",
		n, fromSnap.Took.Round(time.Millisecond), fromSnap.Restored, fromSnap.Restoring.Round(time.Millisecond), fromSnap.Replayed,
		full.Took.Round(time.Millisecond), full.Replayed, full.Took.Seconds()/fromSnap.Took.Seconds())
}

// ids are the fleet's domain ids.
func (f *fleet) ids() []string {
	ids := make([]string, len(f.doms))
	for i, d := range f.doms {
		ids[i] = d.id
	}
	return ids
}

// redisCalls is the commands Redis has run, from INFO commandstats, but
// for the ones the benchmark itself polls with (INFO, XINFO); the
// consumers' reads of empty streams count.
func redisCalls(t *testing.T, ctx context.Context, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || name == "cmdstat_info" || strings.HasPrefix(name, "cmdstat_xinfo") {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		c, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		n += c
	}
	return n
}

// readViews reads the views of the domains ids, versions aside.
func readViews(t *testing.T, rdb *redis.Client, ids []string) map[string]projector.Snapshot {
	t.Helper()
	out := make(map[string]projector.Snapshot, len(ids))
	for i := 0; i < len(ids); i += 1000 {
		snaps, err := projector.ReadSnapshots(context.Background(), rdb, ids[i:min(i+1000, len(ids))])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			s.Version = 0
			out[s.DomainID] = s
		}
	}
	return out
}

// diffCount is how many domains' views differ between a and b.
func diffCount(a, b map[string]projector.Snapshot) int {
	n := 0
	for id, v := range a {
		if !reflect.DeepEqual(v, b[id]) {
			n++
		}
	}
	return n
}
