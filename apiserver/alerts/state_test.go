package alerts

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/accounts/accountstest"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

// state returns the fixture domain's alert state: the alert fields of
// its record.
func (f *fixture) state() map[string]string {
	f.t.Helper()
	h, err := f.rdb.HGetAll(context.Background(), accounts.DomainKey(tenant, domainID)).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	maps.DeleteFunc(h, func(k, _ string) bool { return !strings.HasPrefix(k, accounts.AlertFieldPrefix) })
	return h
}

// oldState returns the fixture domain's alert state key of the layouts
// before the record held the state.
func (f *fixture) oldState() map[string]string {
	f.t.Helper()
	h, err := f.rdb.HGetAll(context.Background(), oldStateKey(tenant, domainID)).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// moveStateBack replaces the fixture domain's state in its record by old,
// the fields of its state key of the layouts before the record held it.
func (f *fixture) moveStateBack(old map[string]string) {
	f.t.Helper()
	ctx := context.Background()
	h := f.state()
	var args []any
	for k, v := range old {
		args = append(args, k, v)
	}
	if err := f.rdb.HDel(ctx, accounts.DomainKey(tenant, domainID), slices.Collect(maps.Keys(h))...).Err(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.rdb.Del(ctx, oldStateKey(tenant, domainID)).Err(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.rdb.HSet(ctx, oldStateKey(tenant, domainID), args...).Err(); err != nil {
		f.t.Fatal(err)
	}
}

// TestOldStateUpgradesInPlace: a state key of the layout before the
// short one (the full SHA-256 per IP, "@tenant", "ann|<sha256>") is read
// as it was meant and moved into the record, in the record's layout, at
// the next evaluation: a leaf change it recorded raises cert_changed
// once, one it already told of raises none.
func TestOldStateUpgradesInPlace(t *testing.T) {
	f := newFixture(t, 1)
	const ip1, ip2 = "198.51.100.1", "198.51.100.2"
	a, b, c := strings.Repeat("a1", 32), strings.Repeat("b2", 32), strings.Repeat("c3", 32)
	serve := func(at time.Duration, sha1, sha2 string) events.Envelope {
		return scan(t, "eu", t0.Add(at), cert(ip1, sha1, t0.Add(90*day)), cert(ip2, sha2, t0.Add(90*day)))
	}
	// oldState replaces the state by one of the old layout at the same
	// version.
	oldState := func(fields ...string) {
		t.Helper()
		h := f.state()
		old := map[string]string{oldVerField: h[verField], oldNameField: host + ":443", oldTenantField: tenant}
		for i := 0; i < len(fields); i += 2 {
			old[fields[i]] = fields[i+1]
		}
		f.moveStateBack(old)
	}
	// upgraded checks the state is in the record, of its layout, and
	// holds leaves and announced, and the old key is gone.
	upgraded := func(name, leaves, announced string) {
		t.Helper()
		if old := f.oldState(); len(old) != 0 {
			t.Errorf("%s: old state key left: %q", name, old)
		}
		h := f.state()
		// No name: the record's host:port is the state's.
		want := []string{verField, leavesField}
		if announced != "" {
			want = append(want, announcedField)
		}
		slices.Sort(want)
		got := slices.Sorted(maps.Keys(h))
		if !reflect.DeepEqual(got, want) || h[leavesField] != leaves || h[announcedField] != announced {
			t.Errorf("%s: got state %q, want fields %q with leaves %q, announced %q", name, h, want, leaves, announced)
		}
	}

	k, c1, c2 := leafKey, projector.IPCode(ip1), projector.IPCode(ip2)
	f.step("first sight", nil, serve(0, a, a))
	upgraded("first sight", k(a)+"="+c1+","+c2, "")

	oldState("leaf|"+ip1, a, "leaf|"+ip2, a)
	f.step("old state, ip1 changes to b", []string{"raised cert_changed info"}, serve(time.Hour, b, a))
	upgraded("after the change", k(a)+"="+c2+" "+k(b)+"="+c1, k(b))

	// cert_changed told of b when ip1 changed to it: ip2 following is no
	// new change.
	oldState("leaf|"+ip1, b, "leaf|"+ip2, a, "ann|"+b, "1")
	f.step("old state, ip2 changes to b, told already", nil, serve(2*time.Hour, b, b))
	upgraded("after ip2 followed", k(b)+"="+c1+","+c2, k(b))

	f.step("ip2 changes to c", []string{"raised cert_changed info"}, serve(3*time.Hour, b, c))
	f.step("the same scan again", nil, serve(3*time.Hour+time.Minute, b, c))
	upgraded("after c", k(b)+"="+c1+" "+k(c)+"="+c2, k(b)+" "+k(c))

	// The record's state before the leaf keys and IPs were compact (16
	// hex digits, IPs as text) reads the same: the same scan again raises
	// nothing, a change once, and the state is written compact.
	if err := f.rdb.HSet(context.Background(), accounts.DomainKey(tenant, domainID),
		leavesField, b[:16]+"="+ip1+" "+c[:16]+"="+ip2, announcedField, b[:16]+" "+c[:16]).Err(); err != nil {
		t.Fatal(err)
	}
	f.step("hex state, the same scan again", nil, serve(4*time.Hour, b, c))
	upgraded("hex state read", k(b)+"="+c1+" "+k(c)+"="+c2, k(b)+" "+k(c))
	if err := f.rdb.HSet(context.Background(), accounts.DomainKey(tenant, domainID),
		leavesField, b[:16]+"="+ip1+" "+c[:16]+"="+ip2, announcedField, b[:16]+" "+c[:16]).Err(); err != nil {
		t.Fatal(err)
	}
	f.step("hex state, ip1 changes to a", []string{"raised cert_changed info"}, serve(5*time.Hour, a, c))
	upgraded("hex state changed", k(a)+"="+c1+" "+k(c)+"="+c2, k(a)+" "+k(c)) // b is shown no more
}

// TestRemovedDomainStateIsNotRecreated: once a domain's record is gone,
// its alerts are resolved and its state dropped, and nothing that reaches
// its view later (a scan applied after the removal, or before the
// domain.removed) raises alerts or writes its state again.
func TestRemovedDomainStateIsNotRecreated(t *testing.T) {
	ctx := context.Background()
	expired := cert("192.0.2.1", "aaaa", t0.Add(-day))
	gone := func(f *fixture, name string) {
		t.Helper()
		// Nothing of the record: no hash of alert fields alone.
		if n := f.rdb.Exists(ctx, accounts.DomainKey(tenant, domainID), oldStateKey(tenant, domainID)).Val(); n != 0 {
			t.Errorf("%s: got %d keys of the record and old state, want none (state %q)", name, n, f.state())
		}
		if as := f.list(); len(as) != 1 || as[0].Status != StatusResolved || as[0].Reason != ReasonRemoved {
			t.Errorf("%s: got alerts %+v, want the one resolved by the removal", name, as)
		}
	}

	t.Run("scan after domain.removed", func(t *testing.T) {
		f := newFixture(t, 1)
		f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
		f.step("removed", []string{"resolved ssl_expired: domain removed"}, f.remove(t0.Add(time.Hour)))
		gone(f, "removed")
		f.step("a scan finished after the removal", nil, scan(t, "eu", t0.Add(2*time.Hour), expired))
		gone(f, "after the late scan")
	})

	t.Run("state in the old key at the removal", func(t *testing.T) {
		f := newFixture(t, 1)
		f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
		f.moveStateBack(oldShortState(f.state()))
		f.step("removed", []string{"resolved ssl_expired: domain removed"}, f.remove(t0.Add(time.Hour)))
		gone(f, "removed")
		f.step("a scan finished after the removal", nil, scan(t, "eu", t0.Add(2*time.Hour), expired))
		gone(f, "after the late scan")
	})

	t.Run("scan before domain.removed", func(t *testing.T) {
		f := newFixture(t, 1)
		f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
		accountstest.RemoveDomain(t, f.rdb, tenant, domainID)
		f.step("a scan after the record went", []string{"resolved ssl_expired: domain removed"},
			scan(t, "eu", t0.Add(time.Hour), expired))
		gone(f, "after the scan")
		f.step("domain.removed", nil, domainEvent(t, events.DomainRemoved, host, t0.Add(2*time.Hour)))
		gone(f, "after domain.removed")
	})

	// A replica planned while the record existed; the removal happens
	// before its script runs.
	t.Run("record gone before the script", func(t *testing.T) {
		f := newFixture(t, 1)
		f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
		st, snap, ch := f.planNext(f.state())
		accountstest.RemoveDomain(t, f.rdb, tenant, domainID)
		before := f.state()
		if res, err := f.engine.apply(ctx, domainID, tenant, st.ver, snap.Version, ch); err != nil || res != "stale" {
			t.Errorf("plan of a live domain after its removal: got %q %v, want stale", res, err)
		}
		if after := f.state(); !reflect.DeepEqual(after, before) {
			t.Errorf("state: got %q after the stale plan, want it unchanged %q", after, before)
		}
		f.step("domain.removed", []string{"resolved ssl_expired: domain removed"}, domainEvent(t, events.DomainRemoved, host, t0.Add(time.Hour)))
		gone(f, "after domain.removed")
	})
}

// planNext plans, as a replica would, the evaluation of the view's next
// version from the state in rec (the domain's record as read), without
// applying it.
func (f *fixture) planNext(rec map[string]string) (state, projector.Snapshot, change) {
	f.t.Helper()
	snap, err := projector.ReadSnapshot(context.Background(), f.rdb, domainID)
	if err != nil {
		f.t.Fatal(err)
	}
	st, err := decodeState(domainID, rec, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	snap.Version++
	ch, err := plan(st, snap, facts{}, tenant, DefaultSettings(), f.engine.cfg, t0)
	if err != nil {
		f.t.Fatal(err)
	}
	return st, snap, ch
}

// oldShortState is h, a state as the record holds it, as the short
// layout's own key held it.
func oldShortState(h map[string]string) map[string]string {
	old := map[string]string{}
	for f, v := range h {
		switch {
		case f == verField:
			old[oldVerField] = v
		case f == nameField:
			old[oldNameField] = v
		case f == leavesField:
			old[oldLeavesField] = v
		case f == announcedField:
			old[oldAnnouncedField] = v
		case strings.HasPrefix(f, condPrefix):
			old[oldCondPrefix+strings.TrimPrefix(f, condPrefix)] = v
		}
	}
	return old
}

// listpack checks the fixture domain's record is still a listpack, every
// field and value within maxValueLen, and holds the record's own fields.
func (f *fixture) listpack(name string) {
	f.t.Helper()
	ctx := context.Background()
	key := accounts.DomainKey(tenant, domainID)
	if enc := f.rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		f.t.Errorf("%s: record encoding %q, want listpack (record %q)", name, enc, f.rdb.HGetAll(ctx, key).Val())
	}
	rec := f.rdb.HGetAll(ctx, key).Val()
	for k, v := range rec {
		if len(k) > maxValueLen || len(v) > maxValueLen {
			f.t.Errorf("%s: record field %s = %q over %d bytes", name, k, v, maxValueLen)
		}
	}
	if rec["host"] != host || rec["tenant_id"] != tenant {
		f.t.Errorf("%s: record %q lost its own fields", name, rec)
	}
}

// TestStateLivesInRecord: the alert state is fields of the domain's
// record, no key of its own, and keeps the record a listpack: leaves on
// many IPs, IPv6 ones among them, are split over fields of at most 64
// bytes, and the fields go again when the IPs do.
func TestStateLivesInRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	ips := []string{"192.0.2.1", "192.0.2.2", "2001:db8:4860:4860::8888", "2001:db8:4860:4860::8844"}
	a, b := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	on := func(sha string, ips ...string) []events.IPResult {
		var rs []events.IPResult
		for _, ip := range ips {
			rs = append(rs, cert(ip, sha, t0.Add(90*day)))
		}
		return rs
	}

	f.step("first sight on four IPs", nil, scan(t, "eu", t0, on(a, ips...)...), scan(t, "us", t0, on(a, ips...)...))
	h := f.state()
	for _, fld := range []string{verField, leavesField, leavesField + "1"} {
		if h[fld] == "" {
			t.Errorf("first sight: state %q has no %s", h, fld)
		}
	}
	if n, ok := h[nameField]; ok {
		t.Errorf("first sight: state names %q, the record's own name", n)
	}
	leaves, err := decodeLeaves(readChunks(h, leavesField))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{ips[0]: leafKey(a), ips[1]: leafKey(a), ips[2]: leafKey(a), ips[3]: leafKey(a)}; !reflect.DeepEqual(leaves, want) {
		t.Errorf("first sight: leaves %q, want %q", leaves, want)
	}
	f.listpack("first sight")
	if keys := f.rdb.Keys(ctx, "alerts:state:*").Val(); len(keys) != 0 {
		t.Errorf("alert state keys %q, want none: the state is in the record", keys)
	}

	f.step("one IPv6 address changes", []string{"raised cert_changed info"},
		scan(t, "eu", t0.Add(time.Hour), append(on(a, ips[:3]...), on(b, ips[3])...)...),
		scan(t, "us", t0.Add(time.Hour), append(on(a, ips[:3]...), on(b, ips[3])...)...))
	f.listpack("after the change")
	if h := f.state(); h[announcedField] != leafKey(b) {
		t.Errorf("after the change: announced %q, want %q", h[announcedField], leafKey(b))
	}

	f.step("down to one IP", nil, scan(t, "eu", t0.Add(2*time.Hour), on(a, ips[0])...),
		scan(t, "us", t0.Add(2*time.Hour), on(a, ips[0])...))
	h = f.state()
	if want := leafKey(a) + "=" + projector.IPCode(ips[0]); h[leavesField] != want {
		t.Errorf("one IP: leaves %q, want %q", h[leavesField], want)
	}
	for _, fld := range []string{leavesField + "1", announcedField} {
		if _, ok := h[fld]; ok {
			t.Errorf("one IP: state %q keeps %s", h, fld)
		}
	}
	f.listpack("one IP")
}

// TestOldStateKeyMovesIntoRecord: a state in its key of the layout before
// (alerts:state:{tNN}:<id>) is read while the record holds none, moved
// whole into the record at the next evaluation, conditions and all, and
// its key deleted in the same step; an old key written beside a state in
// the record (an old replica) does not count and goes too.
func TestOldStateKeyMovesIntoRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	expired := func(sha string) events.IPResult { return cert("192.0.2.1", sha, t0.Add(-day)) }
	f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired("aaaa"), cert("192.0.2.2", "aaaa", t0.Add(-day))))
	before := f.state()
	f.moveStateBack(oldShortState(before))
	if h := f.state(); len(h) != 0 {
		t.Fatalf("state left in the record: %q", h)
	}

	f.step("the same again, state in the old key", nil, scan(t, "eu", t0.Add(time.Hour), expired("aaaa"), cert("192.0.2.2", "aaaa", t0.Add(-day))))
	if old := f.oldState(); len(old) != 0 {
		t.Errorf("old key left after the evaluation: %q", old)
	}
	after := f.state()
	if after[verField] == before[verField] {
		t.Errorf("version %s not moved on", after[verField])
	}
	delete(after, verField)
	delete(before, verField)
	if !reflect.DeepEqual(after, before) {
		t.Errorf("moved state: got %q, want %q", after, before)
	}

	// An old replica wrote an old key beside the record's state.
	if err := f.rdb.HSet(ctx, oldStateKey(tenant, domainID), oldVerField, "1", oldCondPrefix+"chain_invalid", "{}").Err(); err != nil {
		t.Fatal(err)
	}
	f.step("renewed", []string{"raised cert_changed info", "resolved ssl_expired: certificate replaced"},
		scan(t, "eu", t0.Add(2*time.Hour), cert("192.0.2.1", "bbbb", t0.Add(90*day)), cert("192.0.2.2", "bbbb", t0.Add(90*day))))
	if old := f.oldState(); len(old) != 0 {
		t.Errorf("old key beside the record's state left: %q", old)
	}
	if as := f.list(); len(as) != 2 {
		t.Errorf("list: got %d alerts, want ssl_expired and cert_changed", len(as))
	}
}

