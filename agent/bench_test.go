package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"github.com/certfleet/certfleet/internal/testenv"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// BenchmarkHandshakes compares the scanner's handshake path for one IP
// (guard, dial, handshake, recording and verifying the certificate), with
// the HTTP and legacy protocol probes off, with a minimal crypto/tls client
// loop that dials, verifies and closes the same server with crypto/tls's
// default settings (plus the scanner's versions and ALPN), in the same run:
// one handshake against one handshake. BenchmarkScanIP measures the scan of
// an IP as it runs. The server runs in this process, so the CPU figures
// include its side of every handshake, alike for both.
func BenchmarkHandshakes(b *testing.B) {
	root := testenv.NewCA(b, "certfleet bench root")
	now := time.Now()
	addr := listenTLS(b, "127.0.0.1:0", root.Issue(b, []string{"127.0.0.1"}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour))))
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)

	scan := func(curves []tls.CurveID) func(b *testing.B) {
		return func(b *testing.B) {
			s, err := NewScanner(ScannerConfig{Resolver: "127.0.0.1:53", ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(b),
				CheckLegacyTLS: new(false)}, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			s.curves = curves
			s.skipHTTP = true
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				r := s.Scan(ctx, Target{Host: "127.0.0.1", Port: port}).Results
				if r[0].Outcome != events.OutcomeOK || !r[0].ChainValid || !r[0].HostnameValid {
					b.Fatalf("got %+v, want ok with a valid chain and name", r[0])
				}
			}
			report(b, cpu, "handshake")
		}
	}
	// The scanner as it runs: classic key exchange groups.
	b.Run("scanner", scan(classicCurves))
	// The scanner with crypto/tls's default groups, exactly the baseline's
	// settings: what the scanner's own path costs.
	b.Run("scanner-pq", scan(nil))

	b.Run("baseline", func(b *testing.B) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root.PEM())
		d := &tls.Dialer{
			NetDialer: &net.Dialer{Timeout: 5 * time.Second},
			Config: &tls.Config{
				ServerName: "127.0.0.1", RootCAs: pool, NextProtos: alpn,
				MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
			},
		}
		ctx := context.Background()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
		report(b, cpu, "handshake")
	})
}

// BenchmarkScanIP compares the scan of one IP as the agent does it (the
// handshake and certificate checks, HEAD / over HTTP/2 on that connection
// for HSTS, then a second handshake offering only TLS 1.0-1.1, which the
// server refuses as most do) with the least standard-library code doing the
// same three things: net/http's client sending HEAD over a fresh verified
// HTTP/2 connection, then a crypto/tls dial capped at TLS 1.1.
func BenchmarkScanIP(b *testing.B) {
	root := testenv.NewCA(b, "certfleet bench root")
	now := time.Now()
	cert := root.Issue(b, []string{"127.0.0.1"}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	b.Cleanup(func() { _ = srv.Close() })
	addr := l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port

	b.Run("scanner", func(b *testing.B) {
		s, err := NewScanner(ScannerConfig{Resolver: "127.0.0.1:53", ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(b)}, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			r := s.Scan(ctx, Target{Host: "127.0.0.1", Port: port}).Results
			if r[0].Outcome != events.OutcomeOK || !r[0].ChainValid || r[0].HTTPStatus != 200 || r[0].HSTSMaxAge != 31536000 ||
				!r[0].LegacyTLSChecked || len(r[0].LegacyTLS) != 0 {
				b.Fatalf("got %+v, want ok, HTTP 200 with HSTS, legacy TLS checked and refused", r[0])
			}
		}
		report(b, cpu, "scan")
	})

	b.Run("baseline", func(b *testing.B) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root.PEM())
		tlsCfg := &tls.Config{ServerName: "127.0.0.1", RootCAs: pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, DisableKeepAlives: true}}
		legacy := &tls.Dialer{
			NetDialer: &net.Dialer{Timeout: 5 * time.Second},
			Config: &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true, NextProtos: alpn,
				MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
		}
		ctx := context.Background()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			resp, err := client.Head("https://" + addr + "/")
			if err != nil {
				b.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.Header.Get("Strict-Transport-Security") == "" {
				b.Fatalf("got %s with headers %v, want HTTP/2 with HSTS", resp.Proto, resp.Header)
			}
			if c, err := legacy.DialContext(ctx, "tcp", addr); err == nil {
				_ = c.Close()
				b.Fatal("legacy handshake: got it accepted, want it refused")
			}
		}
		report(b, cpu, "scan")
	})
}

// report adds the rate and the CPU time per operation, named by unit
// ("handshake", "scan").
func report(b *testing.B, cpuStart time.Duration, unit string) {
	secs := b.Elapsed().Seconds()
	if secs > 0 {
		b.ReportMetric(float64(b.N)/secs, unit+"s/s")
	}
	b.ReportMetric(float64((cpuTime()-cpuStart).Microseconds())/float64(b.N), "cpu-µs/"+unit)
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
