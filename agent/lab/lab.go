// Package lab serves a local fleet of TLS endpoints with known faults (valid,
// expiring soon, expired, self-signed, wrong name, several IPs with different
// certificates, a non-default port, a dead IP, a missing name, TLS 1.0-1.1
// still accepted, no HTTP after the handshake) under a throw-away CA, an
// authoritative DNS server for their names (forwarding other names when told
// where), and the RDAP and WHOIS servers of the lab's domain registrations
// (expiring, expired, RDAP-only, WHOIS-only, no expiry, rate-limited), all on
// loopback addresses. Every endpoint but no-http answers HTTP/2 and HTTP/1.1
// after the handshake; only valid sends HSTS. Each endpoint and registration
// comes with the facts a correct scan or lookup must report, so the demo
// (`certfleet lab`) shows real results and tests can compare what certfleet
// reports with what was served. With a Pebble binary it is also an ACME CA
// whose DNS-01 challenges the lab's DNS server takes by RFC 2136 update. It is for demos and tests only: nothing on a
// production path may depend on it.
package lab

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/dnszone"
	"github.com/certfleet/certfleet/internal/pebble"
)

// Config tells Start where the lab listens.
type Config struct {
	// Zone is the DNS zone the lab's fault targets live in; the lab's DNS
	// server is authoritative for it and for the domains of its
	// registrations.
	Zone string
	// Port is the TLS port of the main endpoints; 0 picks a port that is free
	// on every loopback address the lab binds.
	Port int
	// DNSAddr is the host:port the DNS server listens on, UDP and TCP.
	DNSAddr string
	// Forward are the DNS servers (host:port) asked for names outside the
	// lab, so an agent using the lab's resolver can also watch real
	// domains; empty refuses them. SystemResolvers reads the system's.
	Forward []string
	// RDAPAddr and WHOISAddr are the host:port of the lab's RDAP (HTTP)
	// and WHOIS servers.
	RDAPAddr, WHOISAddr string
	// Now is the reference time of every certificate's validity.
	Now func() time.Time
	// Pebble is the path of a Pebble binary (built from the tools module):
	// the lab then runs it as its ACME CA, resolving challenges with the
	// lab's DNS server, which takes RFC 2136 updates of TXT records in
	// the zone signed with the lab's TSIG key. Empty: no ACME CA.
	Pebble string
}

// DefaultZone is the zone of the lab's names unless Config.Zone says
// otherwise. .test is reserved (RFC 2606), so no real name is shadowed.
const DefaultZone = "lab.certfleet.test."

