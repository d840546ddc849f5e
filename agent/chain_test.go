package agent

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// What the agent reports for certificates whose values do not fit the
// usual ranges: a chain longer than chain_length holds is an outcome, not
// an event the stores would refuse; notAfter 99991231235959Z (RFC 5280's
// no well-defined expiration) is kept as it reads.
func TestScanOutOfRangeCertificates(t *testing.T) {
	root := testenv.NewCA(t, "certfleet test root")
	now := time.Now()
	long := root.Issue(t, []string{"long.example.test"}, []*testenv.CA{root}, testenv.Validity(now.Add(-time.Hour), now.Add(time.Hour)))
	for len(long.Certificate) <= events.MaxChainLength {
		long.Certificate = append(long.Certificate, long.Certificate[1])
	}
	forever := root.Issue(t, []string{"forever.example.test"}, nil, testenv.Validity(now.Add(-time.Hour), events.NoExpiry))
	resolver := startDNS(t, zoneOf(t,
		"long.example.test. 60 IN A 127.0.0.1",
		"forever.example.test. 60 IN A 127.0.0.1",
	))
	s, err := NewScanner(ScannerConfig{
		Resolver: resolver, ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(t),
		DNSTimeout: time.Second, ConnectTimeout: time.Second, HandshakeTimeout: 2 * time.Second,
	}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		host string
		want func(r events.IPResult) bool
		what string
	}{
		{"chain of 256", long, "long.example.test", func(r events.IPResult) bool {
			return r.Outcome == events.OutcomeHandshakeError && r.Detail == "chain-too-long" && r.ChainLength == 0
		}, "handshake-error/chain-too-long without a chain length"},
		{"no expiry", forever, "forever.example.test", func(r events.IPResult) bool {
			return r.Outcome == events.OutcomeOK && r.NotAfter.Equal(events.NoExpiry) && r.HasNoExpiry()
		}, "ok with notAfter 9999-12-31T23:59:59Z read as no expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, p, _ := net.SplitHostPort(listenTLS(t, "127.0.0.1:0", tc.cert))
			port, _ := strconv.Atoi(p)
			got := s.Scan(context.Background(), Target{Tenant: "t", Host: tc.host, Port: port}).Results
			if len(got) != 1 || !tc.want(got[0]) {
				t.Fatalf("got %+v, want %s", got, tc.what)
			}
			ev, err := events.NewWithID(events.ScanEventID(events.JobID("d", 1), "eu"), events.ScanCompleted, "t", "d",
				events.ScanCompletedV1{Port: port, Region: "eu", Results: got})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := events.DecodeScanCompleted(ev); err != nil {
				t.Fatalf("the result's event is refused: %v", err)
			}
		})
	}
}
