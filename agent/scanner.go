package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
)

// maxHandshakeBytes caps what a server may send before the handshake ends.
// Real chains are a few KiB; the cap stops a hostile server from making the
// agent buffer without end.
const maxHandshakeBytes = 256 << 10

// resolvConf is where the system resolver is read from when none is set.
const resolvConf = "/etc/resolv.conf"

// alpn is what a browser offers.
var alpn = []string{"h2", "http/1.1"}

// classicCurves are crypto/tls's default key exchange groups without the
// post-quantum hybrid X25519MLKEM768. The scan records nothing about the
// key exchange, and the hybrid's 1 KiB key share costs both ends about a
// third of a handshake's CPU (see BenchmarkHandshakes/scanner-pq). Listing
// the hybrid even last is no help: servers that support it ask for it
// (HelloRetryRequest). A server that accepted only post-quantum groups would
// show a handshake-failure; none is known today.
var classicCurves = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// ScannerConfig configures a Scanner.
type ScannerConfig struct {
	// Resolver is the DNS server (host:port) asked for A and AAAA records.
	// Empty means the first nameserver of /etc/resolv.conf.
	Resolver string
	// ExtraRootsPEM are roots trusted besides the system pool when the chain
	// is verified (PEM, one or more certificates).
	ExtraRootsPEM []byte
	// Allow lists the special ranges (loopback, private...) that may be
	// scanned; see guard.Policy.
	Allow []netip.Prefix
	// DNSTimeout bounds the resolution of one name (both queries). Default 5s.
	DNSTimeout time.Duration
	// ConnectTimeout bounds the TCP connect to one IP. Default 5s.
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake with one IP. Default 10s.
	HandshakeTimeout time.Duration
	// HTTPTimeout bounds the HEAD / sent over the scan's TLS connection
	// after the handshake, for the HTTP status and HSTS. Default 3s.
	HTTPTimeout time.Duration
	// CheckLegacyTLS turns on a second handshake per IP offering only TLS
	// 1.0 and 1.1, to find servers that still accept them. Nil means true.
	CheckLegacyTLS *bool
	// MaxConcurrentHandshakes bounds the IPs scanned at once over all scans
	// of the Scanner; the scan of one IP keeps one connection open at a
	// time. The slots are shared fairly between tenants (see fairSlots).
	// Default 64.
	MaxConcurrentHandshakes int
	// MaxHandshakesPerJob bounds the IPs of one scan handled at once, so one
	// domain with many addresses cannot take every slot. Default 8.
	MaxHandshakesPerJob int
	// MaxIPsPerDomain bounds the addresses scanned for one domain: the
	// lowest ones in address order are scanned (the same ones every time),
	// the rest only counted in Report.Skipped. Default 32.
	MaxIPsPerDomain int
	// JobTimeout bounds one Scan, resolution and every handshake together;
	// the addresses not done by then are reported as timeout with detail
	// "job-deadline". Default 60s.
	JobTimeout time.Duration
}

// detailJobDeadline is the detail of an address cut off by JobTimeout.
const detailJobDeadline = "job-deadline"

