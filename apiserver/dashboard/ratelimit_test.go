package dashboard_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/apiserver"
)

// The dashboard's actions count against the key's rate limits as the
// API's routes do: Check now against the check class (a scan from every
// region at once), every action against the general one. Before, a
// signed-in session checked a domain as often as it posted, while the API
// allowed the same key 10 checks a minute.
func TestActionsAreRateLimited(t *testing.T) {
	e := newEnv(t, envOptions{Configure: func(cfg *apiserver.Config) { cfg.RateLimitCheck, cfg.RateLimitGeneral = 2, 7 }})
	id := e.addDomain(t, "limited.example", 443)
	c := e.client(t, e.write)
	c.get("/domains/" + id)
	for i := 1; i <= 3; i++ {
		code, body := c.post("/domains/"+id+"/check", nil)
		want := http.StatusSeeOther
		if i == 3 {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("check %d: got HTTP %d, want %d (%.200s)", i, code, want, body)
		}
		if code == http.StatusTooManyRequests && !strings.Contains(body, "Rate limit exceeded") {
			t.Errorf("check %d: the page does not say why: %.300s", i, body)
		}
	}
	// The general limit: 7 a minute, 4 spent above (the page, and the
	// refused check too, as on the API).
	for i := 4; i <= 7; i++ {
		code, _ := c.post("/alerts/settings", map[string][]string{"expiry_thresholds_days": {"30,7"},
			"domain_expiry_thresholds_days": {"30"}, "scan_failing_after": {"3"}})
		want := http.StatusSeeOther
		if i == 7 {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("action %d: got HTTP %d, want %d", i, code, want)
		}
	}
}

// Send test counts against the tenant's test messages, shared with the
// API and across the tenant's keys.
func TestSendTestIsRateLimited(t *testing.T) {
	e := newEnv(t, envOptions{Configure: func(cfg *apiserver.Config) { cfg.RateLimitChannelTests = 1 }})
	c := e.client(t, e.write)
	c.get("/channels")
	if code, _ := c.post("/channels/add", map[string][]string{"type": {"webhook"}, "name": {"w"}, "url": {"https://hooks.example.com/x"}}); code != http.StatusSeeOther {
		t.Fatalf("add channel: got HTTP %d", code)
	}
	_, body := c.get("/channels")
	id := between(body, `action="/channels/`, `/test"`)
	if id == "" {
		t.Fatalf("no Send test form in the page")
	}
	for i, want := range []int{http.StatusSeeOther, http.StatusTooManyRequests} {
		c.get("/channels")
		if code, _ := c.post("/channels/"+id+"/test", nil); code != want {
			t.Fatalf("test %d: got HTTP %d, want %d", i+1, code, want)
		}
	}
}

// Pages count against the key's general limit too, as the API's reads
// do: the audit log, the history charts and the certificate timeline are
// ClickHouse queries that GET /api/audit and /history count.
func TestPagesAreRateLimited(t *testing.T) {
	e := newEnv(t, envOptions{Configure: func(cfg *apiserver.Config) { cfg.RateLimitGeneral = 3 }})
	c := e.client(t, e.read)
	for i, want := range []int{http.StatusOK, http.StatusOK, http.StatusOK, http.StatusTooManyRequests} {
		if code, _ := c.get("/alerts"); code != want {
			t.Fatalf("page %d: got HTTP %d, want %d", i+1, code, want)
		}
	}
}
