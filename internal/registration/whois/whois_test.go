package whois

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
)

// fakeServer is a WHOIS server on loopback: it reads one query line and
// lets its handler answer on the connection.
type fakeServer struct {
	addr    string
	mu      sync.Mutex
	queries []string
}

func (s *fakeServer) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

// serve starts a fakeServer; the test's cleanup stops it and waits for
// its goroutines.
func serve(t *testing.T, answer func(conn net.Conn, query string, stop <-chan struct{})) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{addr: ln.Addr().String()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil || !strings.HasSuffix(line, "\r\n") {
					return // RFC 3912: the query ends in CRLF
				}
				query := strings.TrimSuffix(line, "\r\n")
				s.mu.Lock()
				s.queries = append(s.queries, query)
				s.mu.Unlock()
				answer(conn, query, stop)
			})
		}
	})
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		wg.Wait()
	})
	return s
}

func text(b []byte) func(net.Conn, string, <-chan struct{}) {
	return func(c net.Conn, _ string, _ <-chan struct{}) { _, _ = c.Write(b) }
}

// trickle sends a byte every 10ms until the client hangs up.
func trickle(c net.Conn, _ string, stop <-chan struct{}) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}
}

// network maps the names a lookup dials to the fake servers, as the
// guarded dialer would resolve them; a name in refuse gets the guard's
// refusal.
type network struct {
	hosts  map[string]*fakeServer
	refuse map[string]bool
}

func (n network) dial(ctx context.Context, _, address string) (net.Conn, error) {
	if n.refuse[address] {
		return nil, &guard.BlockedError{IP: netip.MustParseAddr("127.0.0.1"), Reason: guard.ReasonLoopback}
	}
	s, ok := n.hosts[address]
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no such host in the test network")}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.addr)
}

// recorder records the calls to Wait and Defer.
type recorder struct {
	mu     sync.Mutex
	waits  []string
	defers []string
	until  []time.Time
}

func (r *recorder) wait(_ context.Context, server string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, server)
	return nil
}

func (r *recorder) deferServer(_ context.Context, server string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.defers = append(r.defers, server)
	r.until = append(r.until, until)
}

const (
	verisign = "whois.verisign-grs.com:43"
	tucows   = "whois.tucows.com:43"
)

