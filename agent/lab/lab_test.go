package lab

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

func startLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	l, err := Start(context.Background(), cfg, testenv.Logger(t))
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// fact is the part of an Expect a reader can check at a glance.
type fact struct {
	outcome                               events.Outcome
	found, chainValid, hostnameValid, due bool
}

// TestTargets checks every target against the table of faults the lab
// promises, then against what a real resolver and handshake see.
func TestTargets(t *testing.T) {
	now := time.Now()
	l := startLab(t, Config{Now: func() time.Time { return now }})
	ok := fact{events.OutcomeOK, true, true, true, false}
	want := map[string][]fact{
		"valid":         {ok, ok},
		"expiring-soon": {{events.OutcomeOK, true, true, true, true}},
		"expired":       {{events.OutcomeOK, true, false, true, true}},
		"self-signed":   {{events.OutcomeOK, true, false, true, false}},
		"wrong-name":    {{events.OutcomeOK, true, true, false, false}},
		"multi-ip":      {ok, ok},
		"other-port":    {ok},
		"dead-ip":       {ok, {outcome: events.OutcomeConnectionRefused}},
		"legacy-tls":    {ok},
		"no-http":       {ok},
		"nxdomain":      {{outcome: events.OutcomeNXDomain}},
	}
	for _, r := range regNames {
		want["reg-"+r] = []fact{ok}
	}
	if !ipv6Available(context.Background()) {
		want["valid"] = want["valid"][:1]
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(l.RootsPEM()) {
		t.Fatalf("roots pem: no certificate in %q", l.RootsPEM())
	}
	var names []string
	mainPort := 0
	for _, tg := range l.Targets() {
		names = append(names, tg.Name)
		if tg.Name == "valid" {
			mainPort = tg.Port
		}
	}
	wantNames := []string{"valid", "expiring-soon", "expired", "self-signed", "wrong-name", "multi-ip", "other-port", "dead-ip",
		"legacy-tls", "no-http", "nxdomain"}
	for _, r := range regNames {
		wantNames = append(wantNames, "reg-"+r)
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("target names: got %v, want %v", names, wantNames)
	}

	for _, tg := range l.Targets() {
		t.Run(tg.Name, func(t *testing.T) {
			if got, want := tg.Domain, net.JoinHostPort(tg.Host, strconv.Itoa(tg.Port)); got != want {
				t.Errorf("domain: got %q, want %q", got, want)
			}
			wantHost := tg.Name + ".lab.certfleet.test"
			if r, ok := strings.CutPrefix(tg.Name, "reg-"); ok {
				wantHost = "certfleet-" + r + ".test"
				if r == "whois-only" {
					wantHost = "certfleet-whois-only.example"
				}
			}
			if got, want := tg.Host, wantHost; got != want {
				t.Errorf("host: got %q, want %q", got, want)
			}
			if onMain := tg.Port == mainPort; onMain == (tg.Name == "other-port") {
				t.Errorf("port: got %d with main port %d, want the main port for every target but other-port", tg.Port, mainPort)
			}
			var got []fact
			for _, x := range tg.Expect {
				got = append(got, fact{x.Outcome, x.CertificateFound, x.ChainValid, x.HostnameValid,
					x.CertificateFound && x.NotAfter.Sub(now) < 28*24*time.Hour})
			}
			if !slices.Equal(got, want[tg.Name]) {
				t.Errorf("declared facts: got %+v, want %+v", got, want[tg.Name])
			}
			for _, x := range tg.Expect {
				if x.Outcome != events.OutcomeOK {
					continue
				}
				gotHTTP := httpFact{x.HTTPStatus, x.HSTSMaxAge, x.HSTSIncludeSubdomains, strings.Join(x.LegacyTLS, ",")}
				if w := wantHTTP(tg.Name); gotHTTP != w {
					t.Errorf("%s: declared http facts: got %+v, want %+v", x.IP, gotHTTP, w)
				}
			}

			ips, rcode := resolve(t, l.ResolverAddr(), tg.Host)
			var wantIPs []string
			for _, x := range tg.Expect {
				if x.IP != "" {
					wantIPs = append(wantIPs, x.IP)
				}
			}
			slices.Sort(wantIPs)
			if !slices.Equal(ips, wantIPs) {
				t.Errorf("resolved: got %v, want %v", ips, wantIPs)
			}
			if wantRcode := map[bool]int{true: dns.RcodeNameError, false: dns.RcodeSuccess}[tg.Name == "nxdomain"]; rcode != wantRcode {
				t.Errorf("rcode: got %s, want %s", dns.RcodeToString[rcode], dns.RcodeToString[wantRcode])
			}
			for _, x := range tg.Expect {
				if x.IP == "" {
					continue
				}
				seen := scan(t, x.IP, tg.Host, tg.Port, pool, now)
				checkExpect(t, x.IP, seen, x)
			}
		})
	}
}

// httpFact is the HTTP and protocol part of an Expect.
type httpFact struct {
	status     int
	maxAge     int64
	includeSub bool
	legacy     string
}

// wantHTTP is what the lab promises about HTTP and old protocols: every
// endpoint answers 200 but no-http, only valid sends HSTS, only legacy-tls
// accepts TLS 1.1.
func wantHTTP(name string) httpFact {
	switch name {
	case "valid":
		return httpFact{200, 31536000, true, ""}
	case "legacy-tls":
		return httpFact{200, 0, false, "TLS 1.1"}
	case "no-http":
		return httpFact{}
	}
	return httpFact{200, 0, false, ""}
}

// scan sees an endpoint the way the agent is meant to: chain and hostname
// verified separately, then HEAD / and a handshake offering only TLS 1.0
// and 1.1, each with a plain standard library client.
func scan(t *testing.T, ip, host string, port int, pool *x509.CertPool, now time.Time) Expect {
	t.Helper()
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Expect{IP: ip, Outcome: events.OutcomeConnectionRefused}
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake %s: %v", addr, err)
	}
	certs := tc.ConnectionState().PeerCertificates
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now})
	sum := sha256.Sum256(leaf.Raw)
	x := Expect{
		IP: ip, Outcome: events.OutcomeOK, CertificateFound: true,
		ChainValid:    verr == nil,
		HostnameValid: leaf.VerifyHostname(host) == nil,
		NotAfter:      leaf.NotAfter,
		LeafSHA256:    hex.EncodeToString(sum[:]),
		Issuer:        leaf.Issuer.String(),
		SANs:          leaf.DNSNames,
	}

	for _, h2 := range []bool{true, false} {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{ServerName: host, InsecureSkipVerify: true},
			ForceAttemptHTTP2: h2,
			DisableKeepAlives: true,
		}}
		resp, err := client.Head("https://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/")
		if err != nil {
			x.HTTPStatus, x.HSTSMaxAge, x.HSTSIncludeSubdomains = 0, 0, false
			continue
		}
		resp.Body.Close()
		if wantMajor := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantMajor {
			t.Errorf("%s: got HTTP/%d, want HTTP/%d", addr, resp.ProtoMajor, wantMajor)
		}
		x.HTTPStatus = resp.StatusCode
		switch v := resp.Header.Get("Strict-Transport-Security"); v {
		case "":
		case HSTS:
			x.HSTSMaxAge, x.HSTSIncludeSubdomains = hstsMaxAge, true
		default:
			t.Errorf("%s: got Strict-Transport-Security %q, want none or %q", addr, v, HSTS)
		}
	}

	legacy, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{
		ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
	})
	if err == nil {
		x.LegacyTLS = []string{tls.VersionName(legacy.ConnectionState().Version)}
		legacy.Close()
	}
	return x
}