func (c *ScannerConfig) setDefaults() {
	if c.DNSTimeout == 0 {
		c.DNSTimeout = 5 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.HTTPTimeout == 0 {
		c.HTTPTimeout = 3 * time.Second
	}
	if c.CheckLegacyTLS == nil {
		c.CheckLegacyTLS = new(true)
	}
	if c.MaxConcurrentHandshakes == 0 {
		c.MaxConcurrentHandshakes = 64
	}
	if c.MaxHandshakesPerJob == 0 {
		c.MaxHandshakesPerJob = 8
	}
	if c.MaxIPsPerDomain == 0 {
		c.MaxIPsPerDomain = 32
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = time.Minute
	}
}

// Validate reports every problem of the configuration.
func (c ScannerConfig) Validate() error {
	var errs []error
	if c.Resolver != "" {
		if _, _, err := net.SplitHostPort(c.Resolver); err != nil {
			errs = append(errs, fmt.Errorf("resolver %q must be host:port: %w", c.Resolver, err))
		}
	}
	if c.DNSTimeout < 0 || c.ConnectTimeout < 0 || c.HandshakeTimeout < 0 || c.HTTPTimeout < 0 || c.JobTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"max concurrent handshakes", c.MaxConcurrentHandshakes},
		{"max handshakes per job", c.MaxHandshakesPerJob},
		{"max ips per domain", c.MaxIPsPerDomain},
	} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", n.name, n.v))
		}
	}
	if len(c.ExtraRootsPEM) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.ExtraRootsPEM) {
		errs = append(errs, errors.New("extra roots hold no PEM certificate"))
	}
	return errors.Join(errs...)
}

// Scanner resolves a domain and does one TLS handshake with each of its
// addresses, the way a browser would, recording what the server presented
// even when it does not verify; on that connection it sends HEAD / for the
// HTTP status and HSTS, and then it tries a second handshake offering only
// TLS 1.0 and 1.1 (unless CheckLegacyTLS is off).
type Scanner struct {
	cfg      ScannerConfig
	logger   *zap.Logger
	resolver string
	udp, tcp *dns.Client
	dialer   *guard.Dialer
	// roots is built once: the system pool is large, and rebuilding it per
	// handshake would cost more than the handshake.
	roots *x509.CertPool
	// slots bounds the handshakes in flight over every Scan and shares
	// them between tenants.
	slots *fairSlots
	// curves are the key exchange groups offered; nil means crypto/tls's
	// defaults (the benchmark compares both).
	curves []tls.CurveID
	// http sends the HEAD requests over the scanned connections.
	http *http.Transport
	// skipHTTP is set only by the benchmark that compares one handshake
	// with one handshake.
	skipHTTP bool
}

// NewScanner checks cfg, loads the roots and finds the resolver.
func NewScanner(cfg ScannerConfig, logger *zap.Logger) (*Scanner, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scanner config: %w", err)
	}
	resolver := cfg.Resolver
	if resolver == "" {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("read system resolver: %w", err)
		}
		if len(cc.Servers) == 0 {
			return nil, fmt.Errorf("read system resolver: no nameserver in %s", resolvConf)
		}
		resolver = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		// A host without a CA bundle still scans; only extra roots verify.
		logger.Warn("no system roots, verifying against extra roots only", zap.Error(err))
		roots = x509.NewCertPool()
	}
	if len(cfg.ExtraRootsPEM) > 0 {
		roots.AppendCertsFromPEM(cfg.ExtraRootsPEM)
	}
	return &Scanner{
		cfg:      cfg,
		logger:   logger.Named("scanner"),
		resolver: resolver,
		udp:      &dns.Client{Net: "udp", UDPSize: 1232},
		tcp:      &dns.Client{Net: "tcp"},
		dialer:   &guard.Dialer{Policy: guard.Policy{Allow: cfg.Allow}, Timeout: cfg.ConnectTimeout},
		roots:    roots,
		slots:    newFairSlots(cfg.MaxConcurrentHandshakes),
		curves:   classicCurves,
		http:     newHTTPTransport(),
	}, nil
}

// Target is what one Scan scans: a domain (or IP literal) and port, and
// the tenant whose job it is, which the handshake slots are shared by.
type Target struct {
	Tenant string
	Host   string
	Port   int
}

// Report is what one Scan found.
type Report struct {
	// Results holds one result per scanned address, ordered by address, or
	// a single result with an empty IP when resolution failed or found
	// nothing.
	Results []events.IPResult
	// Skipped counts the addresses beyond MaxIPsPerDomain, not scanned.
	Skipped int
}

