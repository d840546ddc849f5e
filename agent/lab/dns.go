package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/dnszone"
)

// dnsTTL is short so a resolver that caches does not keep a previous lab's
// answers long.
const dnsTTL = 5

// forwardTimeout bounds one exchange with an upstream server.
const forwardTimeout = 3 * time.Second

// zoneHandler answers for the lab's zones from a fixed table of names and
// forwards questions about other names.
type zoneHandler struct {
	zones   []string                // fqdn, lower case
	records map[string][]netip.Addr // fqdn, lower case
	forward []string                // host:port; none: refuse other names
	// acme holds the TXT records of the main zone, which RFC 2136 updates
	// signed with the lab's key change (ACME DNS-01 challenges).
	acme   *dnszone.Zone
	logger *zap.Logger
}

func (h *zoneHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	var m *dns.Msg
	// Challenge names only: other names keep their A records' answers
	// (NODATA for TXT, not the zone's NXDOMAIN).
	if h.acme != nil && (r.Opcode == dns.OpcodeUpdate || (len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeTXT &&
		strings.HasPrefix(strings.ToLower(r.Question[0].Name), "_acme-challenge.") && h.acme.Owns(r.Question[0].Name))) {
		m = h.acme.Reply(r, w.TsigStatus())
		if m == nil {
			return
		}
	} else if len(h.forward) > 0 && h.outside(r) {
		m = h.relay(r, w.RemoteAddr().Network())
	} else {
		m = h.answer(r)
	}
	if err := w.WriteMsg(m); err != nil {
		h.logger.Debug("write dns answer", zap.Error(err))
	}
}

// outside tells whether r is a query about a name in none of the lab's zones.
func (h *zoneHandler) outside(r *dns.Msg) bool {
	return r.Opcode == dns.OpcodeQuery && len(r.Question) == 1 && dnszone.ZoneOf(h.zones, strings.ToLower(r.Question[0].Name)) == ""
}

// relay asks the upstream servers in turn, over the network the question
// came by, and returns the first answer; SERVFAIL when none answers.
func (h *zoneHandler) relay(r *dns.Msg, network string) *dns.Msg {
	// A large buffer takes any upstream answer whole; it is cut to the
	// client's size below.
	c := &dns.Client{Net: network, Timeout: forwardTimeout, UDPSize: dns.DefaultMsgSize}
	for _, up := range h.forward {
		resp, _, err := c.Exchange(r.Copy(), up)
		if err != nil {
			h.logger.Debug("forward dns question", zap.String("upstream", up), zap.String("name", r.Question[0].Name), zap.Error(err))
			continue
		}
		if network == "udp" {
			// Too large for the client's buffer: it retries over TCP.
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			resp.Truncate(size)
		}
		return resp
	}
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	return m
}

// answer is the lab's own part: A/AAAA for known names, NXDOMAIN for other
// names in a zone, NODATA for other types, REFUSED outside the zones.
func (h *zoneHandler) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		if r.Opcode != dns.OpcodeQuery {
			m.Rcode = dns.RcodeNotImplemented
		}
		return m
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	zone := dnszone.ZoneOf(h.zones, name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	addrs, known := h.records[name]
	if !known && name != zone {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(zone)}
		return m
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: dnsTTL}
	}
	for _, a := range addrs {
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	if name == zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, soa(zone))
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{soa(zone)}
	}
	return m
}

func soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:      "ns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  dnsTTL,
	}
}

// startDNS serves the records on UDP and TCP of one port; with port 0 it
// looks for a port free for both.
func (l *Lab) startDNS(ctx context.Context, zones []string, records map[string][]netip.Addr) error {
	if err := l.newACMEZone(); err != nil {
		return err
	}
	h := &zoneHandler{zones: zones, records: records, acme: l.acme, logger: l.logger.Named("dns")}
	host, portStr, _ := net.SplitHostPort(l.cfg.DNSAddr) // checked by Validate
	var lc net.ListenConfig
	var err error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		var pc net.PacketConn
		pc, err = lc.ListenPacket(ctx, "udp", net.JoinHostPort(host, portStr))
		if err != nil {
			err = fmt.Errorf("listen dns udp %s: %w", l.cfg.DNSAddr, err)
			break
		}
		udpAddr := pc.LocalAddr().(*net.UDPAddr)
		addr := net.JoinHostPort(udpAddr.IP.String(), strconv.Itoa(udpAddr.Port))
		var ln net.Listener
		ln, err = lc.Listen(ctx, "tcp", addr)
		if err != nil {
			_ = pc.Close()
			err = fmt.Errorf("listen dns tcp %s: %w", addr, err)
			if portStr != "0" {
				break
			}
			continue
		}
		l.resolver = addr
		// Forwarding to itself would loop until every client timed out.
		h.forward = slices.DeleteFunc(slices.Clone(l.cfg.Forward), func(up string) bool {
			same := sameAddr(up, addr)
			if same {
				l.logger.Warn("not forwarding to the lab's own dns server", zap.String("upstream", up))
			}
			return same
		})
		servers := []*dns.Server{
			{PacketConn: pc, Handler: h, TsigSecret: h.acme.TsigSecret(), MsgAcceptFunc: dnszone.Accept},
			{Listener: ln, Handler: h, TsigSecret: h.acme.TsigSecret(), MsgAcceptFunc: dnszone.Accept},
		}
		for _, s := range servers {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			failed := make(chan error, 1)
			l.wg.Go(func() {
				if err := s.ActivateAndServe(); err != nil {
					failed <- err
					l.logger.Error("dns server stopped", zap.String("addr", addr), zap.Error(err))
				}
			})
			select {
			case <-started:
				l.dns = append(l.dns, s)
			case err := <-failed:
				// Shutdown needs a started server; stop what did start.
				for _, s := range l.dns {
					_ = s.Shutdown()
				}
				_ = pc.Close()
				_ = ln.Close()
				l.wg.Wait()
				return fmt.Errorf("serve dns %s: %w", addr, err)
			}
		}
		return nil
	}
	return err
}

// sameAddr tells whether two host:port name the same address.
func sameAddr(a, b string) bool {
	pa, errA := netip.ParseAddrPort(a)
	pb, errB := netip.ParseAddrPort(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.Addr().Unmap() == pb.Addr().Unmap() && pa.Port() == pb.Port()
}

// SystemResolvers are the name servers of a resolv.conf file
// (/etc/resolv.conf on most systems) as host:port, for Config.Forward.
func SystemResolvers(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read resolvers: %w", err)
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}

func (l *Lab) stopDNS() error {
	var errs []error
	for _, s := range l.dns {
		if err := s.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop dns server: %w", err))
		}
	}
	return errors.Join(errs...)
}