func checkExpect(t *testing.T, ip string, got, want Expect) {
	t.Helper()
	if got.Outcome != want.Outcome || got.CertificateFound != want.CertificateFound {
		t.Errorf("%s: outcome/certificate_found got %s/%v, want %s/%v", ip, got.Outcome, got.CertificateFound, want.Outcome, want.CertificateFound)
	}
	if got.ChainValid != want.ChainValid || got.HostnameValid != want.HostnameValid {
		t.Errorf("%s: chain_valid/hostname_valid got %v/%v, want %v/%v", ip, got.ChainValid, got.HostnameValid, want.ChainValid, want.HostnameValid)
	}
	if !got.NotAfter.Equal(want.NotAfter) {
		t.Errorf("%s: not_after got %s, want %s", ip, got.NotAfter, want.NotAfter)
	}
	if got.LeafSHA256 != want.LeafSHA256 {
		t.Errorf("%s: leaf sha256 got %s, want %s", ip, got.LeafSHA256, want.LeafSHA256)
	}
	if got.Issuer != want.Issuer {
		t.Errorf("%s: issuer got %q, want %q", ip, got.Issuer, want.Issuer)
	}
	if !slices.Equal(got.SANs, want.SANs) {
		t.Errorf("%s: sans got %v, want %v", ip, got.SANs, want.SANs)
	}
	if got.HTTPStatus != want.HTTPStatus || got.HSTSMaxAge != want.HSTSMaxAge || got.HSTSIncludeSubdomains != want.HSTSIncludeSubdomains {
		t.Errorf("%s: http status/hsts max-age/includeSubDomains got %d/%d/%v, want %d/%d/%v", ip,
			got.HTTPStatus, got.HSTSMaxAge, got.HSTSIncludeSubdomains, want.HTTPStatus, want.HSTSMaxAge, want.HSTSIncludeSubdomains)
	}
	if !slices.Equal(got.LegacyTLS, want.LegacyTLS) {
		t.Errorf("%s: legacy tls got %v, want %v", ip, got.LegacyTLS, want.LegacyTLS)
	}
}