// Scan resolves t.Host and scans up to MaxIPsPerDomain of its addresses on
// t.Port, MaxHandshakesPerJob at a time, all within JobTimeout. An IP
// literal as host is scanned without DNS.
func (s *Scanner) Scan(ctx context.Context, t Target) Report {
	if t.Port < 1 || t.Port > 65535 {
		countOutcome(events.OutcomeInternalError)
		return Report{Results: []events.IPResult{{Outcome: events.OutcomeInternalError, Detail: "bad-port"}}}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.JobTimeout)
	defer cancel()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(t.Host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		res := s.resolve(ctx, t.Host)
		if res.outcome != events.OutcomeOK {
			countOutcome(res.outcome)
			return Report{Results: []events.IPResult{{Outcome: res.outcome, Detail: res.detail}}}
		}
		if len(res.addrs) == 0 {
			countOutcome(events.OutcomeNoAddresses)
			return Report{Results: []events.IPResult{{Outcome: events.OutcomeNoAddresses}}}
		}
		addrs = res.addrs
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	var rep Report
	if len(addrs) > s.cfg.MaxIPsPerDomain {
		rep.Skipped = len(addrs) - s.cfg.MaxIPsPerDomain
		addrs = addrs[:s.cfg.MaxIPsPerDomain]
		ipsSkippedTotal.Add(float64(rep.Skipped))
	}

	rep.Results = make([]events.IPResult, len(addrs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(addrs), s.cfg.MaxHandshakesPerJob) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(addrs) {
					return
				}
				rep.Results[i] = s.scanIP(ctx, t, addrs[i])
			}
		})
	}
	wg.Wait()
	return rep
}

// scanIP does one handshake with ip, within a handshake slot of t's tenant.
func (s *Scanner) scanIP(ctx context.Context, t Target, ip netip.Addr) (r events.IPResult) {
	r.IP = ip.String()
	defer func() {
		if r.Outcome != events.OutcomeOK && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// Whatever this address was doing, the job's deadline ended it.
			r.Outcome, r.Detail = events.OutcomeTimeout, detailJobDeadline
		}
		countOutcome(r.Outcome)
	}()
	if err := s.dialer.Policy.Check(ip); err != nil {
		r.Outcome, r.Detail = classify(phaseConnect, err)
		return r
	}
	if err := s.slots.acquire(ctx, t.Tenant); err != nil {
		r.Outcome, r.Detail = classify(phaseConnect, err)
		return r
	}
	defer s.slots.release(t.Tenant)
	s.handshake(ctx, t.Host, t.Port, ip, &r)
	if *s.cfg.CheckLegacyTLS && legacyWorthTrying(r.Outcome) {
		s.probeLegacy(ctx, t.Host, t.Port, ip, &r)
	}
	return r
}

// handshake does the scan's handshake and, when it shows a certificate,
// the HTTP probe on the same connection.
func (s *Scanner) handshake(ctx context.Context, host string, port int, ip netip.Addr, r *events.IPResult) {
	var t timing
	conn, lc, phase, err := s.dialTLS(ctx, ip, port, &tls.Config{
		ServerName: host,
		// The certificate is recorded whatever it is; it is verified below,
		// chain and hostname apart, which crypto/tls cannot report.
		InsecureSkipVerify: true,
		NextProtos:         alpn,
		MinVersion:         tls.VersionTLS12,
		MaxVersion:         tls.VersionTLS13,
		CurvePreferences:   s.curves,
	}, &t)
	r.ConnectMS, r.HandshakeMS = t.connect.Milliseconds(), t.handshake.Milliseconds()
	if err != nil {
		r.Outcome, r.Detail = classify(phase, err)
		return
	}
	defer conn.Close()
	handshakeSeconds.Observe(t.handshake.Seconds())
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		r.Outcome, r.Detail = events.OutcomeHandshakeError, "no-certificate"
		return
	}
	if len(state.PeerCertificates) > events.MaxChainLength {
		// A chain longer than any real one (and than chain_length holds):
		// reported as such rather than as a result the stores would refuse.
		r.Outcome, r.Detail = events.OutcomeHandshakeError, "chain-too-long"
		return
	}
	r.Outcome = events.OutcomeOK
	r.TLSVersion = tls.VersionName(state.Version)
	r.CipherSuite = tls.CipherSuiteName(state.CipherSuite)
	s.describe(host, state.PeerCertificates, r)
	if !s.skipHTTP {
		s.probeHTTP(ctx, conn, lc, host, port, r)
	}
}