func TestLookup(t *testing.T) {
	cases := []struct {
		name    string
		domain  string
		tld     string
		answer  func(net.Conn, string, <-chan struct{}) // the registry's
		tucows  func(net.Conn, string, <-chan struct{}) // the registrar's, for the .com referral
		refuse  bool                                    // the guard refuses the referral
		cfg     func(*Config)
		want    events.RegistrationV1
		waits   []string
		defers  []string
		queries []string // the registrar's server saw
	}{
		{
			name: "com thin registry and registrar referral", domain: "rockcreekcc.com", tld: "com",
			answer: text(readSample(t, "com_registry_rockcreekcc.com.txt")),
			tucows: text(readSample(t, "com_registrar_rockcreekcc.com.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: tucows,
				Registrar: "Tucows Domains Inc.", // the registry's wins over "TUCOWS, INC."
				CreatedAt: at("2002-07-12T15:48:26Z"), UpdatedAt: at("2021-05-03T20:23:19Z"), ExpiresAt: at("2022-07-12T15:48:26Z"),
				Statuses:    []string{"client transfer prohibited", "client update prohibited"},
				NameServers: []string{"ns1.sterlink.net", "ns2.sterlink.net"},
			},
			waits:   []string{verisign, tucows},
			queries: []string{"rockcreekcc.com"},
		},
		{
			name: "referral refused by the guard keeps the registry's answer", domain: "rockcreekcc.com", tld: "com",
			answer: text(readSample(t, "com_registry_rockcreekcc.com.txt")),
			tucows: text(readSample(t, "com_registrar_rockcreekcc.com.txt")),
			refuse: true,
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: verisign,
				Registrar: "Tucows Domains Inc.",
				CreatedAt: at("2002-07-12T15:48:26Z"), UpdatedAt: at("2021-05-03T20:23:19Z"), ExpiresAt: at("2022-07-12T15:48:26Z"),
				Statuses:    []string{"client transfer prohibited", "client update prohibited"},
				NameServers: []string{"ns1.sterlink.net", "ns2.sterlink.net"},
			},
			waits: []string{verisign, tucows},
		},
		{
			name: "referral rate-limited keeps the registry's answer and defers the registrar", domain: "rockcreekcc.com", tld: "com",
			answer: text(readSample(t, "com_registry_rockcreekcc.com.txt")),
			tucows: text(readSample(t, "ratelimit_query_rate.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: verisign,
				Registrar: "Tucows Domains Inc.",
				CreatedAt: at("2002-07-12T15:48:26Z"), UpdatedAt: at("2021-05-03T20:23:19Z"), ExpiresAt: at("2022-07-12T15:48:26Z"),
				Statuses:    []string{"client transfer prohibited", "client update prohibited"},
				NameServers: []string{"ns1.sterlink.net", "ns2.sterlink.net"},
			},
			waits:   []string{verisign, tucows},
			defers:  []string{tucows},
			queries: []string{"rockcreekcc.com"},
		},
		{
			name: "org", domain: "apache.org", tld: "org",
			answer: text(readSample(t, "org_registrar_apache.org.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: "whois.org.test:43", // the referral to namecheap is unknown to the test network
				Registrar: "NAMECHEAP INC",
				CreatedAt: at("1995-04-11T04:00:00Z"), UpdatedAt: at("2018-09-25T13:18:21Z"), ExpiresAt: at("2022-04-12T04:00:00Z"),
				Statuses:    []string{"client delete prohibited", "client transfer prohibited"},
				NameServers: []string{"ns2.surfnet.nl", "ns3.no-ip.com", "ns2.no-ip.com", "ns1.no-ip.com", "ns4.no-ip.com"},
			},
			waits: []string{"whois.org.test:43", "whois.namecheap.com:43"},
		},
		{
			name: "uk", domain: "google.uk", tld: "uk",
			answer: text(readSample(t, "uk_google.uk.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: "whois.uk.test:43",
				Registrar: "Markmonitor Inc. t/a MarkMonitor Inc.",
				CreatedAt: at("2014-06-11T00:00:00Z"), UpdatedAt: at("2019-05-10T00:00:00Z"), ExpiresAt: at("2020-06-11T00:00:00Z"),
				Statuses:    []string{"registered until expiry date"},
				NameServers: []string{"ns1.googledomains.com", "ns2.googledomains.com", "ns3.googledomains.com", "ns4.googledomains.com"},
			},
			waits: []string{"whois.uk.test:43"},
		},
		{
			name: "de publishes no expiry", domain: "google.de", tld: "de",
			answer: text(readSample(t, "de_google.de.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationNoExpiry, Server: "whois.de.test:43",
				UpdatedAt: at("2018-03-12T20:44:25Z"), Statuses: []string{"connect"}, NameServers: googleNS,
			},
			waits: []string{"whois.de.test:43"},
		},
		{
			name: "jp in japanese", domain: "example.jp", tld: "jp",
			answer: text(readSample(t, "jp_example.jp.iso2022jp.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: "whois.jp.test:43",
				CreatedAt: at("2001-01-31T00:00:00Z"), UpdatedAt: at("2026-01-31T16:05:09Z"), ExpiresAt: at("2027-01-31T00:00:00Z"),
				Statuses: []string{"active"}, NameServers: []string{"ns1.example.jp", "ns2.example.net"},
			},
			waits: []string{"whois.jp.test:43"},
		},
		{
			name: "io", domain: "golang.io", tld: "io",
			answer: text(readSample(t, "io_registrar_golang.io.txt")),
			want: events.RegistrationV1{
				Status: events.RegistrationOK, Server: "whois.io.test:43",
				Registrar: "GANDI SAS",
				CreatedAt: at("2013-01-24T18:29:21Z"), UpdatedAt: at("2019-01-17T08:47:20Z"), ExpiresAt: at("2020-01-24T18:29:21Z"),
				Statuses: []string{"client transfer prohibited"}, NameServers: []string{"dns103.ovh.net", "ns103.ovh.net"},
			},
			waits: []string{"whois.io.test:43", "whois.gandi.net:43"},
		},
		{
			name: "no match", domain: "likexian-have-no-money-to-register.com", tld: "com",
			answer: text(readSample(t, "notfound_com.txt")),
			want:   events.RegistrationV1{Status: events.RegistrationNotFound, Server: verisign},
			waits:  []string{verisign},
		},
		{
			name: "rate-limit text", domain: "example.org", tld: "org",
			answer: text(readSample(t, "ratelimit_pir.txt")),
			want:   events.RegistrationV1{Status: events.RegistrationRateLimited, Server: "whois.org.test:43"},
			waits:  []string{"whois.org.test:43"},
			defers: []string{"whois.org.test:43"},
		},
		{
			name: "unparseable text", domain: "example.org", tld: "org",
			answer: text(readSample(t, "malformed.txt")),
			want:   events.RegistrationV1{Status: events.RegistrationError, Detail: DetailMalformed, Server: "whois.org.test:43"},
			waits:  []string{"whois.org.test:43"},
		},
		{
			name: "trickling server hits the deadline", domain: "example.org", tld: "org",
			answer: trickle,
			cfg:    func(c *Config) { c.Timeout = 300 * time.Millisecond },
			want:   events.RegistrationV1{Status: events.RegistrationError, Detail: DetailTimeout, Server: "whois.org.test:43"},
			waits:  []string{"whois.org.test:43"},
		},
		{
			name: "oversize answer", domain: "example.org", tld: "org",
			answer: text([]byte(strings.Repeat("Registrar: X\n", 1000))),
			cfg:    func(c *Config) { c.MaxBytes = 4096 },
			want:   events.RegistrationV1{Status: events.RegistrationError, Detail: DetailTooLarge, Server: "whois.org.test:43"},
			waits:  []string{"whois.org.test:43"},
		},
		{
			name: "answer of exactly MaxBytes is read", domain: "example.org", tld: "org",
			answer: text([]byte("Registrar: X\n")),
			cfg:    func(c *Config) { c.MaxBytes = int64(len("Registrar: X\n")) },
			want:   events.RegistrationV1{Status: events.RegistrationNoExpiry, Server: "whois.org.test:43", Registrar: "X"},
			waits:  []string{"whois.org.test:43"},
		},
		{
			name: "limiter failure", domain: "example.org", tld: "org",
			answer: text(readSample(t, "org_registrar_apache.org.txt")),
			cfg: func(c *Config) {
				c.Wait = func(context.Context, string) error { return errors.New("redis down") }
			},
			want: events.RegistrationV1{Status: events.RegistrationError, Detail: DetailLimiter, Server: "whois.org.test:43"},
		},
		{
			name: "invalid domain", domain: "no-dot", tld: "org",
			answer: text(nil),
			want:   events.RegistrationV1{Domain: "no-dot", Status: events.RegistrationError, Detail: DetailInvalidDomain},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			registryAddr := verisign
			if tc.tld != "com" {
				registryAddr = "whois." + tc.tld + ".test:43"
			}
			nw := network{hosts: map[string]*fakeServer{registryAddr: serve(t, tc.answer)}}
			var registrar *fakeServer
			if tc.tucows != nil {
				registrar = serve(t, tc.tucows)
				nw.hosts[tucows] = registrar
			}
			if tc.refuse {
				nw.refuse = map[string]bool{tucows: true}
			}
			rec := &recorder{}
			cfg := Config{
				Servers:     map[string]string{tc.tld: registryAddr},
				DialTrusted: nw.dial,
				Dial:        nw.dial,
				Timeout:     5 * time.Second,
				Wait:        rec.wait,
				Defer:       rec.deferServer,
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := c.Lookup(context.Background(), strings.ToUpper(tc.domain)+".")
			want := tc.want
			if want.Domain == "" {
				want.Domain = tc.domain
			}
			want.Source = "whois"
			checkResult(t, got, want)
			if !slices.Equal(rec.waits, tc.waits) {
				t.Errorf("got Wait for %q, want %q", rec.waits, tc.waits)
			}
			if !slices.Equal(rec.defers, tc.defers) {
				t.Errorf("got Defer for %q, want %q", rec.defers, tc.defers)
			}
			if registrar != nil && !slices.Equal(registrar.got(), tc.queries) {
				t.Errorf("registrar got queries %q, want %q", registrar.got(), tc.queries)
			}
			if want.Status == events.RegistrationRateLimited {
				wantRetry := got.LookedUpAt.Add(DefaultRateLimitBackoff)
				if got.RetryAfter == nil || !got.RetryAfter.Equal(wantRetry) {
					t.Errorf("got RetryAfter %s, want %s", fmtTime(got.RetryAfter), wantRetry.Format(time.RFC3339))
				}
				if len(rec.until) != 1 || !rec.until[0].Equal(wantRetry) {
					t.Errorf("got Defer until %v, want %s", rec.until, wantRetry.Format(time.RFC3339))
				}
			} else if got.RetryAfter != nil {
				t.Errorf("got RetryAfter %s, want nil", fmtTime(got.RetryAfter))
			}
			if got.LookedUpAt.IsZero() {
				t.Error("got zero LookedUpAt")
			}
		})
	}
}

func checkResult(t *testing.T, got, want events.RegistrationV1) {
	t.Helper()
	for _, f := range []struct{ name, got, want string }{
		{"domain", got.Domain, want.Domain},
		{"status", got.Status, want.Status},
		{"detail", got.Detail, want.Detail},
		{"source", got.Source, want.Source},
		{"server", got.Server, want.Server},
	} {
		if f.got != f.want {
			t.Errorf("got %s %q, want %q", f.name, f.got, f.want)
		}
	}
	checkRecord(t,
		Record{Registrar: got.Registrar, CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt, ExpiresAt: got.ExpiresAt, Statuses: got.Statuses, NameServers: got.NameServers},
		Record{Registrar: want.Registrar, CreatedAt: want.CreatedAt, UpdatedAt: want.UpdatedAt, ExpiresAt: want.ExpiresAt, Statuses: want.Statuses, NameServers: want.NameServers})
}

// TestLookupIANA: without an override the TLD's server is the one IANA
// names, asked once per TLD and cached; a TLD IANA names no server for is
// "no-server".
func TestLookupIANA(t *testing.T) {
	iana := serve(t, func(c net.Conn, query string, _ <-chan struct{}) {
		sample := "iana_none.txt"
		if query == "com" {
			sample = "iana_com.txt"
		}
		_, _ = c.Write(readSample(t, sample))
	})
	registry := serve(t, text(readSample(t, "com_registry_rockcreekcc.com.txt")))
	nw := network{hosts: map[string]*fakeServer{DefaultIANA: iana, verisign: registry}}
	rec := &recorder{}
	c, err := New(Config{DialTrusted: nw.dial, Dial: nw.dial, Wait: rec.wait})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cases := []struct {
		domain, wantStatus, wantDetail, wantServer string
	}{
		{"rockcreekcc.com", events.RegistrationOK, "", verisign},
		{"other.com", events.RegistrationOK, "", verisign}, // IANA's answer cached
		{"example.exampletld", events.RegistrationError, DetailNoServer, ""},
		{"again.exampletld", events.RegistrationError, DetailNoServer, ""}, // cached too
	}
	for _, tc := range cases {
		got := c.Lookup(ctx, tc.domain)
		if got.Status != tc.wantStatus || got.Detail != tc.wantDetail || got.Server != tc.wantServer {
			t.Errorf("%s: got %s/%q from %q, want %s/%q from %q", tc.domain, got.Status, got.Detail, got.Server, tc.wantStatus, tc.wantDetail, tc.wantServer)
		}
	}
	if got, want := iana.got(), []string{"com", "exampletld"}; !slices.Equal(got, want) {
		t.Errorf("got IANA queries %q, want %q", got, want)
	}
	// The referral to whois.tucows.com is outside the test network: each
	// lookup waits for it and keeps the registry's answer.
	wantWaits := []string{DefaultIANA, verisign, "whois.tucows.com:43", verisign, "whois.tucows.com:43", DefaultIANA}
	if !slices.Equal(rec.waits, wantWaits) {
		t.Errorf("got Wait for %q, want %q", rec.waits, wantWaits)
	}
}

func TestLookupUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var d net.Dialer
	c, err := New(Config{Servers: map[string]string{"org": addr}, DialTrusted: d.DialContext, Dial: d.DialContext})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Lookup(context.Background(), "example.org")
	if got.Status != events.RegistrationError || got.Detail != DetailUnreachable {
		t.Errorf("got %s/%q, want %s/%q", got.Status, got.Detail, events.RegistrationError, DetailUnreachable)
	}
}

func TestLookupCanceled(t *testing.T) {
	s := serve(t, trickle)
	nw := network{hosts: map[string]*fakeServer{"whois.org.test:43": s}}
	c, err := New(Config{Servers: map[string]string{"org": "whois.org.test:43"}, DialTrusted: nw.dial, Dial: nw.dial, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	got := c.Lookup(ctx, "example.org")
	if got.Status != events.RegistrationError || got.Detail != DetailCanceled {
		t.Errorf("got %s/%q, want %s/%q", got.Status, got.Detail, events.RegistrationError, DetailCanceled)
	}
}

func TestNewValidate(t *testing.T) {
	var d net.Dialer
	cases := []struct {
		name    string
		cfg     Config
		wantErr []string // every one in the joined error
	}{
		{name: "defaults", cfg: Config{DialTrusted: d.DialContext, Dial: d.DialContext}},
		{
			name:    "every problem at once",
			cfg:     Config{Timeout: -1, MaxBytes: -1, IANA: "no-port", Servers: map[string]string{"co.uk": "x:43", "org": "whois.example:0"}},
			wantErr: []string{"DialTrusted is required", "Dial is required", "Timeout", "MaxBytes", "IANA", `TLD "co.uk"`, `port "0"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to name %q", err, w)
				}
			}
		})
	}
}
