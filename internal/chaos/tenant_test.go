package chaos

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
)

// TestTenantLeaves deletes a tenant with `certfleet tenant delete` while
// the fleet scans it and others under load: its key stops working, no
// Redis key names it, its ClickHouse rows go (a second run later catches
// scans that were in flight), and every other tenant keeps being scanned
// and stored.
func TestTenantLeaves(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	f.load()
	leaver := f.newTenant()
	tenant := events.TenantID(leaver.email)
	var domainIDs []string
	for _, tg := range f.lab.Targets() {
		domainIDs = append(domainIDs, f.add(leaver, tg.Domain))
	}
	ctx := context.Background()
	count := func(q string, args ...any) uint64 {
		t.Helper()
		var n uint64
		if err := f.conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	// The leaver is scanned and stored before it leaves.
	for start := time.Now(); count("SELECT count() FROM scan_results WHERE tenant_id = ?", tenant) == 0; {
		if time.Since(start) > s.settle {
			t.Fatalf("no scan of the leaver stored in %s", s.settle)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(s.load)
	// One domain is removed on its own before the tenant leaves: its view
	// stays as a tombstone (naming the tenant) and, until the alert
	// engine evaluates the removal, its alert state; the tenant's
	// deletion must find both, though the domain is no longer listed.
	removedAlone := domainIDs[0]
	req, _ := http.NewRequest(http.MethodDelete, f.api+"/api/v1/domains/"+removedAlone, nil)
	req.Header.Set("Authorization", "Bearer "+f.bearer(leaver.email))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("remove domain %s: %v %v", removedAlone, resp, err)
	} else {
		resp.Body.Close()
	}

	del := func() (string, time.Duration) {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(f.bin, "tenant", "delete", "--email", leaver.email, "--yes",
			"--redis-url", f.redis.URL, "--clickhouse-dsn", f.ch.DSN, "--log-level", "warn").CombinedOutput()
		if err != nil {
			t.Fatalf("tenant delete: %v\n%s", err, out)
		}
		return string(out), time.Since(start)
	}
	out, took := del()
	if !strings.Contains(out, "deleted account "+leaver.email) || !strings.Contains(out, "domains") {
		t.Fatalf("tenant delete printed:\n%s", out)
	}
	t.Logf("tenant delete took %s under load:\n%s", took.Round(time.Millisecond), out)

	// Its key no longer works.
	if code, _, body := f.raw(http.MethodPost, "/api/v1.0/servers/add",
		map[string]string{"api_key": leaver.key, "domain": f.lab.Targets()[0].Domain}); code == http.StatusOK && strings.Contains(body, `"success"`) {
		t.Errorf("the deleted tenant's key still adds a domain: %d %s", code, body)
	}
	// Jobs queued before the removal may still be scanned: wait them out,
	// then run again to delete what they stored.
	// Under load a scan dispatched before the deletion can land later
	// still; each run removes what such scans left, and the runs converge
	// to nothing once the last job is done.
	var out2 string
	for run := 2; ; run++ {
		time.Sleep(3 * s.interval)
		out2, _ = del()
		t.Logf("run %d printed:\n%s", run, out2)
		if strings.Contains(out2, "nothing left to remove") {
			break
		}
		if run == 6 {
			t.Errorf("%d runs of tenant delete still found things to remove", run)
			break
		}
	}
	start := time.Now()
	for count("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0") > 0 {
		if time.Since(start) > s.settle {
			t.Fatalf("clickhouse mutations not done after %s", s.settle)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("clickhouse mutations done %s after the second run", time.Since(start).Round(time.Millisecond))
	if n := count("SELECT count() FROM scan_results WHERE tenant_id = ?", tenant); n != 0 {
		t.Errorf("scan_results keeps %d rows of the deleted tenant", n)
	}
	if n := count("SELECT count() FROM events WHERE tenant_id = ? AND name != ?", tenant, events.TenantDeleted); n != 0 {
		t.Errorf("events keeps %d rows of the deleted tenant besides tenant.deleted.v1", n)
	}
	// No Redis key names the tenant; views of its domains may come back
	// only from a scan in flight at the deletion (counted, not refused),
	// their alert states never (the engine evaluates a domain whose record
	// is gone as removed, and writes no state for it).
	var named, views int
	iter := f.rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, tenant) {
			named++
			t.Errorf("key %s names the deleted tenant", k)
		}
		if strings.Contains(k, removedAlone) {
			t.Errorf("key %s of the domain removed before the tenant left", k)
		}
		for _, id := range domainIDs {
			if strings.Contains(k, id) {
				views++
				// The alert state lives in the domain's record, which a
				// late evaluation never writes once it is gone.
				if strings.HasPrefix(k, "alerts:state:") || strings.HasPrefix(k, "domain:") {
					t.Errorf("alert state or record %s of a deleted domain", k)
				}
			}
		}
	}
	t.Logf("keys naming the deleted tenant's %d domains after the second run: %d", len(domainIDs), views)
	// The others still work.
	f.alive()
	t.Logf("a new tenant's domain stored %s after the deletion", f.probe(time.Minute).Round(time.Millisecond))
}
