package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// BenchmarkHandshakes compares the scanner's full path for one IP (guard,
// dial, handshake, recording and verifying the certificate) with a minimal
// crypto/tls client loop that dials, verifies and closes the same server
// with crypto/tls's default settings (plus the scanner's versions and
// ALPN), in the same run. The server runs in this process,
// so the CPU figures include its side of every handshake, alike for both.
func BenchmarkHandshakes(b *testing.B) {
	root := newTestCA(b, "certfleet bench root")
	now := time.Now()
	addr := listenTLS(b, "127.0.0.1:0", root.issue(b, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour)))
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)

	scan := func(curves []tls.CurveID) func(b *testing.B) {
		return func(b *testing.B) {
			s, err := NewScanner(ScannerConfig{Resolver: "127.0.0.1:53", ExtraRootsPEM: root.pem(), Allow: loopbackAllow(b)}, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			s.curves = curves
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				r := s.Scan(ctx, "127.0.0.1", port)
				if r[0].Outcome != events.OutcomeOK || !r[0].ChainValid || !r[0].HostnameValid {
					b.Fatalf("got %+v, want ok with a valid chain and name", r[0])
				}
			}
			report(b, cpu)
		}
	}
	// The scanner as it runs: classic key exchange groups.
	b.Run("scanner", scan(classicCurves))
	// The scanner with crypto/tls's default groups, exactly the baseline's
	// settings: what the scanner's own path costs.
	b.Run("scanner-pq", scan(nil))

	b.Run("baseline", func(b *testing.B) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(root.pem())
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
		report(b, cpu)
	})
}

func report(b *testing.B, cpuStart time.Duration) {
	secs := b.Elapsed().Seconds()
	if secs > 0 {
		b.ReportMetric(float64(b.N)/secs, "handshakes/s")
	}
	b.ReportMetric(float64((cpuTime()-cpuStart).Microseconds())/float64(b.N), "cpu-µs/handshake")
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
