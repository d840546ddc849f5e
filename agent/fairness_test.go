package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// tarpits listens on n loopback addresses (127.1.x.y) on one port; every
// connection is taken and never answered, so a handshake with it waits for
// its deadline. It returns the port, the A records of name pointing at the
// addresses, and the count of connections taken.
func tarpits(t *testing.T, name string, n int) (port int, rrs []string, accepted *atomic.Int64) {
	t.Helper()
	accepted = new(atomic.Int64)
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		serve(t, l, func(c net.Conn) {
			accepted.Add(1)
			defer c.Close()
			buf := make([]byte, 1024)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		})
		rrs = append(rrs, name+". 60 IN A "+ip)
	}
	return port, rrs, accepted
}

// resultsOf returns the scan results published for tenant.
func resultsOf(t *testing.T, rdb redis.UniversalClient, tenant string) []events.ScanCompletedV1 {
	t.Helper()
	all, err := events.ReadAll(context.Background(), rdb, events.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.ScanCompletedV1
	for _, e := range all {
		if e.TenantID != tenant {
			continue
		}
		var r events.ScanCompletedV1
		if err := e.Decode(&r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// One tenant's domain with 600 addresses that never answer, scanned by a
// region of two agents, beside another tenant's normal domain: the normal
// domain is scanned while the tarpit job still runs; the tarpit job dials
// only the capped addresses, reports the rest as skipped, and is scanned
// once although it runs many claim periods.
func TestTenantFloodDoesNotStarveOthers(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	root := testenv.NewCA(t, "certfleet test root")
	now := time.Now()
	addr := listenTLS(t, "127.0.0.1:0", root.Issue(t, []string{"normal.example.test"}, nil, testenv.Validity(now.Add(-time.Hour), now.Add(24*time.Hour))))
	_, p, _ := net.SplitHostPort(addr)
	normalPort, _ := strconv.Atoi(p)
	const addresses, maxIPs, perJob = 600, 32, 8
	tarpitPort, rrs, accepted := tarpits(t, "tarpit.example.test", addresses)
	resolver := startDNS(t, zoneOf(t, append(rrs, "normal.example.test. 60 IN A 127.0.0.1")...))

	// Four waves of 8 handshakes of 500ms each: the tarpit job runs about
	// 2s, ten claim periods.
	const claimIdle = 200 * time.Millisecond
	for _, name := range []string{"agent-1", "agent-2"} {
		a, err := New(Config{
			Region: "eu", Name: name, Shards: 2, Block: 20 * time.Millisecond, ClaimIdle: claimIdle,
			Scanner: ScannerConfig{Resolver: resolver, ExtraRootsPEM: root.PEM(), Allow: loopbackAllow(t),
				HandshakeTimeout: 500 * time.Millisecond, MaxIPsPerDomain: maxIPs, MaxHandshakesPerJob: perJob},
		}, rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		t.Cleanup(func() {
			stop()
			<-done
		})
	}

	flood, normal := events.TenantID("flood@example.test"), events.TenantID("normal@example.test")
	tarpitJob, _ := jobEnvelope(t, flood, "tarpit.example.test", tarpitPort, now)
	addJob(t, rdb, 0, tarpitJob)
	waitFor(t, 10*time.Second, func() string {
		if accepted.Load() < perJob {
			return "the tarpit job has not started its handshakes"
		}
		return ""
	})
	normalJob, _ := jobEnvelope(t, normal, "normal.example.test", normalPort, now)
	addJob(t, rdb, 1, normalJob)
	waitFor(t, 10*time.Second, func() string {
		if len(resultsOf(t, rdb, normal)) == 0 {
			return "the normal domain has no result"
		}
		return ""
	})
	if got := len(resultsOf(t, rdb, flood)); got != 0 {
		t.Errorf("got %d tarpit results when the normal domain's came, want the tarpit job still running", got)
	}
	if got := resultsOf(t, rdb, normal)[0].Results; len(got) != 1 || got[0].Outcome != events.OutcomeOK {
		t.Errorf("got normal domain results %+v, want one ok", got)
	}

	waitFor(t, 30*time.Second, func() string {
		if len(resultsOf(t, rdb, flood)) == 0 {
			return "the tarpit job has no result"
		}
		return ""
	})
	// Claimers of both agents run several more periods: a duplicate would
	// show now.
	time.Sleep(5 * claimIdle)
	got := resultsOf(t, rdb, flood)
	if len(got) != 1 {
		t.Fatalf("got %d tarpit results, want 1 (scanned once)", len(got))
	}
	r := got[0]
	timeouts := 0
	for _, ip := range r.Results {
		if ip.Outcome == events.OutcomeTimeout {
			timeouts++
		}
	}
	checks := []struct {
		field    string
		got, val any
	}{
		{"results", len(r.Results), maxIPs},
		{"timeouts", timeouts, maxIPs},
		{"skipped_ips", r.SkippedIPs, addresses - maxIPs},
		{"connections taken by the tarpits", accepted.Load(), int64(maxIPs)},
	}
	for _, c := range checks {
		if c.got != c.val {
			t.Errorf("tarpit job %s: got %v, want %v", c.field, c.got, c.val)
		}
	}
}

// A job's deadline ends the whole scan: the addresses not done by then,
// waiting for a slot or in their handshake, are reported as timeouts of
// the job's deadline, every one of them.
func TestJobDeadline(t *testing.T) {
	port, rrs, _ := tarpits(t, "slow.example.test", 32)
	s, err := NewScanner(ScannerConfig{Resolver: startDNS(t, zoneOf(t, rrs...)), Allow: loopbackAllow(t),
		HandshakeTimeout: time.Second, JobTimeout: 1500 * time.Millisecond, MaxHandshakesPerJob: 8}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rep := s.Scan(context.Background(), Target{Tenant: "t", Host: "slow.example.test", Port: port})
	details := map[string]int{}
	for _, r := range rep.Results {
		if r.Outcome != events.OutcomeTimeout {
			t.Errorf("%s: got outcome %s, want %s", r.IP, r.Outcome, events.OutcomeTimeout)
		}
		details[r.Detail]++
	}
	// The first wave of 8 ends on its own handshake timeout (1s), the
	// second is cut by the deadline (1.5s), the last two never start.
	if len(rep.Results) != 32 || details[detailJobDeadline] < 16 || details[detailJobDeadline]+details[phaseHandshake] != 32 {
		t.Errorf("got %d results with details %v, want 32, at least 16 %s and the rest %s",
			len(rep.Results), details, detailJobDeadline, phaseHandshake)
	}
}