// TestStateNameFromRecord: the state names no host:port while the
// record's is the one its alerts are for. A name written by the layout
// before goes at the next evaluation; a rename between a plan and its
// script makes the script stale; a name the rename pinned resolves the
// alerts of the old name, then goes.
func TestStateNameFromRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	expired := cert("192.0.2.1", "aaaa", t0.Add(-day))
	key := accounts.DomainKey(tenant, domainID)
	f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
	if n, ok := f.state()[nameField]; ok {
		t.Errorf("state names %q, the record's own name", n)
	}

	f.rdb.HSet(ctx, key, nameField, host+":443")
	f.step("a scan, the name stored as before", nil, scan(t, "eu", t0.Add(time.Hour), expired))
	if n, ok := f.state()[nameField]; ok {
		t.Errorf("after an evaluation: state keeps the name %q of the layout before", n)
	}

	// A plan made while the record had its name; the rename comes first.
	st, snap, ch := f.planNext(f.rdb.HGetAll(ctx, key).Val())
	const renamed = "renamed.example.com"
	// What the accounts store's rename does (pin_alert_name).
	f.rdb.HSet(ctx, key, nameField, host+":443", "host", renamed)
	if res, err := f.engine.apply(ctx, domainID, tenant, st.ver, snap.Version, ch); err != nil || res != "stale" {
		t.Errorf("plan naming the record's old name after the rename: got %q %v, want stale", res, err)
	}
	f.step("domain.updated", []string{"resolved ssl_expired: domain renamed"},
		domainEvent(t, events.DomainUpdated, renamed, t0.Add(2*time.Hour)))
	var resolved events.AlertResolvedV1
	for _, ev := range f.alertEvents() {
		if ev.name == events.AlertResolved {
			resolved = ev.resolved
		}
	}
	if resolved.Hostname != host {
		t.Errorf("the rename's resolution names %q, want the old host %q", resolved.Hostname, host)
	}
	if n, ok := f.state()[nameField]; ok {
		t.Errorf("after the rename: state names %q, the record's own name", n)
	}
}
