package chaos

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/health"
)

// timedGet sends GET path to the API with key (none when empty) or to a
// full URL, and returns the status (0 when no answer within a minute) and
// how long the answer took.
func timedGet(url, key string) (int, time.Duration) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return 0, time.Since(start)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// TestDependencyHangs freezes ClickHouse, then Redis (SIGSTOP: they
// accept connections and answer nothing, as a hung server or a frozen host
// does) under load. /readyz answers 503 by its deadline instead of
// hanging; history reads answer 503 by the API's history deadline (10 s)
// instead of the driver's 30 s dial timeout; once the server resumes,
// every role is ready again and everything accepted lands once.
//
// It takes about 40 s, most of it waiting out the deadlines: only the
// long form (go tool task chaos) runs it; the default suite covers the
// two bounds in internal/health (TestCheckIgnoringDeadline) and schema
// (TestDialTimeout).
func TestDependencyHangs(t *testing.T) {
	s := suite(t)
	if !s.full {
		t.Skip("frozen dependencies on real processes: long form only (go tool task chaos, CERTFLEET_CHAOS=full)")
	}
	f := newFleet(t, s)
	tn := f.newTenant()
	id := f.add(tn, f.lab.Targets()[0].Domain)
	key := f.bearer(tn.email)
	before := f.probe(time.Minute)
	f.load()
	time.Sleep(s.load)

	readyBy := health.CheckTimeout + time.Second
	readyz := func(what string, roles ...string) {
		t.Helper()
		for _, role := range roles {
			code, took := timedGet(f.readyURL(role), "")
			t.Logf("%s: %s /readyz %d in %s", what, role, code, took.Round(time.Millisecond))
			if code != http.StatusServiceUnavailable || took > readyBy {
				t.Errorf("%s: %s /readyz answered %d after %s, want 503 within %s", what, role, code, took.Round(time.Millisecond), readyBy)
			}
		}
	}

	f.chServer.Pause()
	readyz("clickhouse frozen", "apiserver", "coordinator")
	// One read after the other: the first may meet a pooled connection
	// (held to the query's deadline), the next one dials anew.
	historyBy := 12 * time.Second
	for _, path := range []string{"/history", "/certificates"} {
		code, took := timedGet(f.api+"/api/v1/domains/"+id+path, key)
		t.Logf("clickhouse frozen: GET %s %d in %s", path, code, took.Round(time.Millisecond))
		if code != http.StatusServiceUnavailable || took > historyBy {
			t.Errorf("clickhouse frozen: GET %s answered %d after %s, want 503 within %s", path, code, took.Round(time.Millisecond), historyBy)
		}
	}
	f.chServer.Resume()
	back := time.Now()
	ready := f.waitReady(2 * time.Minute)
	after := f.probe(2 * time.Minute)
	t.Logf("clickhouse resumed: roles ready %s after, a new domain stored %s after it was back (%s before the fault)",
		ready.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), before.Round(time.Millisecond))
	_ = after

	f.redis.Pause()
	readyz("redis frozen", "apiserver", "coordinator", "agent")
	f.redis.Resume()
	back = time.Now()
	ready = f.waitReady(2 * time.Minute)
	after = f.probe(2 * time.Minute)
	f.alive()
	t.Logf("redis resumed: roles ready %s after, a new domain stored in %s, %s after it was back", ready.Round(time.Millisecond),
		after.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	time.Sleep(s.load)
	f.landed("after clickhouse and redis froze")
}
