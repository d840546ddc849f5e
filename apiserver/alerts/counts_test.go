package alerts

import (
	"context"
	"reflect"
	"testing"
	"time"
)

// TestOpenCounts: the open counts are built from the records on the first
// read, then kept by the reconcile script as alerts are raised and
// resolved (a redelivered scan counts nothing twice), and agree with a
// build from the records at every step.
func TestOpenCounts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	counts := func(name string, since time.Time, wantOpen map[string]int64, wantRaised int64) {
		t.Helper()
		got, err := f.engine.OpenCounts(ctx, tenant, since)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Open, wantOpen) || got.Raised != wantRaised {
			t.Errorf("%s: got open %v raised %d, want open %v raised %d", name, got.Open, got.Raised, wantOpen, wantRaised)
		}
		// The kept counts are what a build from the records gives.
		built, err := f.rdb.HGetAll(ctx, openKey(tenant)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.Del(ctx, openKey(tenant)).Err(); err != nil {
			t.Fatal(err)
		}
		again, err := f.engine.OpenCounts(ctx, tenant, since)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt, err := f.rdb.HGetAll(ctx, openKey(tenant)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, got) || !reflect.DeepEqual(nonZero(rebuilt), nonZero(built)) {
			t.Errorf("%s: kept counts %v (%v), rebuilt %v (%v)", name, built, got, rebuilt, again)
		}
	}

	old := cert("192.0.2.1", "aaaa", t0.Add(20*day))
	f.step("20 days left, before any count", []string{"raised ssl_expiry/30 warning"}, scan(t, "eu", t0, old))
	counts("built from the records", t0.Add(-day), map[string]int64{"ssl_expiry": 1}, 1)
	f.step("13 days left", []string{"raised ssl_expiry/14 warning"}, scan(t, "eu", t0.Add(7*day), old))
	f.step("redelivered", nil, scan(t, "eu", t0.Add(7*day), old))
	counts("kept by the script", t0.Add(-day), map[string]int64{"ssl_expiry": 2}, 2)
	counts("raised since the second", t0.Add(7*day), map[string]int64{"ssl_expiry": 2}, 1)

	f.step("renewed", []string{"raised cert_changed info", "resolved ssl_expiry: certificate replaced", "resolved ssl_expiry: certificate replaced"},
		scan(t, "eu", t0.Add(8*day), cert("192.0.2.1", "bbbb", t0.Add(100*day))))
	counts("resolved; the notice is never open", t0.Add(-day), map[string]int64{}, 3)

	f.step("expired", []string{"raised cert_changed info", "raised ssl_expired critical"},
		scan(t, "eu", t0.Add(9*day), cert("192.0.2.1", "cccc", t0.Add(8*day))))
	counts("expired", t0.Add(-day), map[string]int64{"ssl_expired": 1}, 5)
	f.step("removed", []string{"resolved ssl_expired: domain removed"}, f.remove(t0.Add(10*day)))
	counts("removed", t0.Add(-day), map[string]int64{}, 5)

	// Another tenant has no alerts.
	other, err := f.engine.OpenCounts(ctx, "tenant-b", t0.Add(-day))
	if err != nil || len(other.Open) != 0 || other.Raised != 0 {
		t.Errorf("another tenant: got %+v %v, want nothing", other, err)
	}
}

// nonZero drops the counts at 0 a kept hash holds and a build leaves out.
func nonZero(h map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if v != "0" {
			out[k] = v
		}
	}
	return out
}
