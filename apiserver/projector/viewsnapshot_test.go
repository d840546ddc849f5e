package projector

import (
	"context"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// store is a projector with its event store: live applies events as the
// running projector and sink would.
type store struct {
	t    *testing.T
	p    *Projector
	rdb  *redis.Client
	conn driver.Conn
	ids  map[string]bool
}

func newStore(t *testing.T) *store {
	t.Helper()
	p, rdb := newProjector(t)
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(context.Background(), conn, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &store{t: t, p: p, rdb: rdb, conn: conn, ids: map[string]bool{}}
}

// live applies evs to the views and stores them as inserted at insertedAt.
func (s *store) live(insertedAt time.Time, evs ...events.Envelope) {
	s.t.Helper()
	ctx := context.Background()
	if err := s.p.ApplyBatch(ctx, evs); err != nil {
		s.t.Fatalf("apply: %v", err)
	}
	rows := make([]schema.StoredEvent, len(evs))
	for i, e := range evs {
		rows[i] = schema.StoredEvent{Event: e, Stream: events.StreamResults, InsertedAt: insertedAt}
		s.ids[e.AggregateID] = true
	}
	if err := schema.InsertEvents(ctx, s.conn, rows); err != nil {
		s.t.Fatalf("insert events: %v", err)
	}
}

// views reads every domain's view as the API reads it, versions aside
// (a rebuild bumps them).
func (s *store) views() map[string]Snapshot {
	s.t.Helper()
	var ids []string
	for id := range s.ids {
		ids = append(ids, id)
	}
	snaps, err := ReadSnapshots(context.Background(), s.rdb, ids)
	if err != nil {
		s.t.Fatalf("read views: %v", err)
	}
	out := make(map[string]Snapshot, len(snaps))
	for _, sn := range snaps {
		sn.Version = 0
		out[sn.DomainID] = sn
	}
	return out
}

func scanAt(t *testing.T, dom, host, region string, finished time.Time, results ...events.IPResult) events.Envelope {
	t.Helper()
	job := uuid.New()
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, dom, events.ScanCompletedV1{
		JobID: job, DomainID: dom, Host: host, Port: 443, Region: region, Agent: "a1",
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = finished
	return e
}

func addedAt(t *testing.T, name, dom, host string, at time.Time) events.Envelope {
	t.Helper()
	var p any = events.DomainAddedV1{DomainID: dom, Host: host, Port: 443}
	if name == events.DomainUpdated {
		p = events.DomainUpdatedV1{DomainID: dom, Host: host, Port: 443}
	}
	if name == events.DomainRemoved {
		p = events.DomainRemovedV1{DomainID: dom, Host: host, Port: 443}
	}
	e, err := events.New(name, tenant, dom, p)
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}

func (s *store) rebuild(cfg RebuildConfig) RebuildResult {
	s.t.Helper()
	res, err := RebuildFromSnapshot(context.Background(), s.rdb, s.conn, cfg, testenv.Logger(s.t))
	if err != nil {
		s.t.Fatalf("rebuild: %v", err)
	}
	return res
}

// TestRebuildFromSnapshotMatchesFullReplay takes a snapshot of views built
// live, lets more events arrive (new ones, a redelivery, a rescan
// republished under the same id, an event published hours after it
// occurred, a new domain), and checks that restoring the snapshot and
// replaying the events since gives the views the live projector has, as
// the full replay does, from fewer events.
func TestRebuildFromSnapshotMatchesFullReplay(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	base := now.Add(-3 * time.Hour)
	na := now.Add(60 * 24 * time.Hour)
	// Before the snapshot: five domains, two regions, a rename and a
	// removal, stored three hours ago.
	var before []events.Envelope
	for i, dom := range []string{"d1", "d2", "d3", "d4", "d5"} {
		host := dom + ".example.com"
		at := base.Add(time.Duration(i) * time.Minute)
		before = append(before, addedAt(t, events.DomainAdded, dom, host, at),
			scanAt(t, dom, host, "eu", at.Add(10*time.Minute), okResult("192.0.2.1", "a"+dom, na), failed("192.0.2.2")),
			scanAt(t, dom, host, "us", at.Add(11*time.Minute), okResult("192.0.2.1", "a"+dom, na)))
	}
	before = append(before,
		addedAt(t, events.DomainUpdated, "d4", "renamed.example.com", base.Add(30*time.Minute)),
		scanAt(t, "d4", "renamed.example.com", "eu", base.Add(31*time.Minute), okResult("192.0.2.9", "r", na)),
		addedAt(t, events.DomainRemoved, "d5", "d5.example.com", base.Add(40*time.Minute)))
	s.live(base, before...)

	sn, err := NewSnapshotter(SnapshotConfig{Interval: time.Hour, BatchSize: 2}, s.rdb, s.conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sn.Take(ctx)
	if err != nil {
		t.Fatalf("take snapshot: %v", err)
	}
	if snap.Views != 5 {
		t.Fatalf("snapshot views: got %d, want 5", snap.Views)
	}

	// After the snapshot.
	later := now.Add(time.Minute)
	rescanID := before[1].EventID
	rescan := scanAt(t, "d1", "d1.example.com", "eu", later, okResult("192.0.2.3", "new", na))
	rescan.EventID = rescanID // republished: same id, later time, new results
	s.live(later,
		scanAt(t, "d2", "d2.example.com", "eu", later, okResult("192.0.2.1", "b2", na)),
		before[2], // redelivered
		rescan,
		// Published hours after it occurred: only its storage time is new.
		scanAt(t, "d3", "d3.example.com", "ap", base.Add(50*time.Minute), okResult("192.0.2.7", "late", na)),
		addedAt(t, events.DomainAdded, "d6", "d6.example.com", later),
		scanAt(t, "d6", "d6.example.com", "eu", later.Add(time.Second), okResult("192.0.2.6", "six", na)))
	want := s.views()
	if got := want["d3"].Entries; len(got) != 4 {
		t.Fatalf("live view of d3: got %d entries, want 4 (eu 2, us 1, ap 1)", len(got))
	}

	res := s.rebuild(RebuildConfig{})
	if res.Snapshot.ID != snap.ID || res.Restored != 5 {
		t.Errorf("rebuild: got snapshot %d with %d views restored, want %d with 5", res.Snapshot.ID, res.Restored, snap.ID)
	}
	if res.Replayed != 6 {
		t.Errorf("rebuild: got %d events replayed, want the 6 after the snapshot", res.Replayed)
	}
	if got := s.views(); !reflect.DeepEqual(got, want) {
		t.Errorf("views after rebuild from snapshot:\n got %+v\nwant %+v", got, want)
	}
	// The removed domain's view, restored, expires as a tombstone does.
	if ttl := s.rdb.PTTL(ctx, ViewKey("d5")).Val(); ttl <= TombstoneTTL-time.Minute || ttl > TombstoneTTL {
		t.Errorf("restored tombstone of d5 expires in %s, want %s", ttl, TombstoneTTL)
	}

	full := s.rebuild(RebuildConfig{Full: true})
	if full.Snapshot.ID != 0 || full.Replayed != len(before)+4 {
		t.Errorf("full rebuild: got snapshot %d, %d events, want none and %d (two were copies)", full.Snapshot.ID, full.Replayed, len(before)+4)
	}
	if got := s.views(); !reflect.DeepEqual(got, want) {
		t.Errorf("views after full replay:\n got %+v\nwant %+v", got, want)
	}
}

// A snapshot of views in the layout before (a field per IP, the tenant
// as it is) restores and reads as the views did, and so does one of the
// current layout; the snapshot's tenant column holds the tenant id of
// either; a region's next scan rewrites it in the current layout.
func TestOlderLayoutSnapshotRestores(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	na := now.Add(60 * 24 * time.Hour).Truncate(time.Second)
	s.live(now.Add(-time.Hour), scanAt(t, "cur", "cur.example.com", "eu", now.Add(-time.Hour), okResult("192.0.2.1", "c", na)))
	old := "a0b92fc6-db20-5265-b3bb-b7f0b7bd9a72"
	r := okResult("192.0.2.1", strings.Repeat("ab", 32), na)
	shape := encodeShape("old.example.com", 443, r)
	ref := shapeRef(shape)
	ms, id := encodeMark(now.Add(-time.Hour), uuid.New())
	fields := map[string]any{"@name": "old.example.com:443|0", "@tenant": old, "@v": "3",
		"@eu": ms + "|" + id, "eu|192.0.2.1": shapeMark + ref + ",12,30",
		"eu|192.0.2.2": shapeMark + ref + ",13,31"}
	for i, c := range splitChunks(shape, maxChunk) {
		fields[chunkName(leafPrefix+ref, i)] = c
	}
	if err := s.rdb.HSet(ctx, ViewKey("old"), fields).Err(); err != nil {
		t.Fatal(err)
	}
	s.ids["old"] = true
	want := s.views()
	if len(want["old"].Entries) != 2 || want["old"].TenantID != old || len(want["cur"].Entries) != 1 || want["cur"].TenantID != tenant {
		t.Fatalf("views before the snapshot: %+v", want)
	}

	sn, err := NewSnapshotter(SnapshotConfig{Interval: time.Hour}, s.rdb, s.conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sn.Take(ctx)
	if err != nil {
		t.Fatalf("take snapshot: %v", err)
	}
	tenants := map[string]string{}
	if err := schema.ReadSnapshotViews(ctx, s.conn, snap.ID, func(v schema.SnapshotView) error {
		tenants[v.DomainID] = v.TenantID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if tenants["old"] != old || tenants["cur"] != tenant {
		t.Errorf("snapshot tenants: got %v, want old %s and cur %s", tenants, old, tenant)
	}
	if res := s.rebuild(RebuildConfig{}); res.Restored != 2 {
		t.Errorf("rebuild: %d views restored, want 2", res.Restored)
	}
	if got := s.views(); !reflect.DeepEqual(got, want) {
		t.Errorf("views after rebuild from snapshot:\n got %+v\nwant %+v", got, want)
	}

	s.live(now, scanAt(t, "old", "old.example.com", "eu", now, r))
	all := s.rdb.HGetAll(ctx, ViewKey("old")).Val()
	if _, ok := all["eu|192.0.2.2"]; ok || !strings.HasPrefix(all["eu"], regionMark) || all[tenantField] != tenantCode(tenant) {
		t.Errorf("after a scan, eu should be in layout %s with the tenant in %s: %v", regionMark, tenantField, all)
	}
	if got := s.views()["old"]; len(got.Entries) != 1 || got.Entries[0].IP != "192.0.2.1" {
		t.Errorf("after a scan: got %+v, want one entry, 192.0.2.1", got.Entries)
	}
}

// TestInterruptedSnapshotIsNotUsed stops a snapshot after its first
// stored views, as a crash would, and checks that the rebuild restores
// the complete one before it; so it does when a snapshot's views are not
// all there.
func TestInterruptedSnapshotIsNotUsed(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	na := now.Add(60 * 24 * time.Hour)
	var evs []events.Envelope
	for i := range 300 {
		dom := "dom" + uuid.NewString()[:8]
		evs = append(evs, scanAt(t, dom, dom+".example.com", "eu", now.Add(-time.Hour+time.Duration(i)*time.Millisecond), okResult("192.0.2.1", "x", na)))
	}
	s.live(now.Add(-time.Hour), evs...)
	sn, err := NewSnapshotter(SnapshotConfig{Interval: time.Hour, BatchSize: 1}, s.rdb, s.conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	first, err := sn.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}

	cut, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for cut.Err() == nil {
			var n uint64
			_ = s.conn.QueryRow(ctx, "SELECT count() FROM view_snapshot_rows WHERE snapshot_id > ?", first.ID).Scan(&n)
			if n > 0 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := sn.Take(cut); err == nil {
		t.Fatal("interrupted snapshot: got no error; the snapshot finished before it could be interrupted")
	}
	// A snapshot recorded complete whose views are not all there.
	if err := schema.CompleteSnapshot(ctx, s.conn, schema.ViewSnapshot{ID: first.ID + 10_000, StartedAt: now, WatermarkMS: now.UnixMilli(), Views: 999}); err != nil {
		t.Fatal(err)
	}
	latest, ok, err := schema.LatestSnapshot(ctx, s.conn)
	if err != nil || !ok || latest.ID != first.ID {
		t.Fatalf("latest snapshot: got %d, %v, %v; want %d", latest.ID, ok, err, first.ID)
	}

	s.live(now, scanAt(t, "after", "after.example.com", "eu", now, okResult("192.0.2.5", "y", na)))
	want := s.views()
	res := s.rebuild(RebuildConfig{})
	if res.Snapshot.ID != first.ID || res.Restored != 300 {
		t.Errorf("rebuild: got snapshot %d, %d restored; want %d, 300", res.Snapshot.ID, res.Restored, first.ID)
	}
	if got := s.views(); !reflect.DeepEqual(got, want) {
		t.Errorf("views after rebuild differ from live views")
	}
}

// TestWatermarkFollowsUnacknowledged checks the watermark against the
// projector group's state on a stream: its oldest pending entry, else its
// first undelivered one, else now.
func TestWatermarkFollowsUnacknowledged(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Now().Add(time.Hour)
	add := func(ms int64) string {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamResults, ID: strconv.FormatInt(ms, 10) + "-0", Values: []any{"k", "v"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	check := func(name string, want int64) {
		t.Helper()
		got, err := Watermark(ctx, rdb, now)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: got watermark %d, want %d", name, got, want)
		}
	}
	check("no streams", now.UnixMilli())
	add(1000)
	add(2000)
	check("no group yet", 1000)
	if err := rdb.XGroupCreate(ctx, events.StreamResults, Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: Group, Consumer: "c", Streams: []string{events.StreamResults, ">"}, Count: 1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Messages[0].ID
	}
	first := read()
	check("first pending", 1000)
	if err := rdb.XAck(ctx, events.StreamResults, Group, first).Err(); err != nil {
		t.Fatal(err)
	}
	check("first acknowledged, second undelivered", 2000)
	second := read()
	check("second pending", 2000)
	if err := rdb.XAck(ctx, events.StreamResults, Group, second).Err(); err != nil {
		t.Fatal(err)
	}
	check("all acknowledged", now.UnixMilli())
}