func (c *Config) setDefaults() {
	if c.Zone == "" {
		c.Zone = DefaultZone
	}
	c.Zone = dns.Fqdn(strings.ToLower(c.Zone))
	if c.DNSAddr == "" {
		c.DNSAddr = "127.0.0.1:0"
	}
	if c.RDAPAddr == "" {
		c.RDAPAddr = "127.0.0.1:0"
	}
	if c.WHOISAddr == "" {
		c.WHOISAddr = "127.0.0.1:0"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if _, ok := dns.IsDomainName(c.Zone); !ok || c.Zone == "." {
		errs = append(errs, fmt.Errorf("zone %q is not a domain name", c.Zone))
	}
	if c.Port < 0 || c.Port > 65534 {
		// 65535 is out because the second port defaults to Port+1.
		errs = append(errs, fmt.Errorf("port %d out of range 0-65534", c.Port))
	}
	for _, a := range []struct{ what, addr string }{{"dns address", c.DNSAddr}, {"rdap address", c.RDAPAddr}, {"whois address", c.WHOISAddr}} {
		if err := checkHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.what, a.addr, err))
		}
	}
	for _, f := range c.Forward {
		if err := checkHostPort(f); err != nil {
			errs = append(errs, fmt.Errorf("forward to %q: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// checkHostPort accepts host:port with a port 0-65535.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return errors.New("bad port")
	}
	return nil
}

// Target is one domain of the lab as a user registers it, with what a scan
// of every address it resolves to must report.
type Target struct {
	// Name says which fault the target shows: "valid", "expired", ...
	Name string
	// Domain is host:port as a user registers it.
	Domain string
	Host   string
	Port   int
	// Expect has one entry per address the host resolves to, or a single
	// entry with an empty IP when resolution itself fails.
	Expect []Expect
}

// Expect is what an agent that verifies the chain (against RootsPEM plus the
// system roots) and the hostname separately must report for one address.
type Expect struct {
	IP               string
	Outcome          events.Outcome
	CertificateFound bool
	ChainValid       bool
	HostnameValid    bool
	NotAfter         time.Time
	LeafSHA256       string // hex of the leaf's DER
	Issuer           string // the leaf's Issuer.String()
	SANs             []string
	// HTTPStatus is what HEAD / on the scanned connection answers; 0 for
	// an endpoint that does not speak HTTP.
	HTTPStatus int
	// HSTSMaxAge and HSTSIncludeSubdomains are what its
	// Strict-Transport-Security header says.
	HSTSMaxAge            int64
	HSTSIncludeSubdomains bool
	// LegacyTLS is the version a handshake offering only TLS 1.0 and 1.1
	// agrees on ("TLS 1.1"), nil when the endpoint refuses them.
	LegacyTLS []string
}

// HSTS is the Strict-Transport-Security header of the valid target.
const HSTS = "max-age=31536000; includeSubDomains"

// hstsMaxAge is HSTS's max-age.
const hstsMaxAge = 31536000

// Lab is a running fleet; Close stops it.
type Lab struct {
	logger   *zap.Logger
	cfg      Config
	ca       *CA
	targets  []Target
	allow    []netip.Prefix
	resolver string
	registry *registry

	listeners []net.Listener
	servers   []*http.Server
	dns       []*dns.Server
	acme      *dnszone.Zone  // TXT records and updates of the zone
	tsig      [2]string      // the zone's TSIG key name and secret
	pebble    *pebble.Server // nil without Config.Pebble
	pebbleDir string

	stopWatch func() bool // guarded by stopMu: the AfterFunc may fire before Start sets it
	stopMu    sync.Mutex
	cancel    context.CancelFunc // ends handshakes in flight
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Addresses of the lab. Every lab uses the same addresses and tells its
// endpoints apart from other labs' by port, so labs in parallel test
// binaries do not collide. The dead address never has a listener.
var (
	ipValid    = netip.MustParseAddr("127.0.0.10")
	ipExpiring = netip.MustParseAddr("127.0.0.11")
	ipExpired  = netip.MustParseAddr("127.0.0.12")
	ipSelf     = netip.MustParseAddr("127.0.0.13")
	ipWrong    = netip.MustParseAddr("127.0.0.14")
	ipMultiA   = netip.MustParseAddr("127.0.0.15")
	ipMultiB   = netip.MustParseAddr("127.0.0.16")
	ipOther    = netip.MustParseAddr("127.0.0.17")
	ipDeadLive = netip.MustParseAddr("127.0.0.18")
	ipDead     = netip.MustParseAddr("127.0.0.19")
	ipLegacy   = netip.MustParseAddr("127.0.0.20")
	ipNoHTTP   = netip.MustParseAddr("127.0.0.21")
	ipV6       = netip.IPv6Loopback()
)

// site is one listening address and the certificate it serves.
type site struct {
	ip    netip.Addr
	other bool // on the second port rather than the main one
	cert  tls.Certificate
	// facts declared for this certificate, checked by the tests with a
	// real verifier rather than derived here from one.
	chainValid, hostnameValid bool
	// hsts sends the HSTS header; noHTTP hangs up after the handshake;
	// legacy accepts TLS 1.0 and 1.1 besides 1.2 and 1.3.
	hsts, noHTTP, legacy bool
}

// plan is a target before its ports are known.
type plan struct {
	name     string
	host     string // name.zone unless set
	sites    []site
	dead     []netip.Addr
	other    bool
	nxdomain bool
}

// bindAttempts bounds the search for a port free on every address.
const bindAttempts = 20

// Start mints the certificates, binds every endpoint and the DNS server and
// serves them until Close or until ctx is done.
func Start(ctx context.Context, cfg Config, logger *zap.Logger) (*Lab, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	l := &Lab{logger: logger.Named("lab"), cfg: cfg}
	plans, err := l.mint(cfg.Now())
	if err != nil {
		return nil, err
	}
	if !ipv6Available(ctx) {
		l.logger.Warn("no ipv6 loopback, serving without it", zap.String("ip", ipV6.String()))
		for i := range plans {
			plans[i].sites = slices.DeleteFunc(plans[i].sites, func(s site) bool { return s.ip.Is6() })
		}
	}
	var sites []site
	for _, p := range plans {
		sites = append(sites, p.sites...)
	}
	port, other, err := l.bind(ctx, sites)
	if err != nil {
		return nil, err
	}
	l.targets = l.expectations(plans, port, other)
	records := map[string][]netip.Addr{}
	for _, p := range plans {
		if p.nxdomain {
			continue
		}
		host := dns.Fqdn(l.hostOf(p))
		for _, s := range p.sites {
			records[host] = append(records[host], s.ip)
		}
		records[host] = append(records[host], p.dead...)
	}
	l.allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if slices.ContainsFunc(sites, func(s site) bool { return s.ip.Is6() }) {
		l.allow = append(l.allow, netip.MustParsePrefix("::1/128"))
	}
	zones := []string{cfg.Zone}
	for _, r := range l.registry.list {
		if r.ip.IsValid() {
			zones = append(zones, dns.Fqdn(r.reg.Domain))
		}
	}
	if err := l.startDNS(ctx, zones, records); err != nil {
		l.closeListeners()
		return nil, err
	}
	if cfg.Pebble != "" {
		if err := l.startPebble(); err != nil {
			l.closeListeners()
			return nil, errors.Join(err, l.stopDNS())
		}
	}

	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	for i, ln := range l.listeners {
		st := sites[i]
		cfg := &tls.Config{
			Certificates: []tls.Certificate{st.cert},
			// Every scan should be a full handshake, and the server saves
			// writing tickets nobody redeems.
			SessionTicketsDisabled: true,
		}
		if st.legacy {
			cfg.MinVersion = tls.VersionTLS10
		}
		if st.noHTTP {
			l.wg.Go(func() { l.serve(serveCtx, ln, cfg) })
			continue
		}
		srv := l.httpServer(serveCtx, st, cfg)
		l.servers = append(l.servers, srv)
		l.wg.Go(func() {
			if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
				l.logger.Warn("https endpoint stopped", zap.String("addr", ln.Addr().String()), zap.Error(err))
			}
		})
	}
	if err := l.startRegistry(serveCtx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	l.stopMu.Lock()
	l.stopWatch = context.AfterFunc(ctx, func() { _ = l.Close() })
	l.stopMu.Unlock()
	l.logger.Info("lab started", zap.String("acme_directory", l.ACMEDirectory()), zap.Int("port", port), zap.Int("other_port", other),
		zap.String("resolver", l.resolver), zap.Strings("forward", l.cfg.Forward), zap.String("zone", cfg.Zone),
		zap.Int("targets", len(l.targets)), zap.String("rdap", l.registry.rdapURL), zap.String("whois", l.registry.whoisAddr))
	return l, nil
}

// mint creates the CA and every endpoint's certificate, valid relative to now.
func (l *Lab) mint(now time.Time) ([]plan, error) {
	now = now.UTC().Truncate(time.Second)
	day := 24 * time.Hour
	ca, err := NewCA("certfleet lab root CA", now.Add(-24*time.Hour), now.Add(10*365*day))
	if err != nil {
		return nil, err
	}
	l.ca = ca
	zone := strings.TrimSuffix(l.cfg.Zone, ".")
	host := func(name string) string { return name + "." + zone }
	var errs []error
	leaf := func(name string, notBefore, notAfter time.Time) tls.Certificate {
		c, err := ca.Issue(name, []string{name}, notBefore, notAfter)
		errs = append(errs, err)
		return c
	}
	ok := func(ip netip.Addr, c tls.Certificate) site {
		return site{ip: ip, cert: c, chainValid: true, hostnameValid: true}
	}
	hsts := func(s site) site { s.hsts = true; return s }
	legacy := func(s site) site { s.legacy = true; return s }
	noHTTP := func(s site) site { s.noHTTP = true; return s }
	start := now.Add(-time.Hour)
	valid := leaf(host("valid"), start, now.Add(90*day))
	self, err := SelfSigned(host("self-signed"), []string{host("self-signed")}, start, now.Add(90*day))
	errs = append(errs, err)
	plans := []plan{
		{name: "valid", sites: []site{hsts(ok(ipValid, valid)), hsts(ok(ipV6, valid))}},
		{name: "expiring-soon", sites: []site{ok(ipExpiring, leaf(host("expiring-soon"), start, now.Add(10*day)))}},
		{name: "expired", sites: []site{{ip: ipExpired, cert: leaf(host("expired"), now.Add(-100*day), now.Add(-day)), hostnameValid: true}}},
		{name: "self-signed", sites: []site{{ip: ipSelf, cert: self, hostnameValid: true}}},
		{name: "wrong-name", sites: []site{{ip: ipWrong, cert: leaf(host("other-name"), start, now.Add(90*day)), chainValid: true}}},
		{name: "multi-ip", sites: []site{
			ok(ipMultiA, leaf(host("multi-ip"), start, now.Add(90*day))),
			ok(ipMultiB, leaf(host("multi-ip"), start, now.Add(60*day))),
		}},
		{name: "other-port", other: true, sites: []site{{ip: ipOther, other: true, cert: leaf(host("other-port"), start, now.Add(90*day)), chainValid: true, hostnameValid: true}}},
		{name: "dead-ip", sites: []site{ok(ipDeadLive, leaf(host("dead-ip"), start, now.Add(90*day)))}, dead: []netip.Addr{ipDead}},
		{name: "legacy-tls", sites: []site{legacy(ok(ipLegacy, leaf(host("legacy-tls"), start, now.Add(90*day))))}},
		{name: "no-http", sites: []site{noHTTP(ok(ipNoHTTP, leaf(host("no-http"), start, now.Add(90*day))))}},
		{name: "nxdomain", nxdomain: true},
	}
	recs := registrations(l.cfg.Zone, now)
	l.registry = &registry{logger: l.logger.Named("registry"), records: map[string]*record{}, now: time.Now,
		published: now, retryAt: map[string]time.Time{}}
	for i := range recs {
		r := &recs[i]
		l.registry.records[r.reg.Domain] = r
		l.registry.list = append(l.registry.list, r)
		if r.ip.IsValid() {
			plans = append(plans, plan{name: "reg-" + r.reg.Name, host: r.reg.Host,
				sites: []site{ok(r.ip, leaf(r.reg.Host, start, now.Add(90*day)))}})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mint lab certificates: %w", err)
	}
	return plans, nil
}

// ipv6Available tells whether ::1 can be bound here; containers often
// run without IPv6.
func ipv6Available(ctx context.Context) bool {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(ipV6, 0).String())
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// bind listens on every site: the main ones on one port, free on all their
// addresses, the others on a second port. With a fixed main port the second
// one is the next port when that is free, so the lab's domains stay the same
// from run to run.
func (l *Lab) bind(ctx context.Context, sites []site) (port, other int, err error) {
	var lc net.ListenConfig
	for attempt := 0; attempt < bindAttempts; attempt++ {
		port, other = l.cfg.Port, 0
		if port != 0 {
			other = port + 1
		}
		var lns []net.Listener
		fail := func(e error) {
			for _, ln := range lns {
				_ = ln.Close()
			}
			err = e
		}
		for _, s := range sites {
			p := port
			if s.other {
				p = other
			}
			ln, e := lc.Listen(ctx, "tcp", netip.AddrPortFrom(s.ip, uint16(p)).String())
			if e != nil && s.other && p != 0 {
				// The next port is only a preference.
				ln, e = lc.Listen(ctx, "tcp", netip.AddrPortFrom(s.ip, 0).String())
			}
			if e != nil {
				fail(fmt.Errorf("listen %s: %w", netip.AddrPortFrom(s.ip, uint16(p)), e))
				break
			}
			lns = append(lns, ln)
			got := ln.Addr().(*net.TCPAddr).Port
			switch {
			case !s.other && port == 0:
				port = got
			case s.other:
				other = got
			}
			if s.other && other == port {
				fail(fmt.Errorf("second port %d is the main port", other))
				break
			}
		}
		if len(lns) == len(sites) {
			l.listeners = lns
			return port, other, nil
		}
		if l.cfg.Port != 0 || ctx.Err() != nil {
			break
		}
		l.logger.Debug("port not free everywhere, retrying", zap.Int("attempt", attempt), zap.Error(err))
	}
	return 0, 0, fmt.Errorf("bind lab endpoints: %w", err)
}

// hostOf is a plan's host name, without the final dot.
func (l *Lab) hostOf(p plan) string {
	if p.host != "" {
		return p.host
	}
	return p.name + "." + strings.TrimSuffix(l.cfg.Zone, ".")
}

// expectations states what a scan of each target must report.
func (l *Lab) expectations(plans []plan, port, other int) []Target {
	var out []Target
	for _, p := range plans {
		t := Target{Name: p.name, Host: l.hostOf(p), Port: port}
		if p.other {
			t.Port = other
		}
		t.Domain = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
		if p.nxdomain {
			t.Expect = []Expect{{Outcome: events.OutcomeNXDomain}}
		}
		for _, s := range p.sites {
			leaf := s.cert.Leaf
			sum := sha256.Sum256(leaf.Raw)
			x := Expect{
				IP:               s.ip.String(),
				Outcome:          events.OutcomeOK,
				CertificateFound: true,
				ChainValid:       s.chainValid,
				HostnameValid:    s.hostnameValid,
				NotAfter:         leaf.NotAfter.UTC().Truncate(time.Second),
				LeafSHA256:       hex.EncodeToString(sum[:]),
				Issuer:           leaf.Issuer.String(),
				SANs:             slices.Clone(leaf.DNSNames),
			}
			if !s.noHTTP {
				x.HTTPStatus = http.StatusOK
			}
			if s.hsts {
				x.HSTSMaxAge, x.HSTSIncludeSubdomains = hstsMaxAge, true
			}
			if s.legacy {
				// The highest version offered: the probe offers 1.0 and 1.1.
				x.LegacyTLS = []string{"TLS 1.1"}
			}
			t.Expect = append(t.Expect, x)
		}
		for _, ip := range p.dead {
			t.Expect = append(t.Expect, Expect{IP: ip.String(), Outcome: events.OutcomeConnectionRefused})
		}
		out = append(out, t)
	}
	return out
}

// httpServer answers HTTP/2 and HTTP/1.1 on a site after the handshake:
// 200 with a line naming the endpoint, and HSTS where the site has it.
func (l *Lab) httpServer(ctx context.Context, st site, cfg *tls.Config) *http.Server {
	name := st.cert.Leaf.Subject.CommonName
	// Failed handshakes are what some scans are about: debug, not noise.
	errorLog, _ := zap.NewStdLogAt(l.logger, zap.DebugLevel)
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if st.hsts {
				w.Header().Set("Strict-Transport-Security", HSTS)
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "certfleet lab: %s\n", name)
		}),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          errorLog,
	}
}

// serve completes a handshake with every client and hangs up: the lab's
// no-http endpoint.
func (l *Lab) serve(ctx context.Context, ln net.Listener, cfg *tls.Config) {
	logger := l.logger.With(zap.String("addr", ln.Addr().String()))
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: pause instead of spinning.
			logger.Warn("accept failed", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.wg.Go(func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				logger.Debug("handshake failed", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
				return
			}
			_ = tc.Close()
		})
	}
}

