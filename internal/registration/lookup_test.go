package registration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// registry is an RDAP server on loopback: /rdap/domain/<name> answers by
// the name's first label, the way real registries answer (samples from
// testdata/rdap), and misbehaves on request.
func registry(t *testing.T) *httptest.Server {
	t.Helper()
	sample := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "rdap", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	com, de := sample("com-verisign-google.com.json"), sample("de-denic-denic.de.json")
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rdap/domain/{name}", func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Accept"); !strings.Contains(got, "application/rdap+json") {
			http.Error(w, "want Accept: application/rdap+json, got "+got, http.StatusNotAcceptable)
			return
		}
		label, _, _ := strings.Cut(r.PathValue("name"), ".")
		rdap := func(b []byte) {
			w.Header().Set("Content-Type", "application/rdap+json")
			_, _ = w.Write(b)
		}
		switch {
		case label == "ok":
			rdap(com)
		case label == "noexpiry":
			rdap(de)
		case label == "missing":
			w.Header().Set("Content-Type", "application/rdap+json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errorCode": 404, "title": "Not Found"}`))
		case label == "slowdown":
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
		case label == "slowdowndate":
			w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
		case label == "broken":
			rdap([]byte(`{"objectClassName": "domain", "events": [{"eventAction": "expir`))
		case label == "html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Service temporarily unavailable</body></html>"))
		case label == "huge":
			rdap([]byte(`{"objectClassName": "domain", "remarks": ["` + strings.Repeat("x", 100<<10) + `"]}`))
		case label == "down":
			w.WriteHeader(http.StatusInternalServerError)
		case label == "trickle":
			// Headers at once, then a byte now and then: a server that
			// would hold a worker for ever without a deadline.
			w.Header().Set("Content-Type", "application/rdap+json")
			w.WriteHeader(http.StatusOK)
			for i := 0; ; i++ {
				_, _ = w.Write([]byte(" "))
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		case strings.HasPrefix(label, "hops"):
			// hopsN: N redirects through localhost (another host than the
			// bootstrap's 127.0.0.1: untrusted), then the answer.
			n := 0
			fmt.Sscanf(label, "hops%d", &n)
			http.Redirect(w, r, fmt.Sprintf("http://localhost:%s/hop/%d/%s", srv.URL[strings.LastIndex(srv.URL, ":")+1:], n, r.PathValue("name")), http.StatusFound)
		case label == "private":
			http.Redirect(w, r, "http://10.0.0.1/rdap/domain/"+r.PathValue("name"), http.StatusMovedPermanently)
		case label == "metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusTemporaryRedirect)
		case label == "ftp":
			http.Redirect(w, r, "ftp://example.com/x", http.StatusFound)
		case label == "self":
			// A redirect to the bootstrap's own server stays trusted.
			http.Redirect(w, r, "/rdap/domain/ok."+strings.SplitN(r.PathValue("name"), ".", 2)[1], http.StatusFound)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	mux.HandleFunc("GET /hop/{n}/{name}", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		fmt.Sscanf(r.PathValue("n"), "%d", &n)
		if n <= 1 {
			w.Header().Set("Content-Type", "application/rdap+json")
			_, _ = w.Write(com)
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/hop/%d/%s", n-1, r.PathValue("name")), http.StatusFound)
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// bootstrapFor names srv as the RDAP server of the TLDs "test" and "example".
func bootstrapFor(srv *httptest.Server) []byte {
	return []byte(fmt.Sprintf(`{"version": "1.0", "publication": "2026-12-01T00:00:00Z", "services": [[["test", "example"], [%q]]]}`, srv.URL+"/rdap/"))
}

// fallback stands in for the WHOIS client (internal/registration/whois,
// written beside this package): it records what it was asked.
type fallback struct {
	calls atomic.Int32
	deps  FallbackDeps
}

func (f *fallback) Lookup(_ context.Context, domain string) events.RegistrationV1 {
	f.calls.Add(1)
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return events.RegistrationV1{Domain: domain, Status: events.RegistrationOK, Source: SourceWHOIS, Server: "whois.test:43", ExpiresAt: &exp, LookedUpAt: time.Now()}
}

func newLookuper(t *testing.T, cfg Config) *Lookuper {
	t.Helper()
	l, err := New(cfg, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func TestLookup(t *testing.T) {
	srv := registry(t)
	fast := ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 1000}
	tests := []struct {
		name       string
		domain     string
		allow      []netip.Prefix
		status     string
		detail     string
		retryAfter time.Duration // > 0: RetryAfter about this far ahead
		server     string        // suffix of the answering URL
		expires    bool
	}{
		{name: "ok", domain: "ok.test", status: events.RegistrationOK, server: "/rdap/domain/ok.test", expires: true},
		{name: "no expiry published", domain: "noexpiry.test", status: events.RegistrationNoExpiry},
		{name: "not found", domain: "missing.test", status: events.RegistrationNotFound},
		{name: "429 with seconds", domain: "slowdown.test", status: events.RegistrationRateLimited, retryAfter: 2 * time.Minute},
		{name: "429 with a date", domain: "slowdowndate.test", status: events.RegistrationRateLimited, retryAfter: time.Hour},
		{name: "malformed json", domain: "broken.test", status: events.RegistrationError, detail: DetailMalformed},
		{name: "html instead of json", domain: "html.test", status: events.RegistrationError, detail: DetailMalformed},
		{name: "over the size cap", domain: "huge.test", status: events.RegistrationError, detail: DetailTooLarge},
		{name: "server error", domain: "down.test", status: events.RegistrationError, detail: DetailHTTPStatus},
		{name: "trickling server", domain: "trickle.test", status: events.RegistrationError, detail: DetailTimeout},
		{name: "1 redirect", domain: "hops1.test", allow: loopback, status: events.RegistrationOK, server: "/hop/1/hops1.test", expires: true},
		{name: "2 redirects", domain: "hops2.test", allow: loopback, status: events.RegistrationOK, server: "/hop/1/hops2.test", expires: true},
		{name: "3 redirects", domain: "hops3.test", allow: loopback, status: events.RegistrationOK, server: "/hop/1/hops3.test", expires: true},
		{name: "4 redirects", domain: "hops4.test", allow: loopback, status: events.RegistrationError, detail: DetailTooManyRedirects},
		{name: "redirect target not allowed", domain: "hops1.test", status: events.RegistrationError, detail: DetailBlocked},
		{name: "redirect to a private address", domain: "private.test", allow: loopback, status: events.RegistrationError, detail: DetailBlocked, server: "http://10.0.0.1/rdap/domain/private.test"},
		{name: "redirect to cloud metadata", domain: "metadata.test", allow: loopback, status: events.RegistrationError, detail: DetailBlocked},
		{name: "redirect to ftp", domain: "ftp.test", status: events.RegistrationError, detail: DetailBadRedirect},
		{name: "redirect to the same server", domain: "self.test", status: events.RegistrationOK, server: "/rdap/domain/ok.test", expires: true},
		{name: "no rdap server, no fallback", domain: "nothing.invalid", status: events.RegistrationError, detail: DetailNoServer},
		{name: "not a registrable domain", domain: "www.ok.test", status: events.RegistrationError, detail: DetailNotRegistrable},
		{name: "public suffix", domain: "co.uk", status: events.RegistrationError, detail: DetailNotRegistrable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLookuper(t, Config{Bootstrap: bootstrapFor(srv), Allow: tc.allow, Timeout: 500 * time.Millisecond,
				MaxBytes: 64 << 10, ServerRate: fast})
			before := time.Now()
			got := l.Lookup(context.Background(), tc.domain)
			if got.Status != tc.status || got.Detail != tc.detail {
				t.Fatalf("got %s/%s (server %s), want %s/%s", got.Status, got.Detail, got.Server, tc.status, tc.detail)
			}
			if got.Domain != tc.domain {
				t.Errorf("domain: got %q, want %q", got.Domain, tc.domain)
			}
			if tc.server != "" && !strings.HasSuffix(got.Server, tc.server) {
				t.Errorf("server: got %q, want it to end in %q", got.Server, tc.server)
			}
			if (got.ExpiresAt != nil) != tc.expires {
				t.Errorf("expires: got %v, want set=%v", got.ExpiresAt, tc.expires)
			}
			if tc.retryAfter > 0 {
				if got.RetryAfter == nil {
					t.Fatalf("retry after: got nil, want about %s ahead", tc.retryAfter)
				}
				if d := got.RetryAfter.Sub(before); d < tc.retryAfter-5*time.Second || d > tc.retryAfter+5*time.Second {
					t.Errorf("retry after: got %s ahead, want about %s", d, tc.retryAfter)
				}
			} else if got.RetryAfter != nil {
				t.Errorf("retry after: got %s, want nil", got.RetryAfter)
			}
			if got.Status != events.RegistrationError && got.Source != SourceRDAP {
				t.Errorf("source: got %q, want %q", got.Source, SourceRDAP)
			}
			if got.LookedUpAt.IsZero() {
				t.Error("looked up at: got zero, want the time of the answer")
			}
		})
	}
}

// A server's Retry-After holds every replica off: after one replica got a
// 429, another (its own Redis client, its own Lookuper) does not ask the
// server again but answers rate-limited at once, until the same time.
func TestRetryAfterHoldsEveryReplica(t *testing.T) {
	srv := registry(t)
	redis := testenv.Redis(t)
	var asked atomic.Int32
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)
	cfg := Config{Bootstrap: bootstrapFor(counting), Timeout: time.Second, MaxWait: 100 * time.Millisecond,
		ServerRate: ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 1000}}
	replica := func() *Lookuper {
		l, err := New(cfg, redis.Client(t), testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := replica(), replica()
	first := a.Lookup(context.Background(), "slowdown.test")
	if first.Status != events.RegistrationRateLimited || first.RetryAfter == nil {
		t.Fatalf("first: got %s/%s, want rate-limited with a retry after", first.Status, first.Detail)
	}
	second := b.Lookup(context.Background(), "ok.test")
	if second.Status != events.RegistrationRateLimited || second.Detail != DetailLocalLimit || second.RetryAfter == nil {
		t.Fatalf("second: got %s/%s, want rate-limited/%s", second.Status, second.Detail, DetailLocalLimit)
	}
	if d := second.RetryAfter.Sub(*first.RetryAfter); d < -5*time.Second || d > 5*time.Second {
		t.Errorf("second retry after: got %s, want about the server's %s", second.RetryAfter, first.RetryAfter)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("server asked %d times, want 1", n)
	}
}

func TestFallback(t *testing.T) {
	srv := registry(t)
	fast := ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 1000}
	tests := []struct {
		name     string
		domain   string
		wantCall bool
		source   string
		status   string
	}{
		{"tld without rdap", "nothing.invalid", true, SourceWHOIS, events.RegistrationOK},
		{"rdap error", "down.test", true, SourceWHOIS, events.RegistrationOK},
		{"rdap timeout", "trickle.test", true, SourceWHOIS, events.RegistrationOK},
		{"rdap not found is an answer", "missing.test", false, SourceRDAP, events.RegistrationNotFound},
		{"rdap rate-limited is an answer", "slowdown.test", false, SourceRDAP, events.RegistrationRateLimited},
		{"rdap ok", "ok.test", false, SourceRDAP, events.RegistrationOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fallback{}
			l := newLookuper(t, Config{Bootstrap: bootstrapFor(srv), Timeout: 300 * time.Millisecond, ServerRate: fast,
				WhoisServers: map[string]string{"org": "127.0.0.1:4343"},
				NewFallback: func(d FallbackDeps) (Fallback, error) {
					fb.deps = d
					return fb, nil
				}})
			got := l.Lookup(context.Background(), tc.domain)
			if got.Source != tc.source || got.Status != tc.status {
				t.Errorf("got %s %s/%s, want %s %s", got.Source, got.Status, got.Detail, tc.source, tc.status)
			}
			if called := fb.calls.Load() > 0; called != tc.wantCall {
				t.Errorf("fallback called: got %v, want %v", called, tc.wantCall)
			}
			if fb.deps.Dial == nil || fb.deps.DialTrusted == nil || fb.deps.Wait == nil || fb.deps.Defer == nil ||
				fb.deps.Servers["org"] != "127.0.0.1:4343" || fb.deps.Timeout != 300*time.Millisecond || fb.deps.MaxBytes != 1<<20 {
				t.Errorf("fallback deps: got %+v, want dialers, limiter, servers, timeout and size cap", fb.deps)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := Config{
		WhoisServers: map[string]string{".COM": "whois.example:43", "org": "whois.example"},
		Timeout:      -time.Second,
		MaxBytes:     -1,
		ServerRates:  map[string]ratelimit.Limit{"rdap.example": {}},
	}
	cfg.setDefaults()
	err := cfg.Validate()
	if err == nil {
		t.Fatal("got no error, want every problem named")
	}
	for _, want := range []string{`".COM"`, `"whois.example" is not host:port`, "timeout", "max bytes", "rdap.example"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to name %s", err, want)
		}
	}
	if _, err := New(Config{Bootstrap: []byte(`{"version": "0"}`)}, testenv.Redis(t).Client(t), testenv.Logger(t)); err == nil || !strings.Contains(err.Error(), "rdap bootstrap") {
		t.Errorf("bad bootstrap: got %v, want the bootstrap's error", err)
	}
}

func TestLookupMetrics(t *testing.T) {
	srv := registry(t)
	l := newLookuper(t, Config{Bootstrap: bootstrapFor(srv), ServerRate: ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 1000}})
	tests := []struct{ domain, source, status string }{
		{"missing.test", SourceRDAP, events.RegistrationNotFound},
		{"ok.test", SourceRDAP, events.RegistrationOK},
		{"nothing.invalid", "none", events.RegistrationError},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			counter := lookupsTotal.WithLabelValues(tc.source, tc.status)
			before := counterValue(t, counter)
			l.Lookup(context.Background(), tc.domain)
			if got := counterValue(t, counter) - before; got != 1 {
				t.Errorf("lookups_total{source=%q,status=%q}: got +%v, want +1", tc.source, tc.status, got)
			}
		})
	}
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
