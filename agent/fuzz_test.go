package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseHSTS feeds Strict-Transport-Security values, which scanned
// servers choose, to parseHSTS: it never panics, a refused value yields
// zeros, max-age is never negative, and directive names match without
// regard to case (the value upper-cased in ASCII reads the same).
func FuzzParseHSTS(f *testing.F) {
	for _, v := range []string{
		"max-age=31536000", "max-age=31536000; includeSubDomains; preload", "MAX-AGE=600;INCLUDESUBDOMAINS",
		`max-age="600"`, "max-age = 600 ; includeSubDomains", "max-age=99999999999999999999999", "max-age=-1",
		"includeSubDomains", "max-age=1; max-age=2", `max-age=1; foo="a\"b"`, "max-age=1;;;", `max-age="1`, "max-age=1; includeSubDomains=yes",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		maxAge, sub, ok := parseHSTS(v)
		if !ok && (maxAge != 0 || sub) {
			t.Fatalf("%q: refused but got max-age %d, includeSubDomains %v", v, maxAge, sub)
		}
		if maxAge < 0 {
			t.Fatalf("%q: max-age %d", v, maxAge)
		}
		up := []byte(v)
		for i, c := range up {
			if 'a' <= c && c <= 'z' {
				up[i] = c - 'a' + 'A'
			}
		}
		if m2, s2, ok2 := parseHSTS(string(up)); m2 != maxAge || s2 != sub || ok2 != ok {
			t.Fatalf("%q: got (%d %v %v), upper-cased (%d %v %v)", v, maxAge, sub, ok, m2, s2, ok2)
		}
	})
}

// FuzzCollect feeds DNS answers, which any resolver on the path chooses,
// through the DNS library's unpacking to collect: it never panics, and
// what it returns is addresses of the family asked for, of a name of the
// answer's CNAME chain.
func FuzzCollect(f *testing.F) {
	for _, m := range []*dns.Msg{answer(dns.TypeA, "a.example.", "192.0.2.1"), answer(dns.TypeAAAA, "a.example.", "2001:db8::1"),
		answer(dns.TypeA, "a.example.", "cname:b.example.", "b.example.:192.0.2.2"),
		answer(dns.TypeA, "a.example.", "cname:b.example.", "b.example.:cname:a.example.")} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, m.Question[0].Qtype == dns.TypeAAAA)
	}
	f.Fuzz(func(t *testing.T, wire []byte, v6 bool) {
		var m dns.Msg
		if m.Unpack(wire) != nil {
			return
		}
		qtype := dns.TypeA
		if v6 {
			qtype = dns.TypeAAAA
		}
		addrs, target, ok := collect(m.Answer, "a.example.", qtype)
		if !ok {
			if len(addrs) != 0 || target != "" {
				t.Fatalf("not ok, but got %v %q", addrs, target)
			}
			return
		}
		if target == "" {
			t.Fatal("ok without a target name")
		}
		for _, a := range addrs {
			if !a.IsValid() || a.Is4() == v6 {
				t.Fatalf("asked for %s, got %v", dns.TypeToString[qtype], a)
			}
		}
	})
}

// answer is a reply to a question of qtype for name; each rr is
// "[owner:]ip" or "[owner:]cname:target", owner defaulting to name.
func answer(qtype uint16, name string, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Response = true
	for _, s := range rrs {
		owner := name
		if i := strings.Index(s, ".:"); i >= 0 {
			owner, s = s[:i+1], s[i+2:]
		}
		hdr := dns.RR_Header{Name: owner, Class: dns.ClassINET, Ttl: 60}
		if t, ok := strings.CutPrefix(s, "cname:"); ok {
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr, Target: t})
			continue
		}
		ip := netip.MustParseAddr(s)
		if ip.Is4() {
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
	return m
}