// resolve asks the lab's server for A and AAAA over UDP and returns the
// sorted addresses and the A query's rcode.
func resolve(t *testing.T, server, host string) ([]string, int) {
	t.Helper()
	var ips []string
	rcode := -1
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r := query(t, "udp", server, host, qt)
		if rcode == -1 {
			rcode = r.Rcode
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				ips = append(ips, rr.A.String())
			case *dns.AAAA:
				ips = append(ips, rr.AAAA.String())
			}
		}
	}
	slices.Sort(ips)
	return ips, rcode
}

func query(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestDNS(t *testing.T) {
	l := startLab(t, Config{Zone: "Fleet.Example.TEST"})
	tests := []struct {
		name, qname string
		qtype       uint16
		network     string
		rcode       int
		answers     []string
		aa          bool
	}{
		{"a", "valid.fleet.example.test", dns.TypeA, "udp", dns.RcodeSuccess, []string{"127.0.0.10"}, true},
		{"a over tcp", "valid.fleet.example.test", dns.TypeA, "tcp", dns.RcodeSuccess, []string{"127.0.0.10"}, true},
		{"a mixed case", "VALID.Fleet.example.test", dns.TypeA, "udp", dns.RcodeSuccess, []string{"127.0.0.10"}, true},
		{"two a", "multi-ip.fleet.example.test", dns.TypeA, "udp", dns.RcodeSuccess, []string{"127.0.0.15", "127.0.0.16"}, true},
		{"dead ip listed", "dead-ip.fleet.example.test", dns.TypeA, "udp", dns.RcodeSuccess, []string{"127.0.0.18", "127.0.0.19"}, true},
		{"aaaa none", "expired.fleet.example.test", dns.TypeAAAA, "udp", dns.RcodeSuccess, nil, true},
		{"other type", "valid.fleet.example.test", dns.TypeMX, "udp", dns.RcodeSuccess, nil, true},
		{"nxdomain", "nxdomain.fleet.example.test", dns.TypeA, "udp", dns.RcodeNameError, nil, true},
		{"nxdomain deeper", "x.valid.fleet.example.test", dns.TypeAAAA, "tcp", dns.RcodeNameError, nil, true},
		{"apex", "fleet.example.test", dns.TypeA, "udp", dns.RcodeSuccess, nil, true},
		{"outside zone", "example.com", dns.TypeA, "udp", dns.RcodeRefused, nil, false},
		{"parent zone", "example.test", dns.TypeA, "tcp", dns.RcodeRefused, nil, false},
		{"registration", "certfleet-expiring.test", dns.TypeA, "udp", dns.RcodeSuccess, []string{"127.0.0.22"}, true},
		{"whois-only registration", "CERTFLEET-WHOIS-ONLY.example", dns.TypeA, "tcp", dns.RcodeSuccess, []string{"127.0.0.25"}, true},
		{"under a registration", "www.certfleet-expired.test", dns.TypeA, "udp", dns.RcodeNameError, nil, true},
		{"another registrable domain", "certfleet-other.test", dns.TypeA, "udp", dns.RcodeRefused, nil, false},
	}
	if ipv6Available(context.Background()) {
		tests = append(tests, struct {
			name, qname string
			qtype       uint16
			network     string
			rcode       int
			answers     []string
			aa          bool
		}{"aaaa", "valid.fleet.example.test", dns.TypeAAAA, "udp", dns.RcodeSuccess, []string{"::1"}, true})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := query(t, tc.network, l.ResolverAddr(), tc.qname, tc.qtype)
			if r.Rcode != tc.rcode {
				t.Errorf("rcode: got %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if r.Authoritative != tc.aa {
				t.Errorf("authoritative: got %v, want %v", r.Authoritative, tc.aa)
			}
			var got []string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				default:
					got = append(got, rr.String())
				}
			}
			if !slices.Equal(got, tc.answers) {
				t.Errorf("answers: got %v, want %v", got, tc.answers)
			}
		})
	}
}

