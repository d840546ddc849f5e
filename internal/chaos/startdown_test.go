package chaos

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClickHouseDownAtStart restarts the apiserver and the coordinator
// while ClickHouse is down: they start and serve what needs only Redis (a
// domain added then is scheduled, scanned and in its view), answer
// /healthz 200 and /readyz 503 instead of exiting, and once ClickHouse is
// back they connect by themselves and store everything accepted once.
func TestClickHouseDownAtStart(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	tn := f.newTenant()
	key := f.bearer(tn.email)
	before := f.probe(time.Minute)
	f.load()
	time.Sleep(s.load)

	f.chServer.Stop(t)
	for _, role := range []string{"apiserver", "coordinator"} {
		p := f.procs[role]
		p.stop()
		p.run(t, f.bin)
	}
	started := time.Now()
	// Up and alive, not ready: the same as a running role in an outage.
	for _, role := range []string{"apiserver", "coordinator"} {
		healthz := strings.TrimSuffix(f.readyURL(role), "/readyz") + "/healthz"
		for status(healthz) != http.StatusOK {
			if !f.procs[role].running() || time.Since(started) > 30*time.Second {
				t.Fatalf("%s restarted with clickhouse down: running %v, /healthz not 200 after %s\n%s", role,
					f.procs[role].running(), time.Since(started).Round(time.Millisecond), tail(f.procs[role].log, 5))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code := status(f.readyURL(role)); code != http.StatusServiceUnavailable {
			t.Errorf("%s with clickhouse down: /readyz %d, want 503", role, code)
		}
	}
	t.Logf("apiserver and coordinator restarted with clickhouse down: alive after %s", time.Since(started).Round(time.Millisecond))
	// What needs only Redis works: a domain added now is scanned and its
	// view shows the certificate.
	added := time.Now()
	id := f.add(tn, f.lab.Targets()[0].Domain)
	var view struct {
		SSLDaysRemaining *int `json:"ssl_days_remaining"`
	}
	for {
		code, _, body := f.send(key, "GET", "/api/v1/domains/"+id, nil)
		if code == http.StatusOK && json.Unmarshal([]byte(body), &view) == nil && view.SSLDaysRemaining != nil {
			break
		}
		if time.Since(added) > time.Minute {
			t.Fatalf("domain added with clickhouse down: no scan in its view after 1m (last %d %s)", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	scanned := time.Since(added)
	if code, retry, body := f.send(key, "GET", "/api/v1/domains/"+id+"/history", nil); code != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("history with clickhouse down since start: %d (Retry-After %q) %s, want 503 with Retry-After", code, retry, body)
	}

	f.chServer.Start(t)
	back := time.Now()
	ready := f.waitReady(2 * time.Minute)
	for {
		var n uint64
		err := f.conn.QueryRow(ctx, "SELECT count() FROM scan_results WHERE domain_id = ?", id).Scan(&n)
		if err == nil && n > 0 {
			break
		}
		if time.Since(back) > time.Minute {
			t.Fatalf("domain scanned while clickhouse was down: not stored 1m after it came back (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stored := time.Since(back)
	f.alive()
	t.Logf("clickhouse down at start: a domain added then scanned into its view in %s; after clickhouse came back roles ready in %s, its scan stored %s after (a new domain took %s before the fault)",
		scanned.Round(time.Millisecond), ready.Round(time.Millisecond), stored.Round(time.Millisecond), before.Round(time.Millisecond))
	time.Sleep(s.load)
	f.landed("after clickhouse down at start")
}
