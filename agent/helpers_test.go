package agent

import (
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/dnszone"
)

// serve accepts connections on l until the test ends, handing each to h.
func serve(t testing.TB, l net.Listener, h func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				h(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// tlsHandler completes a handshake with cert and closes.
func tlsHandler(cfg *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		// Wait for the client's close so the handshake is never cut short.
		buf := make([]byte, 1)
		_, _ = tc.Read(buf)
	}
}

// listenTLS serves cert on addr ("127.0.0.1:0" for a free port).
func listenTLS(t testing.TB, addr string, cert tls.Certificate) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, l, tlsHandler(&tls.Config{Certificates: []tls.Certificate{cert}}))
	return l.Addr().String()
}

// listenTLSDual serves cert on 127.0.0.1 and ::1 on one port.
func listenTLSDual(t testing.TB, cert tls.Certificate) int {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		l4, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l4.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
		if err != nil {
			l4.Close()
			continue
		}
		h := tlsHandler(&tls.Config{Certificates: []tls.Certificate{cert}})
		serve(t, l4, h)
		serve(t, l6, h)
		return port
	}
	t.Fatal("no port free on both 127.0.0.1 and ::1")
	return 0
}

// dnsZone is what the test DNS server answers: records by owner name. A
// name with no record is NXDOMAIN; "servfail." fails. CNAMEs whose owner
// starts with "outzone-" are answered without their target's records, as
// an authoritative server does for targets outside its zone.
type dnsZone map[string][]dns.RR

func zoneOf(t testing.TB, rrs ...string) dnsZone {
	t.Helper()
	z := dnsZone{}
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("rr %q: %v", s, err)
		}
		name := strings.ToLower(rr.Header().Name)
		z[name] = append(z[name], rr)
	}
	return z
}

func (z dnsZone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	switch {
	case name == "servfail.":
		m.Rcode = dns.RcodeServerFailure
	case len(z[name]) == 0:
		m.Rcode = dns.RcodeNameError
	default:
		for hop := 0; hop < 10 && name != ""; hop++ {
			next := ""
			for _, rr := range z[name] {
				switch v := rr.(type) {
				case *dns.CNAME:
					m.Answer = append(m.Answer, rr)
					if !strings.HasPrefix(name, "outzone-") {
						next = strings.ToLower(v.Target)
					}
				default:
					if rr.Header().Rrtype == q.Qtype {
						m.Answer = append(m.Answer, rr)
					}
				}
			}
			name = next
		}
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		// Like a real server: an answer too large for the client's UDP
		// buffer is cut and marked truncated, to be asked again over TCP.
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// startDNS serves zone over UDP and TCP on one port of 127.0.0.1 and
// returns its address.
func startDNS(t testing.TB, zone dnsZone) string {
	t.Helper()
	pc, l, err := dnszone.ListenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDNS(t, &dns.Server{PacketConn: pc, Handler: zone})
	serveDNS(t, &dns.Server{Listener: l, Handler: zone})
	return pc.LocalAddr().String()
}

// serveDNS runs srv until the test ends.
func serveDNS(t testing.TB, srv *dns.Server) {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

// silentServer listens on 127.0.0.1 and takes every connection without ever
// answering, so a handshake with it waits until its deadline; it returns
// the listener's address.
func silentServer(t testing.TB) string {
	addr, _ := silentServerCounting(t)
	return addr
}

// silentServerCounting is silentServer that also counts the connections it
// took, so a test can wait until a scan is really in its handshake.
func silentServerCounting(t testing.TB) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	serve(t, l, func(c net.Conn) {
		accepted.Add(1)
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	})
	return l.Addr().String(), &accepted
}
