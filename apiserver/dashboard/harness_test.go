package dashboard_test

// The test harness of the dashboard's tests (DASHBOARD-HANDOFF.md):
//
//	e := newEnv(t, envOptions{})          // Redis, an API server, one tenant
//	c := e.client(t, e.write)             // an HTTP client signed in with a key
//	code, body := c.get("/domains")       // a page
//	code, body = c.post("/domains/add", url.Values{"hostname": {"a.example"}})
//	                                       // a form, the CSRF token added
//
// browser_test.go drives headless Chromium over the same env.

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/dashboard"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// maxPageBytes is the most a page may weigh (the budget).
const maxPageBytes = 200 << 10

// envOptions shape the env.
type envOptions struct {
	// ClickHouse gives the server a migrated ClickHouse database (history,
	// statistics, the expiry planner).
	ClickHouse bool
	// Now is the server's clock; default time.Now.
	Now func() time.Time
	// Dashboard configures the dashboard (its Now is Now).
	Dashboard dashboard.Config
	// Configure changes the server's configuration before it is built.
	Configure func(*apiserver.Config)
}

// env is an API server with the dashboard on real Redis (and ClickHouse
// when asked), and one tenant with a read key and a read-write key.
type env struct {
	URL      string
	rdb      *redis.Client
	ch       driver.Conn // nil without ClickHouse
	srv      *apiserver.Server
	accounts *accounts.Store
	tenant   string
	read     string // a key with read
	write    string // a key with read and write
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	e := &env{rdb: testenv.Redis(t).Client(t)}
	cfg := apiserver.Config{Now: opts.Now, RateLimitGeneral: 10000, RateLimitCheck: 1000, Dashboard: opts.Dashboard}
	if opts.ClickHouse {
		e.ch = testenv.ClickHouse(t).Conn(t)
		if err := schema.Migrate(context.Background(), e.ch, testenv.Logger(t)); err != nil {
			t.Fatal(err)
		}
		cfg.Audit.Conn = e.ch
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	srv, err := apiserver.New(cfg, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	e.srv = srv
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.URL = hs.URL
	if e.accounts, err = accounts.New(accounts.Config{}, e.rdb, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e.tenant, e.read, e.write = e.newTenant(t, "alice@example.com")
	return e
}

// newTenant makes an account with a read key and a read-write key.
func (e *env) newTenant(t testing.TB, email string) (tenant, read, write string) {
	t.Helper()
	ctx := context.Background()
	tenant, err := e.accounts.EnsureAccount(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.accounts.CreateKey(ctx, tenant, "read", []string{accounts.ScopeRead}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.accounts.CreateKey(ctx, tenant, "write", []string{accounts.ScopeRead, accounts.ScopeWrite}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	return tenant, r.Key, w.Key
}

// addDomain adds host:port to the env's tenant and returns its id.
func (e *env) addDomain(t testing.TB, host string, port int, tags ...string) string {
	t.Helper()
	d, _, err := e.accounts.AddDomain(context.Background(), e.tenant, accounts.NewDomain{Host: host, Port: port, Tags: tags, Source: "api"})
	if err != nil {
		t.Fatalf("add %s: %v", host, err)
	}
	return d.ID
}

// client is an HTTP client of the dashboard with its own cookies; it
// does not follow redirects, so tests see them.
type client struct {
	t    testing.TB
	base string
	http *http.Client
	csrf string // from the last page read
}

// client returns a client signed in with key ("" for none).
func (e *env) client(t testing.TB, key string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &client{t: t, base: e.URL, http: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if key != "" {
		if code, _ := c.signIn(key); code != http.StatusSeeOther {
			t.Fatalf("sign in: got HTTP %d, want 303", code)
		}
	}
	return c
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn posts key to the sign-in form and returns the answer.
func (c *client) signIn(key string) (int, string) {
	c.t.Helper()
	if code, _ := c.get("/signin"); code != http.StatusOK {
		c.t.Fatalf("GET /signin: got HTTP %d", code)
	}
	return c.postPath("/signin", url.Values{"api_key": {key}})
}

// get reads path and returns the status and body; a page's CSRF token is
// kept for the next post. Every page must weigh less than maxPageBytes.
func (c *client) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	return c.read("GET "+path, resp)
}

// post submits form to path with the CSRF token of the last page read.
func (c *client) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", c.csrf)
	}
	return c.postPath(path, form)
}

func (c *client) postPath(path string, form url.Values) (int, string) {
	c.t.Helper()
	if form.Get("csrf") == "" {
		form.Set("csrf", c.csrf)
	}
	resp, err := c.http.PostForm(c.base+path, form)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	return c.read("POST "+path, resp)
}

func (c *client) read(what string, resp *http.Response) (int, string) {
	c.t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s: read body: %v", what, err)
	}
	if len(b) > maxPageBytes {
		c.t.Errorf("%s: got %d bytes, want at most %d", what, len(b), maxPageBytes)
	}
	if m := csrfRE.FindSubmatch(b); m != nil {
		c.csrf = string(m[1])
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, loc
	}
	return resp.StatusCode, string(b)
}

// mustContain fails unless body contains every want.
func mustContain(t testing.TB, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s: body lacks %q", what, w)
		}
	}
}
