package agent

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestParseHSTS(t *testing.T) {
	tests := []struct {
		in         string
		maxAge     int64
		includeSub bool
		ok         bool
	}{
		{"max-age=31536000", 31536000, false, true},
		{"max-age=31536000; includeSubDomains", 31536000, true, true},
		{"max-age=31536000; includeSubDomains; preload", 31536000, true, true},
		{"MAX-AGE=600;INCLUDESUBDOMAINS", 600, true, true},
		{`max-age="600"`, 600, false, true},
		{`max-age = 600 ; includeSubDomains`, 600, true, true},
		{"\tmax-age=600\t;", 600, false, true},
		{";;max-age=600;;", 600, false, true},
		{"includeSubDomains; max-age=0", 0, true, true},
		{`max-age=600; foo="bar;baz"; x=y`, 600, false, true},
		{`max-age=600; foo="a\"b"`, 600, false, true},
		{"max-age=99999999999999999999999", math.MaxInt64, false, true},
		{"", 0, false, false},
		{"includeSubDomains", 0, false, false},
		{"max-age", 0, false, false},
		{"max-age=", 0, false, false},
		{"max-age=-1", 0, false, false},
		{"max-age=1.5", 0, false, false},
		{"max-age=10abc", 0, false, false},
		{`max-age="10`, 0, false, false},
		{`max-age=""`, 0, false, false},
		{"max-age=600; max-age=700", 0, false, false},
		{"max-age=600; Max-Age=600", 0, false, false},
		{"max-age=600; includeSubDomains; includesubdomains", 0, false, false},
		{"max-age=600; includeSubDomains=yes", 0, false, false},
		{"max-age=600; foo=1; foo=2", 0, false, false},
		{"max-age=600 includeSubDomains", 0, false, false},
		{"max-age=600, includeSubDomains", 0, false, false},
		{"max-age=600; =x", 0, false, false},
		{"max-age=600; f(o)o", 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			maxAge, sub, ok := parseHSTS(tc.in)
			if maxAge != tc.maxAge || sub != tc.includeSub || ok != tc.ok {
				t.Errorf("got max-age %d, includeSubDomains %v, ok %v; want %d, %v, %v", maxAge, sub, ok, tc.maxAge, tc.includeSub, tc.ok)
			}
		})
	}
}

func TestAuthority(t *testing.T) {
	tests := []struct {
		host string
		port int
		want string
	}{
		{"a.example", 443, "a.example"},
		{"a.example", 8443, "a.example:8443"},
		{"::1", 443, "[::1]"},
		{"::1", 8443, "[::1]:8443"},
		{"127.0.0.1", 443, "127.0.0.1"},
	}
	for _, tc := range tests {
		if got := authority(tc.host, tc.port); got != tc.want {
			t.Errorf("authority(%q, %d): got %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
}

// seenRequest is what an HTTPS test server saw of a request.
type seenRequest struct {
	method, host, userAgent string
	protoMajor              int
}

// listenHTTPS serves handler over TLS with cert on 127.0.0.1, HTTP/2 and
// HTTP/1.1 unless h1Only, and records every request it answers.
func listenHTTPS(t *testing.T, cert tls.Certificate, h1Only bool, handler http.HandlerFunc) (port int, seen func() []seenRequest) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reqs []seenRequest
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			reqs = append(reqs, seenRequest{r.Method, r.Host, r.UserAgent(), r.ProtoMajor})
			mu.Unlock()
			handler(w, r)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	if h1Only {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(l, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).Port, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(reqs)
	}
}

// listenTLSWith serves cfg's handshake (then waits for the client to close)
// on 127.0.0.1 and returns the port.
func listenTLSWith(t *testing.T, cfg *tls.Config) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, l, tlsHandler(cfg))
	return l.Addr().(*net.TCPAddr).Port
}

