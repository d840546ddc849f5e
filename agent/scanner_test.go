package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/testenv"
)

func loopbackAllow(t testing.TB) []netip.Prefix {
	t.Helper()
	allow, err := guard.ParseAllow([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	return allow
}

// freePort returns a port nothing listens on.
func freePort(t testing.TB) int { return testenv.FreePort(t) }

func TestScan(t *testing.T) {
	root := testenv.NewCA(t, "certfleet test root")
	inter := root.Intermediate(t, "certfleet test intermediate")
	now := time.Now()
	day := 24 * time.Hour

	validCert := inter.Issue(t, []string{"valid.example.test", "www.valid.example.test"}, []*testenv.CA{inter}, testenv.Validity(now.Add(-day), now.Add(30*day)))
	validPort := listenTLSDual(t, validCert)
	expiredAddr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"expired.example.test"}, nil, testenv.Validity(now.Add(-10*day), now.Add(-day))))
	futureAddr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"future.example.test"}, nil, testenv.Validity(now.Add(day), now.Add(10*day))))
	wrongAddr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"other.example.test"}, nil, testenv.Validity(now.Add(-day), now.Add(day))))
	selfAddr := listenTLS(t, "127.0.0.1:0", testenv.SelfSigned(t, []string{"self.example.test"}))
	ipAddr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"127.0.0.1"}, nil, testenv.Validity(now.Add(-day), now.Add(day))))

	silentAddr := silentServer(t)
	// A server that refuses every handshake with an alert.
	alerting, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, alerting, tlsHandler(&tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, errors.New("no certificate for you")
	}}))
	// A server that speaks something else.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, plain, func(c net.Conn) {
		defer c.Close()
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
	})

	resolver := startDNS(t, zoneOf(t,
		"valid.example.test. 60 IN A 127.0.0.1",
		"valid.example.test. 60 IN AAAA ::1",
		"alias.example.test. 60 IN CNAME valid.example.test.",
		"outzone-alias.example.test. 60 IN CNAME valid.example.test.",
		"expired.example.test. 60 IN A 127.0.0.1",
		"future.example.test. 60 IN A 127.0.0.1",
		"wrong.example.test. 60 IN A 127.0.0.1",
		"self.example.test. 60 IN A 127.0.0.1",
		"refused.example.test. 60 IN A 127.0.0.1",
		"silent.example.test. 60 IN A 127.0.0.1",
		"alert.example.test. 60 IN A 127.0.0.1",
		"plain.example.test. 60 IN A 127.0.0.1",
		"private.example.test. 60 IN A 10.1.2.3",
		"txt.example.test. 60 IN TXT \"no addresses here\"",
	))
	// A resolver that never answers.
	deaf, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.Close()

	base := ScannerConfig{
		Resolver:         resolver,
		ExtraRootsPEM:    root.PEM(),
		Allow:            loopbackAllow(t),
		DNSTimeout:       time.Second,
		ConnectTimeout:   time.Second,
		HandshakeTimeout: 300 * time.Millisecond,
	}
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	type want struct {
		ip                                   string
		outcome                              events.Outcome
		detail                               string
		certFound, chainValid, hostnameValid bool
	}
	okValid := func(ip string) want { return want{ip, events.OutcomeOK, "", true, true, true} }
	tests := []struct {
		name   string
		cfg    func(*ScannerConfig)
		host   string
		port   int
		want   []want
		verify func(t *testing.T, got []events.IPResult)
	}{
		{name: "valid on A and AAAA", host: "valid.example.test", port: validPort,
			want: []want{okValid("127.0.0.1"), okValid("::1")}},
		{name: "cname in answer", host: "alias.example.test", port: validPort,
			want: []want{{"127.0.0.1", events.OutcomeOK, "hostname-mismatch", true, true, false}, {"::1", events.OutcomeOK, "hostname-mismatch", true, true, false}}},
		{name: "cname target asked again", host: "outzone-alias.example.test", port: validPort,
			want: []want{{"127.0.0.1", events.OutcomeOK, "hostname-mismatch", true, true, false}, {"::1", events.OutcomeOK, "hostname-mismatch", true, true, false}}},
		{name: "expired", host: "expired.example.test", port: port(expiredAddr),
			want: []want{{"127.0.0.1", events.OutcomeOK, "expired", true, false, true}}},
		{name: "not yet valid", host: "future.example.test", port: port(futureAddr),
			want: []want{{"127.0.0.1", events.OutcomeOK, "not-yet-valid", true, false, true}}},
		{name: "wrong name", host: "wrong.example.test", port: port(wrongAddr),
			want: []want{{"127.0.0.1", events.OutcomeOK, "hostname-mismatch", true, true, false}}},
		{name: "self-signed", host: "self.example.test", port: port(selfAddr),
			want: []want{{"127.0.0.1", events.OutcomeOK, "unknown-authority", true, false, true}}},
		{name: "unknown root without extra roots", cfg: func(c *ScannerConfig) { c.ExtraRootsPEM = nil }, host: "valid.example.test", port: validPort,
			want: []want{{"127.0.0.1", events.OutcomeOK, "unknown-authority", true, false, true}, {"::1", events.OutcomeOK, "unknown-authority", true, false, true}}},
		{name: "ip literal", host: "127.0.0.1", port: port(ipAddr), want: []want{okValid("127.0.0.1")}},
		{name: "refused", host: "refused.example.test", port: freePort(t),
			want: []want{{"127.0.0.1", events.OutcomeConnectionRefused, "", false, false, false}}},
		{name: "never answers", host: "silent.example.test", port: port(silentAddr),
			want: []want{{"127.0.0.1", events.OutcomeTimeout, "handshake", false, false, false}}},
		{name: "alert", host: "alert.example.test", port: port(alerting.Addr().String()),
			want: []want{{"127.0.0.1", events.OutcomeHandshakeError, "internal-error", false, false, false}}},
		{name: "not tls", host: "plain.example.test", port: port(plain.Addr().String()),
			want: []want{{"127.0.0.1", events.OutcomeHandshakeError, "not-tls", false, false, false}}},
		{name: "loopback blocked without allow", cfg: func(c *ScannerConfig) { c.Allow = nil }, host: "valid.example.test", port: validPort,
			want: []want{{"127.0.0.1", events.OutcomeBlockedTarget, "loopback", false, false, false}, {"::1", events.OutcomeBlockedTarget, "loopback", false, false, false}}},
		{name: "private blocked", host: "private.example.test", port: 443,
			want: []want{{"10.1.2.3", events.OutcomeBlockedTarget, "private", false, false, false}}},
		{name: "nxdomain", host: "missing.example.test", port: 443,
			want: []want{{"", events.OutcomeNXDomain, "", false, false, false}}},
		{name: "no addresses", host: "txt.example.test", port: 443,
			want: []want{{"", events.OutcomeNoAddresses, "", false, false, false}}},
		{name: "servfail", host: "servfail", port: 443,
			want: []want{{"", events.OutcomeDNSError, "servfail", false, false, false}}},
		{name: "resolver never answers", cfg: func(c *ScannerConfig) { c.Resolver = deaf.LocalAddr().String(); c.DNSTimeout = 200 * time.Millisecond },
			host: "valid.example.test", port: validPort,
			want: []want{{"", events.OutcomeDNSError, "timeout", false, false, false}}},
		{name: "bad port", host: "valid.example.test", port: 0,
			want: []want{{"", events.OutcomeInternalError, "bad-port", false, false, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s, err := NewScanner(cfg, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			got := s.Scan(context.Background(), Target{Host: tc.host, Port: tc.port}).Results
			if len(got) != len(tc.want) {
				t.Fatalf("got %d results %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				gw := want{g.IP, g.Outcome, g.Detail, g.CertificateFound, g.ChainValid, g.HostnameValid}
				if gw != w {
					t.Errorf("result %d: got %+v, want %+v", i, gw, w)
				}
			}
		})
	}

	t.Run("facts of the valid certificate", func(t *testing.T) {
		s, err := NewScanner(base, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		got := s.Scan(context.Background(), Target{Host: "valid.example.test", Port: validPort}).Results
		if len(got) != 2 {
			t.Fatalf("got %d results, want 2", len(got))
		}
		leaf := validCert.Leaf
		sum := sha256.Sum256(leaf.Raw)
		for _, r := range got {
			checks := []struct {
				field    string
				got, val any
			}{
				{"subject", r.Subject, "CN=valid.example.test"},
				{"issuer", r.Issuer, inter.Cert.Subject.String()},
				{"sans", r.SANs, []string{"valid.example.test", "www.valid.example.test"}},
				{"serial", r.Serial, fmt.Sprintf("%x", leaf.SerialNumber)},
				{"not_before", r.NotBefore, leaf.NotBefore.UTC()},
				{"not_after", r.NotAfter, leaf.NotAfter.UTC()},
				{"leaf_sha256", r.LeafSHA256, hex.EncodeToString(sum[:])},
				{"key_type", r.KeyType, "ECDSA"},
				{"key_bits", r.KeyBits, 256},
				{"signature_algorithm", r.SignatureAlgorithm, "ECDSA-SHA256"},
				{"chain_length", r.ChainLength, 2},
				{"tls_version", r.TLSVersion, "TLS 1.3"},
				{"cipher_suite_set", r.CipherSuite != "", true},
				{"connect_ms_sane", r.ConnectMS >= 0 && r.ConnectMS < 1000, true},
				{"handshake_ms_sane", r.HandshakeMS >= 0 && r.HandshakeMS < 1000, true},
			}
			for _, c := range checks {
				if !reflect.DeepEqual(c.got, c.val) {
					t.Errorf("%s %s: got %v, want %v", r.IP, c.field, c.got, c.val)
				}
			}
		}
	})
}

// The concurrency bound is shared by every Scan of a Scanner: with one
// slot and one server that never answers, a second scan waits for the first.
func TestScanConcurrencyBound(t *testing.T) {
	_, p, _ := net.SplitHostPort(silentServer(t))
	port, _ := strconv.Atoi(p)
	s, err := NewScanner(ScannerConfig{Resolver: "127.0.0.1:53", Allow: loopbackAllow(t),
		HandshakeTimeout: 200 * time.Millisecond, MaxConcurrentHandshakes: 1}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan []events.IPResult, 2)
	for range 2 {
		go func() { done <- s.Scan(context.Background(), Target{Host: "127.0.0.1", Port: port}).Results }()
	}
	for range 2 {
		if r := <-done; r[0].Outcome != events.OutcomeTimeout {
			t.Errorf("got %s, want %s", r[0].Outcome, events.OutcomeTimeout)
		}
	}
	if got := time.Since(start); got < 400*time.Millisecond {
		t.Errorf("two scans with one slot took %s, want at least 400ms", got)
	}
}

func TestClassify(t *testing.T) {
	sys := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name    string
		phase   string
		err     error
		outcome events.Outcome
		detail  string
	}{
		{"refused", phaseConnect, sys(syscall.ECONNREFUSED), events.OutcomeConnectionRefused, ""},
		{"reset", phaseHandshake, sys(syscall.ECONNRESET), events.OutcomeConnectionReset, "handshake"},
		{"host unreachable", phaseConnect, sys(syscall.EHOSTUNREACH), events.OutcomeUnreachable, "host-unreachable"},
		{"net unreachable", phaseConnect, sys(syscall.ENETUNREACH), events.OutcomeUnreachable, "network-unreachable"},
		{"kernel timeout", phaseConnect, sys(syscall.ETIMEDOUT), events.OutcomeTimeout, "connect"},
		{"deadline", phaseHandshake, fmt.Errorf("x: %w", os.ErrDeadlineExceeded), events.OutcomeTimeout, "handshake"},
		{"ctx deadline", phaseConnect, context.DeadlineExceeded, events.OutcomeTimeout, "connect"},
		{"canceled", phaseConnect, context.Canceled, events.OutcomeInternalError, "canceled"},
		{"blocked", phaseConnect, fmt.Errorf("dial: %w", &guard.BlockedError{Reason: guard.ReasonPrivate}), events.OutcomeBlockedTarget, "private"},
		{"too large", phaseHandshake, errTooLarge, events.OutcomeHandshakeError, "too-large"},
		{"eof", phaseHandshake, io.EOF, events.OutcomeHandshakeError, "eof"},
		{"quic alert", phaseHandshake, tls.AlertError(40), events.OutcomeHandshakeError, "handshake-failure"},
		{"unknown alert", phaseHandshake, tls.AlertError(222), events.OutcomeHandshakeError, "alert-222"},
		{"other", phaseHandshake, errors.New("something"), events.OutcomeHandshakeError, "other"},
		{"other dial", phaseConnect, errors.New("something"), events.OutcomeInternalError, "dial"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, d := classify(tc.phase, tc.err)
			if o != tc.outcome || d != tc.detail {
				t.Errorf("got %s/%s, want %s/%s", o, d, tc.outcome, tc.detail)
			}
		})
	}
}

// A server that streams without end is cut off at the cap.
func TestLimitConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		junk := []byte(strings.Repeat("x", 4096))
		for {
			if _, err := b.Write(junk); err != nil {
				return
			}
		}
	}()
	lc := &limitConn{Conn: a, left: 10000}
	n, err := io.Copy(io.Discard, lc)
	if !errors.Is(err, errTooLarge) || n != 10000 {
		t.Errorf("got %d bytes, error %v; want 10000 bytes, errTooLarge", n, err)
	}
}

func TestScannerConfigValidate(t *testing.T) {
	err := ScannerConfig{Resolver: "no-port", ExtraRootsPEM: []byte("junk"), ConnectTimeout: -1, MaxConcurrentHandshakes: -1,
		MaxHandshakesPerJob: -1, MaxIPsPerDomain: -1}.Validate()
	for _, w := range []string{"resolver", "extra roots", "timeouts", "max concurrent", "per job", "max ips per domain"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got %v, want an error about %s", err, w)
		}
	}
}
