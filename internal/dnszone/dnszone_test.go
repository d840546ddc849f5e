package dnszone

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	keyName = "lab-key."
	secret  = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="
)

func serve(t *testing.T) (*Zone, string) {
	t.Helper()
	z := New([]string{"lab.test"}, map[string]string{keyName: secret})
	s, err := Listen(z, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return z, s.Addr
}

// update sends a signed update whose update section build fills.
func update(t *testing.T, addr, key, sec string, build func(m *dns.Msg)) int {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate("lab.test.")
	build(m)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second, TsigSecret: map[string]string{key: sec}}
	m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return -1 // e.g. the answer's signature does not verify
	}
	return r.Rcode
}

func insert(rrs ...dns.RR) func(*dns.Msg) { return func(m *dns.Msg) { m.Insert(rrs) } }

func txt(t *testing.T, name, v string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(name + " 60 IN TXT \"" + v + "\"")
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func query(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestUpdateAndAnswer(t *testing.T) {
	z, addr := serve(t)
	name := "_acme-challenge.www.lab.test."
	if rc := update(t, addr, keyName, secret, insert(txt(t, name, "token-1"))); rc != dns.RcodeSuccess {
		t.Fatalf("signed update: got rcode %s, want NOERROR", dns.RcodeToString[rc])
	}
	r := query(t, addr, name, dns.TypeTXT)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != "token-1" || !r.Authoritative {
		t.Fatalf("TXT answer: got %v", r.Answer)
	}
	if r := query(t, addr, "lab.test.", dns.TypeSOA); len(r.Answer) != 1 {
		t.Errorf("SOA at the apex: got %v", r.Answer)
	}
	if r := query(t, addr, "nothing.lab.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: got %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, addr, "example.com.", dns.TypeTXT); r.Rcode != dns.RcodeRefused {
		t.Errorf("outside the zone: got %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}

	// A wrong secret changes nothing.
	if rc := update(t, addr, keyName, "d3Jvbmctd3Jvbmctd3Jvbmc=", insert(txt(t, name, "evil"))); rc == dns.RcodeSuccess {
		t.Errorf("update with a wrong secret succeeded")
	}
	if got := z.TXT(name); !slices.Equal(got, []string{"token-1"}) {
		t.Errorf("after a bad update: got %v, want [token-1]", got)
	}

	// Delete one record (class NONE), then the RRset (class ANY).
	update(t, addr, keyName, secret, insert(txt(t, name, "token-2")))
	del := func(m *dns.Msg) { m.Remove([]dns.RR{txt(t, name, "token-1")}) }
	if rc := update(t, addr, keyName, secret, del); rc != dns.RcodeSuccess {
		t.Fatalf("delete one: %s", dns.RcodeToString[rc])
	}
	if got := z.TXT(name); !slices.Equal(got, []string{"token-2"}) {
		t.Errorf("after deleting one: got %v, want [token-2]", got)
	}
	delSet := func(m *dns.Msg) {
		m.RemoveRRset([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT}}})
	}
	if rc := update(t, addr, keyName, secret, delSet); rc != dns.RcodeSuccess {
		t.Fatalf("delete RRset: %s", dns.RcodeToString[rc])
	}
	if got := z.TXT(name); len(got) != 0 {
		t.Errorf("after deleting the RRset: got %v", got)
	}
	// Other types and other zones are refused.
	a, _ := dns.NewRR("www.lab.test. 60 IN A 127.0.0.1")
	if rc := update(t, addr, keyName, secret, insert(a)); rc != dns.RcodeRefused {
		t.Errorf("A record update: got %s, want REFUSED", dns.RcodeToString[rc])
	}
}

func TestSilent(t *testing.T) {
	z, addr := serve(t)
	z.SetSilent(true)
	m := new(dns.Msg)
	m.SetQuestion("lab.test.", dns.TypeSOA)
	if _, _, err := (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, addr); err == nil {
		t.Errorf("a silent zone answered")
	}
}

// FuzzReply feeds any message to the zone, signed or not: it never
// panics, and an unsigned message never changes it.
func FuzzReply(f *testing.F) {
	m := new(dns.Msg)
	m.SetUpdate("lab.test.")
	rr, _ := dns.NewRR(`_acme-challenge.lab.test. 60 IN TXT "x"`)
	m.Insert([]dns.RR{rr})
	b, _ := m.Pack()
	f.Add(b, true)
	q := new(dns.Msg)
	q.SetQuestion("_acme-challenge.lab.test.", dns.TypeTXT)
	b, _ = q.Pack()
	f.Add(b, false)
	f.Fuzz(func(t *testing.T, wire []byte, signedOK bool) {
		msg := new(dns.Msg)
		if msg.Unpack(wire) != nil {
			return
		}
		z := New([]string{"lab.test"}, map[string]string{keyName: secret})
		var status error
		if !signedOK {
			status = dns.ErrSig
		}
		_ = z.Reply(msg, status)
		if (msg.IsTsig() == nil || !signedOK) && z.n != 0 {
			t.Fatalf("an unsigned or badly signed message changed the zone")
		}
	})
}