// Close stops every listener and the DNS server and waits until their
// goroutines have returned. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.stopMu.Lock()
		if l.stopWatch != nil {
			l.stopWatch()
		}
		l.stopMu.Unlock()
		l.cancel()
		for _, srv := range l.servers {
			_ = srv.Close()
		}
		l.closeListeners()
		l.closeErr = l.stopDNS()
		if l.pebble != nil {
			l.pebble.Stop()
			_ = os.RemoveAll(l.pebbleDir)
		}
		l.wg.Wait()
		l.logger.Info("lab stopped")
	})
	return l.closeErr
}

func (l *Lab) closeListeners() {
	for _, ln := range l.listeners {
		_ = ln.Close()
	}
}

// ResolverAddr is the host:port of the lab's DNS server (UDP and TCP).
func (l *Lab) ResolverAddr() string { return l.resolver }

// RootsPEM is the lab's root certificate, PEM; a verifier that trusts it
// sees the lab's chains as valid.
func (l *Lab) RootsPEM() []byte { return l.ca.CertPEM() }

// AllowTargets are the CIDRs an agent must be allowed to dial to reach the
// lab, as --allow-targets takes them.
func (l *Lab) AllowTargets() []string {
	out := make([]string, len(l.allow))
	for i, p := range l.allow {
		out[i] = p.String()
	}
	return out
}

// AllowPrefixes are AllowTargets as an agent's ScannerConfig.Allow takes
// them.
func (l *Lab) AllowPrefixes() []netip.Prefix { return slices.Clone(l.allow) }

// Targets are the lab's domains with what a scan of each must report, in a
// fixed order.
func (l *Lab) Targets() []Target {
	out := make([]Target, len(l.targets))
	for i, t := range l.targets {
		t.Expect = slices.Clone(t.Expect)
		for j := range t.Expect {
			t.Expect[j].SANs = slices.Clone(t.Expect[j].SANs)
		}
		out[i] = t
	}
	return out
}
