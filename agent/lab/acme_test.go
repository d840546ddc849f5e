package lab

import (
	"crypto/tls"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestACME: with Pebble, the lab serves an ACME directory over HTTPS its
// roots verify, its DNS server takes updates of challenge records signed
// with the key it publishes (and only those), and the env file carries
// the settings and the DNS account.
func TestACME(t *testing.T) {
	l := startLab(t, Config{Pebble: testenv.Pebble(t)})
	dir := l.ACMEDirectory()
	if dir == "" {
		t.Fatal("no ACME directory with a Pebble binary")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.ca.Pool()}}}
	resp, err := client.Get(dir)
	if err != nil {
		t.Fatalf("directory: %v", err)
	}
	_ = resp.Body.Close()

	c := l.RFC2136Credentials()
	name := "_acme-challenge.shop." + DefaultZone
	send := func(secret string) int {
		m := new(dns.Msg)
		m.SetUpdate(DefaultZone)
		rr, _ := dns.NewRR(name + ` 60 IN TXT "token"`)
		m.Insert([]dns.RR{rr})
		m.SetTsig(c["RFC2136_TSIG_KEY"], c["RFC2136_TSIG_ALGORITHM"], 300, time.Now().Unix())
		r, _, err := (&dns.Client{Net: "tcp", TsigSecret: map[string]string{c["RFC2136_TSIG_KEY"]: secret}}).Exchange(m, l.ResolverAddr())
		if err != nil {
			return -1
		}
		return r.Rcode
	}
	if rc := send("d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc="); rc == dns.RcodeSuccess {
		t.Errorf("an update with a wrong secret succeeded")
	}
	if rc := send(c["RFC2136_TSIG_SECRET"]); rc != dns.RcodeSuccess {
		t.Fatalf("update with the lab's key: rcode %d", rc)
	}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	r, _, err := new(dns.Client).Exchange(q, l.ResolverAddr())
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("TXT answer: %v %v", r, err)
	}
	// Other names keep their answers: NODATA for the TXT of a known name.
	q.SetQuestion("valid."+DefaultZone, dns.TypeTXT)
	if r, _, err := new(dns.Client).Exchange(q, l.ResolverAddr()); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("TXT of valid: got %v %v, want NOERROR", r, err)
	}

	env := t.TempDir() + "/lab.env"
	if err := l.WriteEnv(env, t.TempDir()+"/roots.pem"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(env)
	for _, k := range []string{"CERTFLEET_ACME_DIRECTORY=" + dir, "CERTFLEET_ACME_DNS_RESOLVERS=", "CERTFLEET_LAB_RFC2136_TSIG_SECRET=", "CERTFLEET_ALLOW_DNS_TARGETS="} {
		if !strings.Contains(string(b), k) {
			t.Errorf("env file lacks %s", k)
		}
	}
}
