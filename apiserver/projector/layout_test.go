package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
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
	for i, c := range splitChunks(shape, maxChunk) {
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

// A view of layout 4 (a region's field "4<shape>;<ip>,<decimal
// timings>", its mark in "@<region>", shapes with the port and TLS
// version in full, the name in "@name" with its port and decimal ms)
// reads as it did; the scan it shows, redelivered, and an older one change
// nothing; a newer scan of a region rewrites that region in layout 5 (its
// mark in its field, "@<region>" gone) and moves the name to "@n", while
// the other region, its mark and the shape it uses stay; a removal between
// the two regions' scans drops the older region of layout 4 and its mark.
func TestLayout4ReadsAndGetsReplaced(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	sha := strings.Repeat("ab", 32)
	na := t0.Add(90 * 24 * time.Hour).Truncate(time.Second)
	r := okResult("192.0.2.1", sha, na)
	nameMS := t0.Add(-24 * time.Hour).UnixMilli()
	shownEU, shownUS := scan(t, "eu", t0, r), scan(t, "us", t0, r)
	oldShape := "ok|7||304|443|" + shaCode(sha) + "|" + timeCode(na) + "|||CN=Lab CA"
	ref := shapeRef(oldShape)
	mark := func(e events.Envelope) string {
		ms, id := encodeMark(t0, e.EventID)
		return ms + "|" + id
	}
	old := map[string]any{
		"@name": "example.com:443|" + strconv.FormatInt(nameMS, 10), "@t": tenantCode(tenant), "@v": "5",
		"eu": oldRegionMark + ref + ";" + IPCode("192.0.2.1") + ",12,30", "@eu": mark(shownEU),
		"us": oldRegionMark + ref + ";" + IPCode("192.0.2.1") + ",12,30;" + IPCode("192.0.2.2") + ",13,31", "@us": mark(shownUS),
		"#" + ref: oldShape,
	}
	if err := rdb.HSet(ctx, ViewKey(domainID), old).Err(); err != nil {
		t.Fatal(err)
	}
	entry := func(region, ip string, connect, handshake int64, e events.Envelope, at time.Time) ExpEntry {
		x := ExpEntry{Region: region, Port: 443, ScannedAt: at, EventID: e.EventID.String(), IPResult: r}
		x.IP, x.ConnectMS, x.HandshakeMS = ip, connect, handshake
		return x
	}
	eu := entry("eu", "192.0.2.1", 12, 30, shownEU, t0)
	us1, us2 := entry("us", "192.0.2.1", 12, 30, shownUS, t0), entry("us", "192.0.2.2", 13, 31, shownUS, t0)
	check := func(step string, version int64, want ...ExpEntry) {
		t.Helper()
		s := snapshot(t, p)
		if !reflect.DeepEqual(s.Entries, want) || s.Version != version || s.Name != "example.com:443" || s.TenantID != tenant {
			t.Errorf("%s: got version %d, name %q, tenant %q, entries\n%+v\nwant version %d, entries\n%+v",
				step, s.Version, s.Name, s.TenantID, s.Entries, version, want)
		}
	}
	check("layout 4", 5, eu, us1, us2)

	for _, e := range []events.Envelope{shownEU, scan(t, "eu", t0.Add(-time.Minute), r)} {
		if err := p.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	check("the scan shown, redelivered, and an older one", 5, eu, us1, us2)

	slow := r
	slow.ConnectMS, slow.HandshakeMS = 45, 1300 // two and three digits of base 36
	newer := scan(t, "eu", t0.Add(time.Hour), slow)
	if err := p.Apply(ctx, newer); err != nil {
		t.Fatal(err)
	}
	eu = entry("eu", "192.0.2.1", 45, 1300, newer, t0.Add(time.Hour))
	check("a newer scan of eu", 6, eu, us1, us2)
	all := rdb.HGetAll(ctx, ViewKey(domainID)).Val()
	_, euMark := all["@eu"]
	_, oldName := all[oldNameField]
	if !strings.HasPrefix(all["eu"], regionMark) || euMark || all["us"] != old["us"] || all["@us"] != old["@us"] {
		t.Errorf("eu should be in layout 5 without its mark field, us as it was: %v", all)
	}
	if oldName || all[nameField] != "example.com|"+strconv.FormatInt(nameMS, 36) {
		t.Errorf("the name should have moved to %s with its ms: %v", nameField, all)
	}
	if all["#"+ref] != oldShape || len(shapes(all)) != 2 {
		t.Errorf("us's shape of layout 4 should stay beside eu's: %v", all)
	}
	if err := p.Apply(ctx, newer); err != nil {
		t.Fatal(err)
	}
	check("the newer scan redelivered", 6, eu, us1, us2)

	if err := p.Apply(ctx, removed(t, t0.Add(30*time.Minute))); err != nil {
		t.Fatal(err)
	}
	check("removed after us's scan, before eu's", 7, eu)
	all = rdb.HGetAll(ctx, ViewKey(domainID)).Val()
	for _, f := range []string{"us", "@us", "#" + ref} {
		if _, ok := all[f]; ok {
			t.Errorf("%s left after the removal: %v", f, all)
		}
	}
	if err := p.Apply(ctx, scan(t, "eu", t0.Add(20*time.Minute), r)); err != nil {
		t.Fatal(err)
	}
	check("a scan older than the one shown, after the removal", 7, eu)
}

// A view named in "@name" (its port and decimal ms) gets renamed by a newer
// domain event, which empties it and writes "@n", and not by an older one;
// a name on a port other than 443, or of an IPv6 host, keeps its port.
func TestOldNameFieldMoves(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	ms := t0.UnixMilli()
	if err := p.Apply(ctx, scan(t, "eu", t0, okResult("192.0.2.1", "aa", t0.Add(time.Hour)))); err != nil {
		t.Fatal(err)
	}
	// The name as a view of layout 4 holds it.
	if err := rdb.HDel(ctx, ViewKey(domainID), nameField).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, ViewKey(domainID), oldNameField, "example.com:443|"+strconv.FormatInt(ms, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		ev   events.Envelope
		want string
		n    int
	}{
		{"an older rename", domainEvent(t, events.DomainUpdated, "other.example", 443, t0.Add(-time.Second)), "example.com|" + strconv.FormatInt(ms, 36), 1},
		{"the same name, later", domainEvent(t, events.DomainUpdated, "example.com", 443, t0.Add(time.Second)), "example.com|" + strconv.FormatInt(ms+1000, 36), 1},
		{"another port", domainEvent(t, events.DomainUpdated, "example.com", 8443, t0.Add(2*time.Second)), "example.com:8443|" + strconv.FormatInt(ms+2000, 36), 0},
		{"an IPv6 host", domainEvent(t, events.DomainUpdated, "2001:db8::1", 443, t0.Add(3*time.Second)), "2001:db8::1:443|" + strconv.FormatInt(ms+3000, 36), 0},
	}
	for _, s := range steps {
		if err := p.Apply(ctx, s.ev); err != nil {
			t.Fatal(err)
		}
		all := rdb.HGetAll(ctx, ViewKey(domainID)).Val()
		want := nameOfCode(strings.Split(s.want, "|")[0])
		if s.name == "an older rename" {
			if _, ok := all[oldNameField]; !ok || all[oldNameField] != "example.com:443|"+strconv.FormatInt(ms, 10) {
				t.Errorf("%s: %s should stay as it was: %v", s.name, oldNameField, all)
			}
		} else if all[nameField] != s.want {
			t.Errorf("%s: got %s %q, want %q (%v)", s.name, nameField, all[nameField], s.want, all)
		}
		if got := snapshot(t, p); got.Name != want || len(got.Entries) != s.n {
			t.Errorf("%s: got name %q and %d entries, want %q and %d", s.name, got.Name, len(got.Entries), want, s.n)
		}
	}
}

// A scan without results leaves its mark in the region's field (layout 5
// has no "@<region>"), so a scan older than it stays out.
func TestScanWithoutResultsKeepsItsMark(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	empty := scan(t, "eu", t0)
	if err := p.Apply(ctx, empty); err != nil {
		t.Fatal(err)
	}
	if got, want := rdb.HGet(ctx, ViewKey(domainID), "eu").Val(), regionMark+regionMarkCode(t0, empty.EventID); got != want {
		t.Errorf("region field: got %q, want the mark alone %q", got, want)
	}
	if err := p.Apply(ctx, scan(t, "eu", t0.Add(-time.Minute), okResult("192.0.2.1", "aa", t0))); err != nil {
		t.Fatal(err)
	}
	if got := view(t, rdb); len(got) != 0 {
		t.Errorf("an older scan came in: %+v", got)
	}
}
