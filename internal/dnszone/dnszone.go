// Package dnszone is a small authoritative DNS zone held in memory that
// accepts RFC 2136 UPDATE of TXT records signed with TSIG: the DNS side of
// ACME DNS-01 challenges in the lab and the tests. It answers SOA at the
// zone apex, the TXT records updates put there, NXDOMAIN or NODATA for the
// rest of the zone, and REFUSED outside it. Nothing here is meant for
// serving the public.
package dnszone

import (
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// TTL of every record: short, so resolvers that cache forget quickly.
const TTL = 5

// MaxTXT caps the TXT records the zone keeps, so a client that updates
// forever cannot grow it without bound.
const MaxTXT = 10_000

// Zone holds the TXT records of some zones and applies updates to them.
// It is safe for concurrent use.
type Zone struct {
	zones []string          // fqdn, lower case
	keys  map[string]string // TSIG key name (fqdn) → base64 secret

	mu  sync.Mutex
	txt map[string][]string // fqdn, lower case → values
	n   int
	// silent makes the zone drop every message: a provider that times out.
	silent bool
}

// New returns a zone answering for zones, accepting updates signed with
// one of keys (TSIG key name → base64 secret). Without keys, updates are
// refused.
func New(zones []string, keys map[string]string) *Zone {
	z := &Zone{keys: map[string]string{}, txt: map[string][]string{}}
	for _, n := range zones {
		z.zones = append(z.zones, dns.CanonicalName(n))
	}
	for k, v := range keys {
		z.keys[dns.CanonicalName(k)] = v
	}
	return z
}

// TsigSecret is the key table a dns.Server serving the zone needs, so that
// it verifies signatures (ServeDNS reads the outcome).
func (z *Zone) TsigSecret() map[string]string { return z.keys }

// SetSilent makes the zone drop (true) or answer (false) every message.
func (z *Zone) SetSilent(silent bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.silent = silent
}

// TXT returns the TXT values of name.
func (z *Zone) TXT(name string) []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Clone(z.txt[dns.CanonicalName(name)])
}

// Owns tells whether name is inside one of the zones.
func (z *Zone) Owns(name string) bool { return ZoneOf(z.zones, dns.CanonicalName(name)) != "" }

// ZoneOf is the zone of zones (canonical names) that name is in, the
// longest when they nest; "" when none.
func ZoneOf(zones []string, name string) string {
	best := ""
	for _, zn := range zones {
		if dns.IsSubDomain(zn, name) && len(zn) > len(best) {
			best = zn
		}
	}
	return best
}

// ServeDNS answers queries and updates. A server that embeds the zone in a
// bigger handler calls Reply instead.
func (z *Zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := z.Reply(r, w.TsigStatus())
	if m == nil {
		return
	}
	_ = w.WriteMsg(m)
}

// Reply is the zone's answer to r; tsigStatus is the server's verdict on
// r's signature (ResponseWriter.TsigStatus). It returns nil when the zone
// is silent.
func (z *Zone) Reply(r *dns.Msg, tsigStatus error) *dns.Msg {
	z.mu.Lock()
	silent := z.silent
	z.mu.Unlock()
	if silent {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(r)
	switch {
	case r.Opcode == dns.OpcodeUpdate:
		m.Rcode = z.update(r, tsigStatus)
		if t := r.IsTsig(); t != nil && tsigStatus == nil {
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, int64(t.TimeSigned))
		}
	case r.Opcode != dns.OpcodeQuery || len(r.Question) != 1:
		m.Rcode = dns.RcodeNotImplemented
	default:
		z.answer(r.Question[0], m)
	}
	return m
}

func (z *Zone) answer(q dns.Question, m *dns.Msg) {
	name := dns.CanonicalName(q.Name)
	zone := ZoneOf(z.zones, name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	z.mu.Lock()
	values, known := z.txt[name]
	values = slices.Clone(values)
	z.mu.Unlock()
	if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
		for _, v := range values {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: TTL},
				Txt: []string{v}})
		}
	}
	if name == zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, SOA(zone))
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{SOA(zone)}
		if !known && name != zone {
			m.Rcode = dns.RcodeNameError
		}
	}
}

// SOA is the zone's SOA record.
func SOA(zone string) dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:  "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: TTL,
	}
}

var errRefused = errors.New("refused")

// update applies an RFC 2136 update: the whole message or nothing. It
// returns the response code.
func (z *Zone) update(r *dns.Msg, tsigStatus error) int {
	if r.IsTsig() == nil || tsigStatus != nil {
		return dns.RcodeNotAuth // unsigned, unknown key or bad signature
	}
	if len(r.Question) != 1 || r.Question[0].Qtype != dns.TypeSOA {
		return dns.RcodeFormatError
	}
	zone := dns.CanonicalName(r.Question[0].Name)
	if !slices.Contains(z.zones, zone) {
		return dns.RcodeNotZone
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	next := make(map[string][]string, len(z.txt))
	for k, v := range z.txt {
		next[k] = slices.Clone(v)
	}
	n := z.n
	for _, rr := range r.Ns { // the update section
		if err := apply(next, &n, zone, rr); err != nil {
			if errors.Is(err, errRefused) {
				return dns.RcodeRefused
			}
			return dns.RcodeNotZone
		}
	}
	z.txt, z.n = next, n
	return dns.RcodeSuccess
}

// apply applies one record of an update section to txt (RFC 2136 §2.5):
// class IN adds, class ANY deletes the RRset (or every RRset of the name),
// class NONE deletes one record. Only TXT records may change.
func apply(txt map[string][]string, n *int, zone string, rr dns.RR) error {
	h := rr.Header()
	name := dns.CanonicalName(h.Name)
	if !dns.IsSubDomain(zone, name) {
		return errors.New("outside the zone")
	}
	if h.Rrtype != dns.TypeTXT && !(h.Class == dns.ClassANY && h.Rrtype == dns.TypeANY) {
		return errRefused
	}
	switch h.Class {
	case dns.ClassINET:
		t, ok := rr.(*dns.TXT)
		if !ok {
			return errRefused
		}
		v := strings.Join(t.Txt, "")
		if slices.Contains(txt[name], v) {
			return nil
		}
		if *n >= MaxTXT {
			return errRefused
		}
		txt[name] = append(txt[name], v)
		*n++
	case dns.ClassANY:
		*n -= len(txt[name])
		delete(txt, name)
	case dns.ClassNONE:
		t, ok := rr.(*dns.TXT)
		if !ok {
			return errRefused
		}
		v := strings.Join(t.Txt, "")
		if i := slices.Index(txt[name], v); i >= 0 {
			txt[name] = slices.Delete(txt[name], i, i+1)
			*n--
			if len(txt[name]) == 0 {
				delete(txt, name)
			}
		}
	default:
		return errRefused
	}
	return nil
}
