package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/events"
)

// maxCNAMEHops bounds how far a chain of CNAMEs is followed, across the
// answers of one query and the extra queries for targets the resolver left
// unresolved.
const maxCNAMEHops = 8

// lookupResult is the outcome of one query type for one name.
type lookupResult struct {
	addrs   []netip.Addr
	outcome events.Outcome // OutcomeOK, or a DNS outcome
	detail  string
}

// resolve asks the resolver for A and AAAA at once. Addresses found by
// either query are scanned even when the other failed: the scan shows what
// could be reached. Only when none was found does the failure become the
// result.
func (s *Scanner) resolve(ctx context.Context, host string) lookupResult {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DNSTimeout)
	defer cancel()
	name := dns.Fqdn(host)
	var a, aaaa lookupResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		aaaa = s.lookup(ctx, name, dns.TypeAAAA)
	}()
	a = s.lookup(ctx, name, dns.TypeA)
	<-done

	addrs := append(a.addrs, aaaa.addrs...)
	switch {
	case len(addrs) > 0:
		return lookupResult{addrs: addrs, outcome: events.OutcomeOK}
	case a.outcome == events.OutcomeNXDomain || aaaa.outcome == events.OutcomeNXDomain:
		return lookupResult{outcome: events.OutcomeNXDomain}
	case a.outcome != events.OutcomeOK:
		return a
	case aaaa.outcome != events.OutcomeOK:
		return aaaa
	}
	return lookupResult{outcome: events.OutcomeNoAddresses}
}

// lookup resolves one query type, following CNAMEs: those in the answer,
// and, when the resolver returned a chain without the final records (an
// authoritative server does that for targets outside its zones), by asking
// for the chain's target.
func (s *Scanner) lookup(ctx context.Context, name string, qtype uint16) lookupResult {
	for hop := 0; hop < maxCNAMEHops; hop++ {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.RecursionDesired = true
		m.SetEdns0(1232, false)
		in, err := s.exchange(ctx, m)
		if err != nil {
			return lookupResult{outcome: events.OutcomeDNSError, detail: dnsErrorDetail(err)}
		}
		switch in.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return lookupResult{outcome: events.OutcomeNXDomain}
		default:
			return lookupResult{outcome: events.OutcomeDNSError, detail: rcodeDetail(in.Rcode)}
		}
		addrs, target, ok := collect(in.Answer, name, qtype)
		if !ok {
			return lookupResult{outcome: events.OutcomeDNSError, detail: "cname-loop"}
		}
		if len(addrs) > 0 || strings.EqualFold(target, name) {
			return lookupResult{addrs: addrs, outcome: events.OutcomeOK}
		}
		name = target
	}
	return lookupResult{outcome: events.OutcomeDNSError, detail: "cname-loop"}
}

// collect walks the answer from name through its CNAMEs and returns the
// addresses of the last name of the chain, and that name. ok is false when
// the chain is longer than maxCNAMEHops (or loops).
func collect(answer []dns.RR, name string, qtype uint16) (addrs []netip.Addr, target string, ok bool) {
	cur := name
	for hop := 0; hop <= maxCNAMEHops; hop++ {
		next := ""
		for _, rr := range answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if qtype == dns.TypeA {
					if ip, ok := netip.AddrFromSlice(v.A.To4()); ok {
						addrs = append(addrs, ip)
					}
				}
			case *dns.AAAA:
				if qtype == dns.TypeAAAA {
					if ip, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
						addrs = append(addrs, ip)
					}
				}
			case *dns.CNAME:
				next = v.Target
			}
		}
		if len(addrs) > 0 || next == "" {
			return addrs, cur, true
		}
		cur = next
	}
	return nil, "", false
}

// exchange sends m over UDP, and again over TCP when the answer was
// truncated.
func (s *Scanner) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	in, _, err := s.udp.ExchangeContext(ctx, m, s.resolver)
	if err == nil && in.Truncated {
		in, _, err = s.tcp.ExchangeContext(ctx, m, s.resolver)
	}
	return in, err
}

func dnsErrorDetail(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "network"
}

func rcodeDetail(rcode int) string {
	switch rcode {
	case dns.RcodeServerFailure:
		return "servfail"
	case dns.RcodeRefused:
		return "refused"
	case dns.RcodeFormatError:
		return "format-error"
	case dns.RcodeNotImplemented:
		return "not-implemented"
	}
	return "bad-rcode"
}
