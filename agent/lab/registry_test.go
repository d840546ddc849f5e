package lab

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/registration"
	"github.com/certfleet/certfleet/internal/testenv"
)

// regNames are the lab's registration cases with a TLS endpoint, in order.
var regNames = []string{"expiring", "expired", "rdap-only", "whois-only", "no-expiry", "rate-limited"}

// day is a calendar day as the registrations' dates count them.
const day = 24 * time.Hour

// TestRegistrationCases checks what the lab promises of each case, dated
// from the lab's start, and that every case has its own registrable domain
// with a TLS endpoint and DNS name in the lab.
func TestRegistrationCases(t *testing.T) {
	now := time.Date(2026, 12, 5, 16, 0, 0, 0, time.UTC)
	l := startLab(t, Config{Now: func() time.Time { return now }})
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	rdap := func(d string) string { return l.RDAPURL() + "domain/" + d }
	type want struct {
		domain, status, source, server string
		expires                        *time.Time
		registrar                      bool
		rateLimited                    bool
	}
	wants := map[string]want{
		"registered":   {"certfleet.test", events.RegistrationOK, "rdap", rdap("certfleet.test"), at(365 * day), true, false},
		"expiring":     {"certfleet-expiring.test", events.RegistrationOK, "rdap", rdap("certfleet-expiring.test"), at(20 * day), true, false},
		"expired":      {"certfleet-expired.test", events.RegistrationOK, "rdap", rdap("certfleet-expired.test"), at(-10 * day), true, false},
		"rdap-only":    {"certfleet-rdap-only.test", events.RegistrationOK, "rdap", rdap("certfleet-rdap-only.test"), at(200 * day), true, false},
		"whois-only":   {"certfleet-whois-only.example", events.RegistrationOK, "whois", l.WHOISAddr(), at(300 * day), true, false},
		"no-expiry":    {"certfleet-no-expiry.test", events.RegistrationNoExpiry, "rdap", rdap("certfleet-no-expiry.test"), nil, false, false},
		"rate-limited": {"certfleet-rate-limited.test", events.RegistrationOK, "rdap", rdap("certfleet-rate-limited.test"), at(265 * day), true, true},
	}
	regs := l.Registrations()
	var names []string
	targets := map[string]Target{}
	for _, tg := range l.Targets() {
		targets[tg.Host] = tg
	}
	for _, r := range regs {
		names = append(names, r.Name)
		t.Run(r.Name, func(t *testing.T) {
			w := wants[r.Name]
			got := want{r.Want.Domain, r.Want.Status, r.Want.Source, r.Want.Server, r.Want.ExpiresAt, r.Want.Registrar != "", r.RateLimited}
			if got.domain != w.domain || got.status != w.status || got.source != w.source || got.server != w.server ||
				got.registrar != w.registrar || got.rateLimited != w.rateLimited || !sameTime(got.expires, w.expires) {
				t.Errorf("got %+v (expires %v), want %+v (expires %v)", got, fmtTime(got.expires), w, fmtTime(w.expires))
			}
			if r.Domain != w.domain {
				t.Errorf("domain: got %q, want %q", r.Domain, w.domain)
			}
			if d, err := registration.Registrable(r.Host); err != nil || d != r.Domain {
				t.Errorf("registrable domain of host %q: got %q, %v, want %q", r.Host, d, err, r.Domain)
			}
			tg, ok := targets[r.Host]
			if !ok {
				t.Fatalf("no lab target for host %q", r.Host)
			}
			if ips, _ := resolve(t, l.ResolverAddr(), r.Host); len(ips) == 0 {
				t.Errorf("%s: resolves to nothing", r.Host)
			}
			if r.Name != "registered" && tg.Name != "reg-"+r.Name {
				t.Errorf("target of %s: got %q, want %q", r.Host, tg.Name, "reg-"+r.Name)
			}
		})
	}
	if want := append([]string{"registered"}, regNames...); !slices.Equal(names, want) {
		t.Errorf("registrations: got %v, want %v", names, want)
	}
}

