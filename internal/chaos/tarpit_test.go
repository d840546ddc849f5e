package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/dnszone"
)

// tarpit is a domain whose many A records all point at listeners that
// accept a connection and never answer: every handshake with it runs
// into the agent's timeout.
type tarpit struct {
	domain    string // host:port
	resolver  string // DNS server for the tarpit's name, forwarding the rest
	listeners []net.Listener
	mu        sync.Mutex
	conns     []net.Conn
}

// startTarpit serves ips tarpit addresses (127.1.x.y) on one port and a
// DNS server that answers the tarpit's name with all of them and forwards
// every other question to upstream (the lab's resolver). Everything stops
// when the test ends.
func startTarpit(t *testing.T, ips int, upstream string) *tarpit {
	t.Helper()
	tp := &tarpit{}
	var addrs []netip.Addr
	for attempt := 0; ; attempt++ {
		port := 20000 + int(time.Now().UnixNano()%30000)
		ok := true
		for i := range ips {
			a := netip.AddrFrom4([4]byte{127, 1, byte(1 + i/250), byte(1 + i%250)})
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
			if err != nil {
				ok = false
				break
			}
			tp.listeners = append(tp.listeners, ln)
			addrs = append(addrs, a)
		}
		if ok {
			tp.domain = fmt.Sprintf("tarpit.chaos.test:%d", port)
			break
		}
		tp.close()
		tp.listeners, addrs = nil, nil
		if attempt == 5 {
			t.Fatal("no port free on every tarpit address")
		}
	}
	for _, ln := range tp.listeners {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				tp.mu.Lock()
				tp.conns = append(tp.conns, c) // held open, never answered
				tp.mu.Unlock()
			}
		}()
	}

	name := "tarpit.chaos.test."
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, name) {
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
				c.Net = "tcp"
			}
			in, _, err := c.Exchange(r, upstream)
			if err != nil {
				m := new(dns.Msg)
				m.SetRcode(r, dns.RcodeServerFailure)
				in = m
			}
			_ = w.WriteMsg(in)
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if r.Question[0].Qtype == dns.TypeA {
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
			}
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && m.Len() > 512 {
			m.Answer, m.Truncated = nil, true // ask for TCP, as a real server does
		}
		_ = w.WriteMsg(m)
	})
	pc, tl, err := dnszone.ListenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp.resolver = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: tl, Handler: handler}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		tp.close()
	})
	return tp
}

func (tp *tarpit) close() {
	for _, ln := range tp.listeners {
		_ = ln.Close()
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, c := range tp.conns {
		_ = c.Close()
	}
}

// accepted is how many connections the tarpit took so far.
func (tp *tarpit) accepted() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.conns)
}

// TestTarpitTenant registers, for one tenant, a domain with 600 A records
// that all point at tarpits, beside a normal tenant: the normal tenant's
// new domain is scanned and stored as fast as without the flood (within
// 10 s, the baseline is logged), and the tarpit's job is scanned once,
// not again after its claim time.
func TestTarpitTenant(t *testing.T) {
	// Before fair slots, the IP cap and kept claims, the other tenant's new
	// domain waited 91.1 s here (1.2 s without the tarpit).
	s := suite(t)
	// No rescans: the tarpit domain gets one job, its first.
	s.interval = 12 * time.Hour
	f := newFleetWith(t, s, 600)
	ctx := context.Background()
	before := f.probe(time.Minute)

	flood := f.newTenant()
	id := f.add(flood, f.tarpit.domain)
	deadline := time.Now().Add(time.Minute)
	for f.tarpit.accepted() < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent opened %d tarpit connections in 1m, want it inside the tarpit", f.tarpit.accepted())
		}
		time.Sleep(100 * time.Millisecond)
	}
	during := f.probe(3 * time.Minute)
	t.Logf("other tenant's new domain stored %s after adding it beside the 600-IP tarpit (%s without it)", during.Round(time.Millisecond), before.Round(time.Millisecond))
	if during > 10*time.Second {
		t.Errorf("other tenant's new domain stored %s after adding it beside the tarpit, want within 10s (%s without it)", during.Round(time.Millisecond), before.Round(time.Millisecond))
	}

	// The tarpit's job ends once: one result for its job from the region.
	start := time.Now()
	var results map[string]int
	for {
		results = f.resultsOf(ctx, id)
		if len(results) > 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatal("the tarpit domain's job has no result 5m after it started")
		}
		time.Sleep(time.Second)
	}
	time.Sleep(s.load) // a second scan of the same job would come now
	results = f.resultsOf(ctx, id)
	for job, n := range results {
		if n != 1 {
			t.Errorf("tarpit job %s: %d results from %s, want 1", job, n, region)
		}
	}
	t.Logf("tarpit job ended %s after the agent entered it; %d tarpit connections opened", time.Since(start).Round(time.Millisecond), f.tarpit.accepted())
	// --max-ips-per-domain (32 by default): the rest are never dialed.
	// The legacy-TLS probe may dial a capped address a second time.
	if n := f.tarpit.accepted(); n > 2*32 {
		t.Errorf("tarpit connections: got %d, want at most %d (32 addresses)", n, 2*32)
	}
	f.landed("after tarpit")
}

// resultsOf counts the scan results on the results stream per job of the
// domain with the given id.
func (f *fleet) resultsOf(ctx context.Context, domainID string) map[string]int {
	f.t.Helper()
	msgs, err := f.rdb.XRange(ctx, events.StreamResults, "-", "+").Result()
	if err != nil {
		f.t.Fatalf("read results: %v", err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		e, err := events.FromStreamValues(m.Values)
		if err != nil || e.Name != events.ScanCompleted {
			continue
		}
		var sc events.ScanCompletedV1
		if err := json.Unmarshal(e.Payload, &sc); err != nil || sc.DomainID != domainID {
			continue
		}
		out[sc.JobID.String()]++
	}
	return out
}
