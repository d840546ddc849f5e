package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// A view written in the older layouts (whole ExpEntry JSON, layout "2"
// with its leaf facts, layout "3" with a field per IP, region marks in
// decimal with the event id in full, the tenant as it is, a version key
// of its own) reads as it did; a redelivered scan it shows changes
// nothing; a newer scan of a region replaces that region's fields and
// drops the leaf facts no entry uses any more (a layout 3 shape the new
// layout shares stays); the version goes on from the old key.
func TestOlderLayoutsReadAndGetReplaced(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	sha := strings.Repeat("ab", 32)
	na := t0.Add(90 * 24 * time.Hour)
	shown := scan(t, "eu", t0, okResult("192.0.2.1", sha, na))
	us := ExpEntry{Region: "us", Port: 443, ScannedAt: t0, EventID: "0c7a2b6e-8d1f-4b3a-9e5c-2f4d6a8b0c1e",
		IPResult: okResult("192.0.2.1", sha, na)}
	whole, err := json.Marshal(us)
	if err != nil {
		t.Fatal(err)
	}
	ms := fmt.Sprint(t0.UnixMilli())
	ap := ExpEntry{Region: "ap", Port: 443, ScannedAt: t0, EventID: "1d8b3c7f-9e2a-4c4b-8f6d-3a5e7b9c1d2f",
		IPResult: okResult("192.0.2.1", sha, na)}
	ap.ConnectMS = 12
	shape := encodeShape("example.com", 443, ap.IPResult)
	ref := shapeRef(shape)
	old := map[string]any{
		"@ap":          ms + "|" + ap.EventID,
		"ap|192.0.2.1": shapeMark + ref + ",12,0",
		"@name":        "example.com:443|" + ms,
		"@tenant":      tenant,
		"@eu":          ms + "|" + shown.EventID.String(),
		"eu|192.0.2.1": `2{"p":443,"o":"ok","f":true,"l":"` + sha + `","v":"TLS 1.3","cv":true,"hv":true}`,
		"#" + sha:      `{"i":"CN=Lab CA","b":"0001-01-01T00:00:00Z","a":"` + na.Format(time.RFC3339) + `"}`,
		"@us":          ms + "|" + us.EventID,
		"us|192.0.2.1": string(whole),
	}
	for i, c := range splitChunks(shape) {
		old[chunkName(leafPrefix+ref, i)] = c
	}
	if err := rdb.HSet(ctx, ViewKey(domainID), old).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, VersionKey(domainID), 7, 0).Err(); err != nil {
		t.Fatal(err)
	}
	eu := ExpEntry{Region: "eu", Port: 443, ScannedAt: t0, EventID: shown.EventID.String(), IPResult: okResult("192.0.2.1", sha, na)}
	check := func(step string, version int64, want ...ExpEntry) {
		t.Helper()
		s := snapshot(t, p)
		if !reflect.DeepEqual(s.Entries, want) || s.Version != version || s.TenantID != tenant {
			t.Errorf("%s: got version %d, tenant %q, entries\n%+v\nwant version %d, tenant %q, entries\n%+v",
				step, s.Version, s.TenantID, s.Entries, version, tenant, want)
		}
	}
	check("older layouts", 7, ap, eu, us)

	if err := p.Apply(ctx, shown); err != nil {
		t.Fatal(err)
	}
	check("the scan shown, redelivered", 7, ap, eu, us)

	newer := scan(t, "eu", t0.Add(time.Hour), okResult("192.0.2.1", sha, na))
	if err := p.Apply(ctx, newer); err != nil {
		t.Fatal(err)
	}
	eu.ScannedAt, eu.EventID = t0.Add(time.Hour), newer.EventID.String()
	check("a newer scan of eu", 8, ap, eu, us)
	all := rdb.HGetAll(ctx, ViewKey(domainID)).Val()
	if _, ok := all["#"+sha]; ok {
		t.Errorf("the layout 2 leaf facts stayed: %v", all)
	}
	_, euOld := all["eu|192.0.2.1"]
	if !strings.HasPrefix(all["eu"], regionMark) || euOld || all["us|192.0.2.1"] != string(whole) || all["ap|192.0.2.1"] == "" {
		t.Errorf("eu should be in the new layout, us and ap as they were: %v", all)
	}
	if _, ok := all[leafPrefix+ref]; !ok || !strings.Contains(all["eu"], ref) {
		t.Errorf("eu and ap should share ap's shape %s: %v", ref, all)
	}
	if _, ok := all[oldTenantField]; ok || all[tenantField] != tenantCode(tenant) {
		t.Errorf("the tenant should be in %s only: %v", tenantField, all)
	}
	if n := rdb.Exists(ctx, VersionKey(domainID)).Val(); n != 0 {
		t.Errorf("the old version key stayed")
	}

	if err := p.Apply(ctx, removed(t, t0.Add(30*time.Minute))); err != nil {
		t.Fatal(err)
	}
	check("removed after us's scan, before eu's", 9, eu)
}

// The version never goes back: a rebuild keeps it, and a restore sets it
// above both what the rebuild kept and the snapshot's.
func TestVersionNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	evs := []events.Envelope{
		domainEvent(t, events.DomainAdded, "example.com", 443, t0.Add(-time.Hour)),
		scan(t, "eu", t0, okResult("192.0.2.1", "aa", t0.Add(time.Hour))),
	}
	if err := p.ApplyBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, p)
	if err := Rebuild(ctx, rdb, func(ctx context.Context, fn func(events.Envelope) error) error {
		for _, e := range evs {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, p)
	if after.Version != before.Version+2 || !reflect.DeepEqual(after.Entries, before.Entries) {
		t.Errorf("after rebuild: got version %d, want %d (kept, then the two events)", after.Version, before.Version+2)
	}

	// A restore over what a rebuild kept ...
	if _, err := deleteViews(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	restore := func(v schema.SnapshotView) {
		t.Helper()
		if err := restoreScript.Run(ctx, rdb, []string{ViewKey(v.DomainID), VersionKey(v.DomainID)}, restoreArgs(v)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	views, err := readRawViews(ctx, rdb, []string{ViewKey(domainID)})
	if err != nil || len(views) != 1 {
		t.Fatalf("read views: %v, %d views", err, len(views))
	}
	if views[0].Version != after.Version || len(views[0].Fields) != 0 {
		t.Errorf("what a rebuild keeps: got version %d, fields %v, want %d and none", views[0].Version, views[0].Fields, after.Version)
	}
	restore(schema.SnapshotView{DomainID: domainID, Version: 1, Fields: []string{nameField}, Values: []string{"example.com:443|0"}})
	if got := snapshot(t, p).Version; got != after.Version+1 {
		t.Errorf("restore of an older snapshot: got version %d, want %d", got, after.Version+1)
	}
	// ... and of a snapshot newer than what is left (a Redis lost).
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	restore(schema.SnapshotView{DomainID: domainID, Version: 41, Fields: []string{nameField}, Values: []string{"example.com:443|0"}})
	if got := snapshot(t, p).Version; got != 42 {
		t.Errorf("restore into an empty Redis: got version %d, want 42", got)
	}
}