func sameTime(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.Format(time.RFC3339)
}

// rdapDomainAnswer is the part of an RFC 9083 domain answer a lookup reads.
type rdapDomainAnswer struct {
	ObjectClassName string   `json:"objectClassName"`
	LDHName         string   `json:"ldhName"`
	Status          []string `json:"status"`
	Events          []struct {
		Action string    `json:"eventAction"`
		Date   time.Time `json:"eventDate"`
	} `json:"events"`
	Entities []struct {
		Roles      []string          `json:"roles"`
		VCardArray []json.RawMessage `json:"vcardArray"`
	} `json:"entities"`
	Nameservers []struct {
		LDHName string `json:"ldhName"`
	} `json:"nameservers"`
	ErrorCode int `json:"errorCode"`
}

// registration reads the answer the way a lookup must: expiry from the
// "expiration" event, registrar from the registrar entity's vCard fn.
func (a rdapDomainAnswer) registration(t *testing.T) events.RegistrationV1 {
	t.Helper()
	r := events.RegistrationV1{Domain: strings.ToLower(a.LDHName), Statuses: a.Status}
	for _, e := range a.Events {
		d := e.Date
		switch e.Action {
		case "registration":
			r.CreatedAt = &d
		case "expiration":
			r.ExpiresAt = &d
		case "last changed":
			r.UpdatedAt = &d
		}
	}
	for _, e := range a.Entities {
		if !slices.Contains(e.Roles, "registrar") || len(e.VCardArray) != 2 {
			continue
		}
		var props [][]any
		if err := json.Unmarshal(e.VCardArray[1], &props); err != nil {
			t.Fatalf("vcard: %v", err)
		}
		for _, p := range props {
			if len(p) == 4 && p[0] == "fn" {
				r.Registrar, _ = p[3].(string)
			}
		}
	}
	for _, ns := range a.Nameservers {
		r.NameServers = append(r.NameServers, strings.ToLower(ns.LDHName))
	}
	return r
}

// getRDAP fetches url and decodes the answer, which must be RDAP JSON
// whatever the status.
func getRDAP(t *testing.T, url string) (int, http.Header, rdapDomainAnswer) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/rdap+json" {
		t.Errorf("%s: content type got %q, want application/rdap+json", url, ct)
	}
	var a rdapDomainAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("%s: decode: %v", url, err)
	}
	return resp.StatusCode, resp.Header, a
}

// checkFound compares what a server published with the registration's Want.
func checkFound(t *testing.T, got events.RegistrationV1, r Registration) {
	t.Helper()
	w := r.Want
	if got.Domain != r.Domain || got.Registrar != w.Registrar || !sameTime(got.CreatedAt, w.CreatedAt) ||
		!sameTime(got.ExpiresAt, w.ExpiresAt) || !sameTime(got.UpdatedAt, w.UpdatedAt) ||
		!slices.Equal(got.Statuses, w.Statuses) || !slices.Equal(got.NameServers, w.NameServers) {
		t.Errorf("published:\n got  %s %q created %s expires %s updated %s %v %v\n want %s %q created %s expires %s updated %s %v %v",
			got.Domain, got.Registrar, fmtTime(got.CreatedAt), fmtTime(got.ExpiresAt), fmtTime(got.UpdatedAt), got.Statuses, got.NameServers,
			r.Domain, w.Registrar, fmtTime(w.CreatedAt), fmtTime(w.ExpiresAt), fmtTime(w.UpdatedAt), w.Statuses, w.NameServers)
	}
}

