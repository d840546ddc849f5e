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

// moveStateBack replaces the fixture domain's state by the key of the
// layouts before the record held it, at the same version: fields are
// the old key's beside "@ver" and "@name".
func (f *fixture) moveStateBack(fields ...string) {
	f.t.Helper()
	ctx := context.Background()
	h := f.state()
	args := []any{oldVerField, h[verField], oldNameField, h[nameField]}
	for _, v := range fields {
		args = append(args, v)
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
		f.moveStateBack(append([]string{oldTenantField, tenant}, fields...)...)
	}
	// upgraded checks the state is in the record, of its layout, and
	// holds leaves and announced, and the old key is gone.
	upgraded := func(name, leaves, announced string) {
		t.Helper()
		if old := f.oldState(); len(old) != 0 {
			t.Errorf("%s: old state key left: %q", name, old)
		}
		h := f.state()
		want := []string{nameField, verField, leavesField}
		if announced != "" {
			want = append(want, announcedField)
		}
		slices.Sort(want)
		got := slices.Sorted(maps.Keys(h))
		if !reflect.DeepEqual(got, want) || h[leavesField] != leaves || h[announcedField] != announced {
			t.Errorf("%s: got state %q, want fields %q with leaves %q, announced %q", name, h, want, leaves, announced)
		}
	}

	f.step("first sight", nil, serve(0, a, a))
	upgraded("first sight", a[:16]+"="+ip1+","+ip2, "")

	oldState("leaf|"+ip1, a, "leaf|"+ip2, a)
	f.step("old state, ip1 changes to b", []string{"raised cert_changed info"}, serve(time.Hour, b, a))
	upgraded("after the change", a[:16]+"="+ip2+" "+b[:16]+"="+ip1, b[:16])

	// cert_changed told of b when ip1 changed to it: ip2 following is no
	// new change.
	oldState("leaf|"+ip1, b, "leaf|"+ip2, a, "ann|"+b, "1")
	f.step("old state, ip2 changes to b, told already", nil, serve(2*time.Hour, b, b))
	upgraded("after ip2 followed", b[:16]+"="+ip1+","+ip2, b[:16])

	f.step("ip2 changes to c", []string{"raised cert_changed info"}, serve(3*time.Hour, b, c))
	f.step("the same scan again", nil, serve(3*time.Hour+time.Minute, b, c))
	upgraded("after c", b[:16]+"="+ip1+" "+c[:16]+"="+ip2, b[:16]+" "+c[:16])
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
		if h := f.state(); len(h) != 0 {
			t.Errorf("%s: got alert state %q, want none", name, h)
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
		snap, err := projector.ReadSnapshot(ctx, f.rdb, domainID)
		if err != nil {
			t.Fatal(err)
		}
		st, err := decodeState(domainID, f.state(), nil)
		if err != nil {
			t.Fatal(err)
		}
		snap.Version++
		ch, err := plan(st, snap, facts{}, tenant, DefaultSettings(), f.engine.cfg, t0)
		if err != nil {
			t.Fatal(err)
		}
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