// addrs are the TCP addresses the lab listens on (its dead address
// excluded) and its DNS address.
func addrs(l *Lab) []string {
	var out []string
	for _, tg := range l.Targets() {
		for _, x := range tg.Expect {
			if x.Outcome == events.OutcomeOK {
				out = append(out, net.JoinHostPort(x.IP, strconv.Itoa(tg.Port)))
			}
		}
	}
	return out
}

func TestCloseReleasesPorts(t *testing.T) {
	tests := []struct {
		name string
		stop func(l *Lab, cancel context.CancelFunc)
	}{
		{"close", func(l *Lab, _ context.CancelFunc) {
			if err := l.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}},
		{"context", func(l *Lab, cancel context.CancelFunc) {
			cancel()
			// Close after cancel waits for the shutdown cancel started.
			if err := l.Close(); err != nil {
				t.Errorf("close after cancel: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l, err := Start(ctx, Config{}, testenv.Logger(t))
			if err != nil {
				t.Fatalf("start lab: %v", err)
			}
			tcp, resolver := addrs(l), l.ResolverAddr()
			if len(tcp) < 10 {
				t.Fatalf("listening addresses: got %v, want at least 10", tcp)
			}
			tc.stop(l, cancel)
			for _, a := range tcp {
				ln, err := net.Listen("tcp", a)
				if err != nil {
					t.Errorf("listen %s after close: got %v, want the address free", a, err)
					continue
				}
				ln.Close()
			}
			ln, err := net.Listen("tcp", resolver)
			if err != nil {
				t.Errorf("listen tcp %s after close: got %v, want the address free", resolver, err)
			} else {
				ln.Close()
			}
			pc, err := net.ListenPacket("udp", resolver)
			if err != nil {
				t.Errorf("listen udp %s after close: got %v, want the address free", resolver, err)
			} else {
				pc.Close()
			}
		})
	}
}

func TestFixedPorts(t *testing.T) {
	port := testenv.FreePort(t)
	dnsPort := testenv.FreePort(t)
	l := startLab(t, Config{Port: port, DNSAddr: "127.0.0.1:" + strconv.Itoa(dnsPort)})
	for _, tg := range l.Targets() {
		want := port
		if tg.Name == "other-port" {
			// The next port is preferred, another one taken when it is busy.
			if tg.Port == port {
				t.Errorf("%s: port got %d, want another than the main port", tg.Name, tg.Port)
			}
			continue
		}
		if tg.Port != want {
			t.Errorf("%s: port got %d, want %d", tg.Name, tg.Port, want)
		}
	}
	if got, want := l.ResolverAddr(), "127.0.0.1:"+strconv.Itoa(dnsPort); got != want {
		t.Errorf("resolver: got %s, want %s", got, want)
	}
	// A second lab on the same port cannot start.
	if l2, err := Start(context.Background(), Config{Port: port}, testenv.Logger(t)); err == nil {
		l2.Close()
		t.Errorf("second lab on port %d: got no error, want a bind error", port)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		errs []string
	}{
		{"defaults", Config{}, nil},
		{"bad port", Config{Port: 70000}, []string{"port 70000"}},
		{"bad dns address", Config{DNSAddr: "localhost"}, []string{"dns address"}},
		{"bad zone and port", Config{Zone: "a..b", Port: -1}, []string{"zone", "port -1"}},
		{"bad registry addresses", Config{RDAPAddr: "x", WHOISAddr: "127.0.0.1:99999"}, []string{"rdap address", "whois address"}},
		{"bad upstream", Config{Forward: []string{"127.0.0.1:53", "10.0.0.1"}}, []string{`forward to "10.0.0.1"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			err := tc.cfg.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Errorf("got %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one mentioning %v", tc.errs)
			}
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("got %q, want it to mention %q", err, s)
				}
			}
		})
	}
}

func TestWriteEnv(t *testing.T) {
	l := startLab(t, Config{})
	dir := t.TempDir()
	envPath, rootsPath := filepath.Join(dir, "lab.env"), filepath.Join(dir, "roots.pem")
	if err := l.WriteEnv(envPath, rootsPath); err != nil {
		t.Fatalf("write env: %v", err)
	}
	roots, err := os.ReadFile(rootsPath)
	if err != nil {
		t.Fatalf("read roots: %v", err)
	}
	if string(roots) != string(l.RootsPEM()) {
		t.Errorf("roots: got %q, want %q", roots, l.RootsPEM())
	}
	var domains []string
	for _, tg := range l.Targets() {
		domains = append(domains, tg.Domain)
	}
	want := map[string]string{
		"CERTFLEET_RESOLVER":       l.ResolverAddr(),
		"CERTFLEET_EXTRA_ROOTS":    rootsPath,
		"CERTFLEET_ALLOW_TARGETS":  strings.Join(l.AllowTargets(), ","),
		"CERTFLEET_LAB_DOMAINS":    strings.Join(domains, " "),
		"CERTFLEET_RDAP_BOOTSTRAP": filepath.Join(dir, BootstrapFile),
		"CERTFLEET_WHOIS_SERVER":   "test=" + l.WHOISAddr() + ",example=" + l.WHOISAddr(),
	}
	// The file is for shells: source it and read the values back.
	script := ". " + envPath
	for k := range want {
		script += "; printf '%s=%s\\n' " + k + ` "$` + k + `"`
	}
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("source %s: %v", envPath, err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	if ds := strings.Fields(got["CERTFLEET_LAB_DOMAINS"]); len(ds) != 17 {
		t.Errorf("lab domains: got %d, want 17", len(ds))
	}
	boot, err := os.ReadFile(filepath.Join(dir, BootstrapFile))
	if err != nil {
		t.Fatalf("read bootstrap: %v", err)
	}
	if string(boot) != string(l.Bootstrap()) {
		t.Errorf("bootstrap file: got %q, want %q", boot, l.Bootstrap())
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:53", "127.0.0.1:53"},
		{"127.0.0.0/8,::1/128", "127.0.0.0/8,::1/128"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
		{"[::1]:53", "'[::1]:53'"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := shellQuote(tc.in); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test root", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatalf("new ca: %v", err)
	}
	leaf, err := ca.Issue("a.test", []string{"a.test", "127.0.0.1"}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	self, err := SelfSigned("a.test", []string{"a.test"}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatalf("self-signed: %v", err)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Leaf.Verify(opts); err != nil {
		t.Errorf("issued leaf: got %v, want it to verify", err)
	}
	if err := leaf.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("ip san: got %v, want 127.0.0.1 to match", err)
	}
	if _, err := self.Leaf.Verify(opts); err == nil {
		t.Errorf("self-signed leaf: got it verified, want an unknown authority")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM()) {
		t.Errorf("cert pem: got no certificate from %q", ca.CertPEM())
	}
	if got, want := leaf.Leaf.Issuer.CommonName, "test root"; got != want {
		t.Errorf("issuer: got %q, want %q", got, want)
	}
}

// TestGoResolver checks that Go's own resolver, which an agent may use,
// reads the lab's answers: addresses for a known name, not-found for the
// missing one.
func TestGoResolver(t *testing.T) {
	l := startLab(t, Config{})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, l.ResolverAddr())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tg := range l.Targets() {
		t.Run(tg.Name, func(t *testing.T) {
			addrs, err := r.LookupNetIP(ctx, "ip", tg.Host+".")
			if tg.Name == "nxdomain" {
				var dnsErr *net.DNSError
				if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
					t.Errorf("got %v, %v, want a not-found error", addrs, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("lookup %s: %v", tg.Host, err)
			}
			var got, want []string
			for _, a := range addrs {
				got = append(got, a.Unmap().String())
			}
			for _, x := range tg.Expect {
				want = append(want, x.IP)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}