// TestRDAP asks the lab's RDAP server for every registration over HTTP:
// the ones it knows come back as their Want says, the others are 404.
func TestRDAP(t *testing.T) {
	l := startLab(t, Config{})
	for _, r := range l.Registrations() {
		t.Run(r.Name, func(t *testing.T) {
			// Registries take any case and a final dot.
			url := l.RDAPURL() + "domain/" + strings.ToUpper(r.Domain) + "."
			code, hdr, a := getRDAP(t, url)
			if r.RateLimited {
				if code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || a.ErrorCode != 429 {
					t.Errorf("first request: got %d, Retry-After %q, errorCode %d, want 429 with a Retry-After", code, hdr.Get("Retry-After"), a.ErrorCode)
				}
				return // TestRateLimited follows it through
			}
			if !r.RDAP {
				if code != http.StatusNotFound || a.ErrorCode != 404 {
					t.Errorf("got %d, errorCode %d, want 404 and errorCode 404", code, a.ErrorCode)
				}
				return
			}
			if code != http.StatusOK || a.ObjectClassName != "domain" {
				t.Fatalf("got %d, objectClassName %q, want 200 and a domain", code, a.ObjectClassName)
			}
			checkFound(t, a.registration(t), r)
		})
	}
	tests := []struct {
		name, path string
		code       int
	}{
		{"unknown domain", "domain/certfleet-unknown.test", http.StatusNotFound},
		{"not a domain", "domain/bad_name!.test", http.StatusBadRequest},
		{"empty label", "domain/a..test", http.StatusBadRequest},
		{"two final dots", "domain/certfleet-expiring.test..", http.StatusBadRequest},
		{"other object class", "nameserver/ns1.certfleet.test", http.StatusNotFound},
		{"root", "", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, a := getRDAP(t, l.RDAPURL()+tc.path)
			if code != tc.code || a.ErrorCode != tc.code {
				t.Errorf("got %d, errorCode %d, want %d for both", code, a.ErrorCode, tc.code)
			}
		})
	}
}

// TestRateLimited follows the rate-limited registration the way a polite
// client does: 429, again 429 when it does not wait, the answer after
// Retry-After, then 429 again for the next lookup.
func TestRateLimited(t *testing.T) {
	l := startLab(t, Config{})
	var r Registration
	for _, x := range l.Registrations() {
		if x.RateLimited {
			r = x
		}
	}
	url := l.RDAPURL() + "domain/" + r.Domain
	code, hdr, _ := getRDAP(t, url)
	wait, err := strconv.Atoi(hdr.Get("Retry-After"))
	if code != http.StatusTooManyRequests || err != nil || wait < 1 {
		t.Fatalf("first request: got %d, Retry-After %q, want 429 and whole seconds", code, hdr.Get("Retry-After"))
	}
	if code, hdr, _ := getRDAP(t, url); code != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Errorf("retry without waiting: got %d, Retry-After %q, want 429 again", code, hdr.Get("Retry-After"))
	}
	time.Sleep(time.Duration(wait) * time.Second)
	code, _, a := getRDAP(t, url)
	if code != http.StatusOK {
		t.Fatalf("retry after %ds: got %d, want 200", wait, code)
	}
	checkFound(t, a.registration(t), r)
	if code, _, _ := getRDAP(t, url); code != http.StatusTooManyRequests {
		t.Errorf("next lookup: got %d, want 429 first again", code)
	}
}

// TestAdmit walks the rate limit's clock without waiting.
func TestAdmit(t *testing.T) {
	g := &registry{retryAt: map[string]time.Time{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		at     time.Duration
		wait   time.Duration
		answer bool
	}{
		{"first", 0, RetryAfter, false},
		{"too soon", RetryAfter / 2, RetryAfter / 2, false},
		{"after waiting", RetryAfter, 0, true},
		{"next lookup", RetryAfter + time.Hour, RetryAfter, false},
		{"its retry, late", RetryAfter + 2*time.Hour, 0, true},
	}
	for _, tc := range tests {
		wait, ok := g.admit("x.test", t0.Add(tc.at))
		if wait != tc.wait || ok != tc.answer {
			t.Errorf("%s: got wait %s, answered %v, want %s, %v", tc.name, wait, ok, tc.wait, tc.answer)
		}
	}
	if _, ok := g.admit("other.test", t0); ok {
		t.Errorf("another domain: got answered at once, want its own 429 first")
	}
}

// askWHOIS sends one query over TCP and reads the answer to the end.
func askWHOIS(t *testing.T, addr, query string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial whois %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, query); err != nil {
		t.Fatalf("send whois query: %v", err)
	}
	if !strings.Contains(query, "\n") {
		// The query ends where the client stops sending.
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read whois answer: %v", err)
	}
	return string(b)
}

