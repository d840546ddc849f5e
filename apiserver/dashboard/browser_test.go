package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/internal/pipelinetest"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestBrowser drives headless Chromium through the dashboard over the
// real pipeline (a coordinator, an agent in each of two regions, a
// projector with the alert engine, the ClickHouse sink) scanning the lab's
// TLS servers on loopback: sign-in, every page, adding a domain and
// seeing its scan results appear, deleting one through the confirmation,
// a read-only key, sign-out. No console error and no request leaving the
// test server.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a browser and real scans")
	}
	e := newEnv(t, envOptions{ClickHouse: true})
	engine, err := alerts.New(alerts.Config{}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	fleet := pipelinetest.Start(t, e.rdb, pipelinetest.Config{Shards: 4, Regions: []string{"eu", "us"}, Evaluators: []projector.Evaluator{engine}})
	runSink(t, e)
	targets := map[string]lab.Target{}
	for _, tg := range fleet.Targets() {
		targets[tg.Name] = tg
	}
	valid, expired := targets["valid"], targets["expired"]
	e.addDomain(t, expired.Host, expired.Port, "legacy")
	e.addDomain(t, targets["multi-ip"].Host, targets["multi-ip"].Port, "prod")

	b := newBrowser(t, e.URL)
	b.open("/")
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Fatalf("/ without a session: got %s, want the sign-in page", loc)
	}
	b.shot("signin")
	b.audit("signin")
	b.signIn(e.write)
	if got := b.text("h1"); got != "Overview" {
		t.Errorf("after sign-in: got heading %q, want Overview", got)
	}
	// The expired server's alert reaches the overview once scanned.
	waitFor(t, e, "/", "Expired certificates")
	b.open("/")
	if got := b.text(".problem-ssl_expired"); !strings.Contains(got, expired.Host) {
		t.Errorf("overview problems: got %q, want %s", got, expired.Host)
	}
	b.shot("overview")
	b.audit("overview")
	b.check()

	t.Run("add a domain and see its results", func(t *testing.T) {
		b.open("/domains")
		b.do("add "+valid.Host,
			chromedp.SendKeys("#a-host", valid.Host), chromedp.SetValue("#a-port", fmt.Sprint(valid.Port)),
			chromedp.SendKeys("#a-tags", "prod"), chromedp.Submit("#a-host"), chromedp.WaitVisible("#manage-h"))
		if got := b.text("h1"); got != fmt.Sprintf("%s:%d", valid.Host, valid.Port) {
			t.Errorf("after add: got heading %q, want the new domain", got)
		}
		// The page refreshes itself until both regions' scans are in.
		b.step("wait for the scan results", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			return chromedp.Do(ctx, chromedp.WaitVisible(`table.matrix tbody tr:nth-child(2)`))
		})
		if got := b.text("#domain-status"); got != "valid" {
			t.Errorf("new domain's status: got %q, want valid", got)
		}
		if got := b.text("table.matrix"); !strings.Contains(got, "eu") || !strings.Contains(got, "us") || !strings.Contains(got, "ok") {
			t.Errorf("matrix: got %q, want ok from eu and us", got)
		}
		b.check()
	})

	t.Run("every page", func(t *testing.T) {
		multi := waitDomainScanned(t, e, targets["multi-ip"].Host)
		b.open("/domains/" + multi)
		if n := b.count("table.matrix thead th"); n < 3 {
			t.Errorf("multi-ip matrix: got %d header cells, want a region column and two addresses", n)
		}
		waitFor(t, e, "/domains/"+multi, "Handshake latency")
		b.open("/domains/" + multi)
		b.shot("domain")
		b.audit("domain")
		b.open("/domains?sort=hostname&order=asc")
		if n := b.count("table.domains tbody tr"); n != 3 {
			t.Errorf("domains: got %d rows, want 3", n)
		}
		b.shot("domains")
		b.audit("domains")
		b.do("filter by tag", chromedp.SendKeys("#f-tag", "legacy"), chromedp.Submit("#f-tag"))
		b.waitLocation("tag=legacy")
		if n := b.count("table.domains tbody tr"); n != 1 {
			t.Errorf("tag legacy: got %d rows, want 1", n)
		}
		// Keyboard: the skip link is the first stop and leads to main.
		b.open("/domains")
		b.do("tab to the skip link", chromedp.KeyEvent("\t"))
		var focused string
		b.step("focused element", func(ctx context.Context) (err error) {
			focused, err = chromedp.Run(ctx, chromedp.Evaluate[string]("document.activeElement.className"))
			return err
		})
		if focused != "skip" {
			t.Errorf("first tab stop: got class %q, want the skip link", focused)
		}
		b.check()
	})

	t.Run("delete with confirmation", func(t *testing.T) {
		b.open("/domains?search=" + expired.Host)
		b.do("delete", chromedp.Click(`form[data-confirm] button.danger`), chromedp.WaitVisible(".flash"))
		if got := b.text(".flash"); !strings.Contains(got, "Deleted "+expired.Host) {
			t.Errorf("after delete: got %q", got)
		}
		if d := b.acceptedDialogs(); len(d) != 1 || !strings.Contains(d[0], "Delete "+expired.Host) {
			t.Errorf("dialogs: got %q, want the one confirmation", d)
		}
		b.check()
	})

	b.signOut()
	b.open("/")
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Errorf("/ after sign-out: got %s, want the sign-in page", loc)
	}
	b.check()

	t.Run("read-only key", func(t *testing.T) {
		b.signIn(e.read)
		for _, path := range []string{"/", "/domains", "/domains/" + waitDomainScanned(t, e, valid.Host)} {
			b.open(path)
			if n := b.count(`form[method="post"]:not([action="/signout"])`); n != 0 {
				t.Errorf("%s with a read-only key: got %d forms that change things, want none", path, n)
			}
		}
		if got := b.text("header.top .who"); !strings.Contains(got, "read-only") {
			t.Errorf("read-only key: got %q in the navigation, want read-only", got)
		}
		b.shot("read-only")
		b.audit("read-only")
		b.check()
		// The same key's POSTs are refused, CSRF token and all.
		c := e.client(t, e.read)
		c.get("/domains")
		if code, _ := c.post("/domains/add", nil); code != http.StatusForbidden {
			t.Errorf("add with a read key: got HTTP %d, want 403", code)
		}
		b.signOut()
	})
}

// runSink runs the coordinator's ClickHouse sink, so scans reach the
// history as in production.
func runSink(t *testing.T, e *env) {
	t.Helper()
	s, err := sink.New(sink.Config{FlushInterval: 200 * time.Millisecond}, e.rdb, e.ch, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("sink stopped: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// waitFor polls path with a write key until it shows want, for up to 40s.
func waitFor(t *testing.T, e *env, path, want string) {
	t.Helper()
	c := e.client(t, e.write)
	deadline := time.Now().Add(40 * time.Second)
	for {
		_, body := c.get(path)
		if strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q", path, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitDomainScanned returns the id of the tenant's domain host once its
// page shows scan results.
func waitDomainScanned(t *testing.T, e *env, host string) string {
	t.Helper()
	ds, err := e.accounts.ListDomains(context.Background(), e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Host == host {
			waitFor(t, e, "/domains/"+d.ID, `id="domain-status"`)
			return d.ID
		}
	}
	t.Fatalf("no domain %s", host)
	return ""
}
