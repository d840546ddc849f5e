package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// dnsTTL is short so a resolver that caches does not keep a previous lab's
// answers long.
const dnsTTL = 5

// zoneHandler answers for one zone from a fixed table of names.
type zoneHandler struct {
	zone    string                  // fqdn, lower case
	records map[string][]netip.Addr // fqdn, lower case
	logger  *zap.Logger
}

func (h *zoneHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := h.answer(r)
	if err := w.WriteMsg(m); err != nil {
		h.logger.Debug("write dns answer", zap.Error(err))
	}
}

// answer is the whole of the server's behaviour: A/AAAA for known names,
// NXDOMAIN for other names in the zone, NODATA for other types, REFUSED
// outside the zone.
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
	if !dns.IsSubDomain(h.zone, name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	addrs, known := h.records[name]
	if !known && name != h.zone {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{h.soa()}
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
	if name == h.zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, h.soa())
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{h.soa()}
	}
	return m
}

func (h *zoneHandler) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: h.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:      "ns." + h.zone,
		Mbox:    "hostmaster." + h.zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  dnsTTL,
	}
}

// startDNS serves the records on UDP and TCP of one port; with port 0 it
// looks for a port free for both.
func (l *Lab) startDNS(ctx context.Context, records map[string][]netip.Addr) error {
	h := &zoneHandler{zone: l.cfg.Zone, records: records, logger: l.logger.Named("dns")}
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
		servers := []*dns.Server{
			{PacketConn: pc, Handler: h},
			{Listener: ln, Handler: h},
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

func (l *Lab) stopDNS() error {
	var errs []error
	for _, s := range l.dns {
		if err := s.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop dns server: %w", err))
		}
	}
	return errors.Join(errs...)
}