// parseVerisign reads the "   Key: Value" lines of a Verisign-format
// answer into a registration.
func parseVerisign(t *testing.T, answer string) events.RegistrationV1 {
	t.Helper()
	var r events.RegistrationV1
	date := func(v string) *time.Time {
		d, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("whois date %q: %v", v, err)
		}
		return &d
	}
	for _, line := range strings.Split(answer, "\r\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch k {
		case "Domain Name":
			r.Domain = strings.ToLower(v)
		case "Registrar":
			r.Registrar = v
		case "Creation Date":
			r.CreatedAt = date(v)
		case "Registry Expiry Date":
			r.ExpiresAt = date(v)
		case "Updated Date":
			r.UpdatedAt = date(v)
		case "Name Server":
			r.NameServers = append(r.NameServers, strings.ToLower(v))
		case "Domain Status":
			code, _, _ := strings.Cut(v, " ")
			r.Statuses = append(r.Statuses, map[string]string{
				"clientTransferProhibited": "client transfer prohibited", "clientDeleteProhibited": "client delete prohibited",
				"clientHold": "client hold", "ok": "active"}[code])
		}
	}
	return r
}

// TestWHOIS asks the lab's WHOIS server for every registration over TCP:
// the ones it knows come back in Verisign's format as their Want says, the
// others are "No match for".
func TestWHOIS(t *testing.T) {
	l := startLab(t, Config{})
	for _, r := range l.Registrations() {
		t.Run(r.Name, func(t *testing.T) {
			answer := askWHOIS(t, l.WHOISAddr(), r.Domain+"\r\n")
			if !strings.HasSuffix(answer, "\r\n") || strings.Contains(strings.ReplaceAll(answer, "\r\n", ""), "\n") {
				t.Errorf("line ends: got %q, want every line ended by CRLF", answer)
			}
			noMatch := `No match for "` + strings.ToUpper(r.Domain) + `".`
			if !r.WHOIS {
				if !strings.HasPrefix(answer, noMatch) {
					t.Errorf("got %q, want it to start with %q", answer, noMatch)
				}
				return
			}
			if !strings.HasPrefix(answer, "   Domain Name: "+strings.ToUpper(r.Domain)+"\r\n") {
				t.Errorf("got %q, want it to start with the domain name line", answer)
			}
			checkFound(t, parseVerisign(t, answer), r)
		})
	}
	tests := []struct{ name, query, want string }{
		{"domain keyword", "domain CERTFLEET-WHOIS-ONLY.EXAMPLE\r\n", "   Domain Name: CERTFLEET-WHOIS-ONLY.EXAMPLE\r\n"},
		{"equals sign, bare LF", "=certfleet-whois-only.example.\n", "   Domain Name: CERTFLEET-WHOIS-ONLY.EXAMPLE\r\n"},
		{"unknown", "certfleet-unknown.example\r\n", `No match for "CERTFLEET-UNKNOWN.EXAMPLE".` + "\r\n"},
		{"garbage", "\x00\xff junk\r\n", `No match for`},
		{"no line end", "certfleet-whois-only.example", "   Domain Name: CERTFLEET-WHOIS-ONLY.EXAMPLE\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := askWHOIS(t, l.WHOISAddr(), tc.query); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

// TestWHOISQuietClient: a client that sends half a query and waits is
// hung up on when the lab closes, not left holding a goroutine.
func TestWHOISQuietClient(t *testing.T) {
	l, err := Start(context.Background(), Config{}, testenv.Logger(t))
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	conn, err := net.DialTimeout("tcp", l.WHOISAddr(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "certfleet"); err != nil {
		t.Fatalf("write: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(whoisTimeout / 2):
		t.Fatalf("close: still waiting after %s for a quiet whois client", whoisTimeout/2)
	}
}

// TestBootstrap reads the bootstrap file as an RDAP client does (RFC 9224):
// IANA's shape, the lab's RDAP TLDs on the lab's server, the WHOIS-only TLD
// absent; and the server it names answers for a registration.
func TestBootstrap(t *testing.T) {
	l := startLab(t, Config{})
	dir := t.TempDir()
	if err := l.WriteEnv(filepath.Join(dir, "lab.env"), filepath.Join(dir, "roots.pem")); err != nil {
		t.Fatalf("write env: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, BootstrapFile))
	if err != nil {
		t.Fatalf("read bootstrap: %v", err)
	}
	var f struct {
		Version     string       `json:"version"`
		Publication time.Time    `json:"publication"`
		Description string       `json:"description"`
		Services    [][][]string `json:"services"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("bootstrap %s: %v", b, err)
	}
	if f.Version != "1.0" || f.Publication.IsZero() || len(f.Services) != 1 || len(f.Services[0]) != 2 {
		t.Fatalf("bootstrap: got version %q, publication %s, services %v; want 1.0, a time, one service of [tlds, urls]", f.Version, f.Publication, f.Services)
	}
	tlds, urls := f.Services[0][0], f.Services[0][1]
	if !slices.Equal(tlds, []string{"test"}) || slices.Contains(tlds, WHOISOnlyTLD) {
		t.Errorf("tlds: got %v, want [test] and never %s", tlds, WHOISOnlyTLD)
	}
	if !slices.Equal(urls, []string{l.RDAPURL()}) || !strings.HasSuffix(urls[0], "/") {
		t.Errorf("urls: got %v, want [%s] ending in /", urls, l.RDAPURL())
	}
	// An RDAP base URL plus "domain/NAME" is the query (RFC 9224 section 3).
	if code, _, a := getRDAP(t, urls[0]+"domain/certfleet-expiring.test"); code != http.StatusOK || a.LDHName != "CERTFLEET-EXPIRING.TEST" {
		t.Errorf("server named by the bootstrap: got %d for %q, want 200 for CERTFLEET-EXPIRING.TEST", code, a.LDHName)
	}
	if got, want := l.WHOISServers(), []string{"test=" + l.WHOISAddr(), "example=" + l.WHOISAddr()}; !slices.Equal(got, want) {
		t.Errorf("whois servers: got %v, want %v", got, want)
	}
}

// TestForward checks that names outside the lab go to the upstream server,
// over the network they came by, while the lab's own names never do; and
// that an upstream that does not answer gives SERVFAIL.
func TestForward(t *testing.T) {
	var asked atomic.Int32
	upstream := startUpstream(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		switch strings.ToLower(q.Name) {
		case "example.org.":
			if q.Qtype == dns.TypeA {
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)}}
			}
		case "big.example.org.":
			for i := range 40 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i))})
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	}))
	l := startLab(t, Config{Forward: []string{upstream}})
	tests := []struct {
		name, qname, network string
		rcode                int
		answers              int
		forwarded            bool
		truncated            bool
	}{
		{"outside over udp", "example.org", "udp", dns.RcodeSuccess, 1, true, false},
		{"outside over tcp", "Example.ORG", "tcp", dns.RcodeSuccess, 1, true, false},
		{"outside, missing", "missing.example.org", "udp", dns.RcodeNameError, 0, true, false},
		{"outside, too big for udp", "big.example.org", "udp", dns.RcodeSuccess, -1, true, true},
		{"outside, big over tcp", "big.example.org", "tcp", dns.RcodeSuccess, 40, true, false},
		{"lab name", "valid.lab.certfleet.test", "udp", dns.RcodeSuccess, 1, false, false},
		{"missing lab name", "missing.lab.certfleet.test", "tcp", dns.RcodeNameError, 0, false, false},
		{"registration", "certfleet-whois-only.example", "udp", dns.RcodeSuccess, 1, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := asked.Load()
			r := query(t, tc.network, l.ResolverAddr(), tc.qname, dns.TypeA)
			if r.Rcode != tc.rcode {
				t.Errorf("rcode: got %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.answers >= 0 && len(r.Answer) != tc.answers {
				t.Errorf("answers: got %d (%v), want %d", len(r.Answer), r.Answer, tc.answers)
			}
			if r.Truncated != tc.truncated {
				t.Errorf("truncated: got %v, want %v", r.Truncated, tc.truncated)
			}
			if forwarded := asked.Load() > before; forwarded != tc.forwarded {
				t.Errorf("forwarded: got %v, want %v", forwarded, tc.forwarded)
			}
			if tc.forwarded && r.Authoritative {
				t.Errorf("authoritative: got true for a forwarded answer, want false")
			}
		})
	}
	if a := query(t, "udp", l.ResolverAddr(), "example.org", dns.TypeA).Answer; len(a) != 1 || a[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Errorf("forwarded answer: got %v, want example.org A 192.0.2.7", a)
	}

	// A dead upstream: SERVFAIL, not silence.
	dead := startLab(t, Config{Forward: []string{"127.0.0.1:" + strconv.Itoa(freeUDPPort(t))}})
	if r := query(t, "tcp", dead.ResolverAddr(), "example.org", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("dead upstream: got %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// TestForwardNotToItself: a lab whose upstream is its own address refuses
// other names instead of asking itself forever.
func TestForwardNotToItself(t *testing.T) {
	// A port free for UDP may be taken for TCP: try a few.
	var l *Lab
	for range bindAttempts {
		addr := "127.0.0.1:" + strconv.Itoa(freeUDPPort(t))
		var err error
		if l, err = Start(context.Background(), Config{DNSAddr: addr, Forward: []string{addr}}, testenv.Logger(t)); err == nil {
			t.Cleanup(func() { _ = l.Close() })
			break
		}
	}
	if l == nil {
		t.Fatalf("no port free for the lab's dns server")
	}
	if r := query(t, "udp", l.ResolverAddr(), "example.org", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("got %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

// startUpstream serves h on UDP and TCP of one loopback port: a stand-in
// for the system resolver, so no query leaves the machine.
func startUpstream(t *testing.T, h dns.Handler) string {
	t.Helper()
	for range bindAttempts {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen udp: %v", err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			continue
		}
		for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			served := make(chan error, 1)
			go func() { served <- s.ActivateAndServe() }()
			select {
			case <-started:
			case err := <-served:
				t.Fatalf("serve upstream: %v", err)
			}
			t.Cleanup(func() {
				_ = s.Shutdown()
				<-served
			})
		}
		return addr
	}
	t.Fatalf("no port free for udp and tcp")
	return ""
}

// freeUDPPort is a UDP port nothing listens on, as far as one can tell.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func TestSystemResolvers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("# comment\nsearch lan\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := SystemResolvers(path)
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v, %v, want %v", got, err, want)
	}
	if _, err := SystemResolvers(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want a not-exist error", err)
	}
}

// FuzzWHOISQuery: any query line gets an answer of CRLF-ended lines that
// names a registration only for a query that is its domain.
func FuzzWHOISQuery(f *testing.F) {
	g := &registry{records: map[string]*record{}, published: time.Unix(0, 0)}
	for _, r := range registrations(DefaultZone, time.Unix(0, 0)) {
		g.records[r.reg.Domain] = &r
	}
	f.Fuzz(func(t *testing.T, q string) {
		a := g.whoisAnswer(q)
		if !strings.HasSuffix(a, "\r\n") || strings.Contains(strings.ReplaceAll(a, "\r\n", ""), "\n") {
			t.Fatalf("answer to %q: lines not all ended by CRLF: %q", q, a)
		}
		d, ok := whoisQuery(q)
		if found := strings.HasPrefix(a, "   Domain Name: "); found != (ok && g.records[d] != nil && g.records[d].reg.WHOIS) {
			t.Fatalf("answer to %q (domain %q, %v): got %q", q, d, ok, a)
		}
		if ok {
			if again, ok2 := queryDomain(d); !ok2 || again != d {
				t.Fatalf("queryDomain(%q) = %q, %v; want it unchanged", d, again, ok2)
			}
		}
	})
}