// TestScanHTTP checks the HEAD request after the handshake against real
// HTTPS servers: HTTP/2 and HTTP/1.1, with and without HSTS, and ports that
// do not speak HTTP at all.
func TestScanHTTP(t *testing.T) {
	root := testenv.NewCA(t, "certfleet test root")
	now := time.Now()
	const host = "web.example.test"
	cert := root.Issue(t, []string{host}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour)))
	hsts := func(v ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for _, s := range v {
				w.Header().Add("Strict-Transport-Security", s)
			}
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
		}
	}
	h2Port, h2Seen := listenHTTPS(t, cert, false, hsts("max-age=31536000; includeSubDomains"))
	h1Port, h1Seen := listenHTTPS(t, cert, true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", `max-age="600"`)
		http.Redirect(w, r, "https://elsewhere.example.test/", http.StatusMovedPermanently)
	})
	twoPort, _ := listenHTTPS(t, cert, false, hsts("max-age=600", "max-age=31536000; includeSubDomains"))
	badPort, _ := listenHTTPS(t, cert, false, hsts("max-age=600; max-age=600"))
	nonePort, _ := listenHTTPS(t, cert, true, hsts())
	hugePort, _ := listenHTTPS(t, cert, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Padding", strings.Repeat("x", 2*maxHTTPBytes))
		w.WriteHeader(http.StatusOK)
	})
	// Completes the handshake, reads a byte and hangs up.
	closePort := listenTLSWith(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	// Completes the handshake and then says nothing until the client leaves.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, mute, func(c net.Conn) {
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if tc.Handshake() != nil {
			return
		}
		buf := make([]byte, 1024)
		for {
			if _, err := tc.Read(buf); err != nil {
				return
			}
		}
	})
	mutePort := mute.Addr().(*net.TCPAddr).Port

	resolver := startDNS(t, zoneOf(t, host+". 60 IN A 127.0.0.1"))
	const httpTimeout = 300 * time.Millisecond
	s, err := NewScanner(ScannerConfig{Resolver: resolver, ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(t),
		HTTPTimeout: httpTimeout, CheckLegacyTLS: new(false)}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		status     int
		maxAge     int64
		includeSub bool
	}
	tests := []struct {
		name    string
		port    int
		want    want
		seen    func() []seenRequest
		wantReq seenRequest
	}{
		{name: "h2 with hsts", port: h2Port, want: want{200, 31536000, true},
			seen: h2Seen, wantReq: seenRequest{http.MethodHead, host + ":" + strconv.Itoa(h2Port), userAgent, 2}},
		{name: "http/1.1 redirect with quoted max-age", port: h1Port, want: want{301, 600, false},
			seen: h1Seen, wantReq: seenRequest{http.MethodHead, host + ":" + strconv.Itoa(h1Port), userAgent, 1}},
		{name: "only the first header counts", port: twoPort, want: want{200, 600, false}},
		{name: "invalid header", port: badPort, want: want{200, 0, false}},
		{name: "no hsts", port: nonePort, want: want{200, 0, false}},
		{name: "headers over the cap", port: hugePort, want: want{0, 0, false}},
		{name: "hangs up after the handshake", port: closePort, want: want{0, 0, false}},
		{name: "silent after the handshake", port: mutePort, want: want{0, 0, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got := s.Scan(context.Background(), Target{Host: host, Port: tc.port}).Results
			took := time.Since(start)
			if len(got) != 1 {
				t.Fatalf("got %d results, want 1", len(got))
			}
			r := got[0]
			if r.Outcome != events.OutcomeOK || !r.ChainValid || !r.HostnameValid {
				t.Errorf("got outcome %s chain %v name %v, want ok with a valid chain and name whatever HTTP says", r.Outcome, r.ChainValid, r.HostnameValid)
			}
			if g := (want{r.HTTPStatus, r.HSTSMaxAge, r.HSTSIncludeSubdomains}); g != tc.want {
				t.Errorf("got %+v, want %+v", g, tc.want)
			}
			if took > httpTimeout+2*time.Second {
				t.Errorf("scan took %s, want the HTTP probe bounded by %s", took, httpTimeout)
			}
			if tc.seen != nil {
				if reqs := tc.seen(); len(reqs) != 1 || reqs[0] != tc.wantReq {
					t.Errorf("server saw %+v, want one %+v", reqs, tc.wantReq)
				}
			}
		})
	}
}