// timing is how long a connection took to set up.
type timing struct{ connect, handshake time.Duration }

// dialTLS connects to ip:port through the guarded dialer and completes a
// TLS handshake with cfg within the Scanner's deadlines, reading at most
// maxHandshakeBytes. On failure the connection is closed and phase says
// where err came from. t, when not nil, receives the durations of both
// steps, also on failure.
func (s *Scanner) dialTLS(ctx context.Context, ip netip.Addr, port int, cfg *tls.Config, t *timing) (*tls.Conn, *limitConn, string, error) {
	if t == nil {
		t = new(timing)
	}
	start := time.Now()
	raw, err := s.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, uint16(port)).String())
	t.connect = time.Since(start)
	if err != nil {
		return nil, nil, phaseConnect, err
	}
	lc := &limitConn{Conn: raw, left: maxHandshakeBytes}
	conn := tls.Client(lc, cfg)
	hsStart := time.Now()
	_ = raw.SetDeadline(hsStart.Add(s.cfg.HandshakeTimeout))
	err = conn.HandshakeContext(ctx)
	t.handshake = time.Since(hsStart)
	if err != nil {
		_ = conn.Close()
		return nil, nil, phaseHandshake, err
	}
	return conn, lc, phaseHandshake, nil
}

// describe records the leaf's facts and verifies chain and hostname apart.
func (s *Scanner) describe(host string, certs []*x509.Certificate, r *events.IPResult) {
	leaf := certs[0]
	sum := sha256.Sum256(leaf.Raw)
	r.CertificateFound = true
	r.Subject = leaf.Subject.String()
	r.Issuer = leaf.Issuer.String()
	r.SANs = sans(leaf)
	r.Serial = leaf.SerialNumber.Text(16)
	r.NotBefore = leaf.NotBefore.UTC()
	r.NotAfter = leaf.NotAfter.UTC()
	r.LeafSHA256 = hex.EncodeToString(sum[:])
	r.KeyType, r.KeyBits = keyOf(leaf)
	r.SignatureAlgorithm = leaf.SignatureAlgorithm.String()
	r.ChainLength = len(certs)

	now := time.Now()
	opts := x509.VerifyOptions{Roots: s.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		r.Detail = verifyDetail(err, leaf, now)
	} else {
		r.ChainValid = true
	}
	if err := leaf.VerifyHostname(host); err == nil {
		r.HostnameValid = true
	} else if r.Detail == "" {
		r.Detail = "hostname-mismatch"
	}
}

func sans(c *x509.Certificate) []string {
	if len(c.DNSNames)+len(c.IPAddresses) == 0 {
		return nil
	}
	out := make([]string, 0, len(c.DNSNames)+len(c.IPAddresses))
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

func keyOf(c *x509.Certificate) (string, int) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen()
	case *ecdsa.PublicKey:
		return "ECDSA", k.Curve.Params().BitSize
	case ed25519.PublicKey:
		return "Ed25519", 256
	}
	return c.PublicKeyAlgorithm.String(), 0
}

// limitConn fails reads once the server sent more than left bytes.
type limitConn struct {
	net.Conn
	left int
}

func (c *limitConn) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errTooLarge
	}
	if len(b) > c.left {
		b = b[:c.left]
	}
	n, err := c.Conn.Read(b)
	c.left -= n
	return n, err
}