// TestScanLegacyTLS checks the second handshake that offers only TLS 1.0
// and 1.1 against servers that accept them or not.
func TestScanLegacyTLS(t *testing.T) {
	root := testenv.NewCA(t, "certfleet test root")
	now := time.Now()
	const host = "old.example.test"
	cert := root.Issue(t, []string{host}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour)))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// The RSA key exchange suites of old servers need an RSA key.
	rsaCert := root.IssueWithKey(t, rsaKey, []string{host}, nil, func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageKeyEncipherment
	})
	certs := []tls.Certificate{cert}
	modern := listenTLSWith(t, &tls.Config{Certificates: certs})
	upTo13 := listenTLSWith(t, &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS10})
	only10 := listenTLSWith(t, &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	// An old server: TLS 1.0 with RSA key exchange, which crypto/tls does
	// not offer unless asked.
	rsaKex := listenTLSWith(t, &tls.Config{Certificates: []tls.Certificate{rsaCert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}})
	// A server that takes the connection and drops the ClientHello.
	resetting, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, resetting, func(c net.Conn) {
		_ = c.(*net.TCPConn).SetLinger(0)
		_, _ = c.Read(make([]byte, 1))
		_ = c.Close()
	})
	resetPort := resetting.Addr().(*net.TCPAddr).Port
	silentPort := port(silentServer(t))
	refusedPort := freePort(t)

	resolver := startDNS(t, zoneOf(t, host+". 60 IN A 127.0.0.1"))
	base := ScannerConfig{Resolver: resolver, ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(t),
		HandshakeTimeout: 300 * time.Millisecond, HTTPTimeout: 300 * time.Millisecond}
	type want struct {
		outcome events.Outcome
		checked bool
		legacy  string
	}
	tests := []struct {
		name  string
		check *bool
		port  int
		want  want
	}{
		{"modern server refuses", nil, modern, want{events.OutcomeOK, true, ""}},
		{"accepts 1.0 to 1.3", nil, upTo13, want{events.OutcomeOK, true, "TLS 1.1"}},
		{"only tls 1.0", nil, only10, want{events.OutcomeHandshakeError, true, "TLS 1.0"}},
		{"rsa key exchange", nil, rsaKex, want{events.OutcomeHandshakeError, true, "TLS 1.1"}},
		{"probe off", new(false), upTo13, want{events.OutcomeOK, false, ""}},
		{"probe on", new(true), upTo13, want{events.OutcomeOK, true, "TLS 1.1"}},
		{"hangs up on every hello", nil, resetPort, want{events.OutcomeConnectionReset, true, ""}},
		{"never answers", nil, silentPort, want{events.OutcomeTimeout, false, ""}},
		{"refused", nil, refusedPort, want{events.OutcomeConnectionRefused, false, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.CheckLegacyTLS = tc.check
			s, err := NewScanner(cfg, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			got := s.Scan(context.Background(), Target{Host: host, Port: tc.port}).Results
			if len(got) != 1 {
				t.Fatalf("got %d results, want 1", len(got))
			}
			r := got[0]
			g := want{r.Outcome, r.LegacyTLSChecked, strings.Join(r.LegacyTLS, ",")}
			if g != tc.want {
				t.Errorf("got %+v (detail %q), want %+v", g, r.Detail, tc.want)
			}
		})
	}
}

func port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		panic(errors.New("bad address " + addr))
	}
	n, _ := strconv.Atoi(p)
	return n
}
