// Package guard decides which addresses certfleet may connect to, and is
// the one dialer every outbound connection to a tenant-supplied name goes
// through: scans, notification endpoints (webhook, Slack, a channel's SMTP
// server), registry redirects and referrals (RDAP, WHOIS) and, later, DNS
// provider endpoints. Each kind of traffic has its own allow-list, set by
// the operator (--allow-targets, --allow-webhook-targets,
// --allow-dns-targets). Tenants type these names; without the guard a
// tenant could point one at the service's own network (loopback, private
// ranges, cloud metadata services) and read what answers there. The guard
// checks resolved IP literals only, and checks again the address the
// socket actually connects to, so a DNS answer that changes between two
// lookups (rebinding) cannot slip past it. A server the operator named
// (an RDAP bootstrap server, a --whois-server) is dialed with DialTrusted:
// its own addresses are allowed, what it points to is checked.
package guard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Reasons a target is refused: a fixed vocabulary, used as the scan result's
// detail.
const (
	ReasonInvalid       = "invalid"
	ReasonUnspecified   = "unspecified"
	ReasonLoopback      = "loopback"
	ReasonPrivate       = "private"
	ReasonLinkLocal     = "link-local"
	ReasonCGNAT         = "cgnat"
	ReasonMulticast     = "multicast"
	ReasonBroadcast     = "broadcast"
	ReasonReserved      = "reserved"
	ReasonCloudMetadata = "cloud-metadata"
)

// BlockedError is returned when the policy refuses an address.
type BlockedError struct {
	// IP is the refused address, unmapped when it was IPv4 in IPv6.
	IP netip.Addr
	// Reason is one of the Reason* constants.
	Reason string
}

func (e *BlockedError) Error() string {
	if !e.IP.IsValid() {
		return "target refused: a numeric host that is not a valid IP address"
	}
	return fmt.Sprintf("target %s refused: %s address", e.IP, e.Reason)
}

// ParseAllow parses operator-allowed ranges: CIDRs, or bare IPs which stand
// for a single address (/32, /128). IPv4-mapped IPv6 prefixes are turned
// into IPv4 ones, because Check unmaps the addresses it compares.
func ParseAllow(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	var errs []error
	for _, raw := range cidrs {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			p, err = netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("allowed target %q is not a CIDR or IP address", raw))
				continue
			}
		} else {
			ip, err := netip.ParseAddr(s)
			if err != nil || ip.Zone() != "" {
				errs = append(errs, fmt.Errorf("allowed target %q is not a CIDR or IP address", raw))
				continue
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Policy says which addresses may be dialed: every public unicast address,
// plus the special ranges an operator allowed.
type Policy struct {
	// Allow lists ranges that are dialed although they are special
	// (loopback, private, ...). Cloud metadata addresses are only dialed
	// when a prefix naming exactly that address allows them, so that a
	// broad range (10.0.0.0/8, 0.0.0.0/0) never opens them by accident.
	Allow []netip.Prefix
}

type rangeRule struct {
	prefix netip.Prefix
	reason string
}

func mustRules(reason string, cidrs ...string) []rangeRule {
	out := make([]rangeRule, len(cidrs))
	for i, c := range cidrs {
		out[i] = rangeRule{prefix: netip.MustParsePrefix(c), reason: reason}
	}
	return out
}

// metadata are the instance metadata services of the large clouds: they
// hand out credentials to whoever asks from inside the instance.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, DigitalOcean...
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("168.63.129.16"),   // Azure WireServer (public space, host-local)
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud
}

// rules are checked in order; the first match gives the reason, so the more
// specific ranges come first.
var rules = concat(
	mustRules(ReasonBroadcast, "255.255.255.255/32"),
	mustRules(ReasonLoopback, "127.0.0.0/8", "::1/128"),
	mustRules(ReasonPrivate, "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10"),
	mustRules(ReasonLinkLocal, "169.254.0.0/16", "fe80::/10"),
	mustRules(ReasonCGNAT, "100.64.0.0/10"),
	mustRules(ReasonMulticast, "224.0.0.0/4", "ff00::/8"),
	mustRules(ReasonReserved,
		"0.0.0.0/8", "240.0.0.0/4", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
		"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
		"2001:db8::/32", "2001::/32", "2001:2::/48", "2001:10::/28", "2001:20::/28",
		"100::/64", "64:ff9b:1::/48", "3fff::/20", "5f00::/16"),
)

func concat(parts ...[]rangeRule) []rangeRule {
	var out []rangeRule
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
)

// Check returns nil when ip may be dialed and a *BlockedError otherwise.
func (p Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{IP: ip, Reason: ReasonInvalid}
	}
	// A zone only says which interface; prefixes never contain zoned
	// addresses, which would let fe80::1%eth0 pass every rule below.
	ip = ip.WithZone("").Unmap()
	if ip.IsUnspecified() {
		// Connecting to 0.0.0.0 or :: reaches the local host.
		return &BlockedError{IP: ip, Reason: ReasonUnspecified}
	}
	for _, m := range metadata {
		if ip == m {
			if p.allowsExactly(ip) {
				return nil
			}
			return &BlockedError{IP: ip, Reason: ReasonCloudMetadata}
		}
	}
	if p.allows(ip) {
		return nil
	}
	for _, r := range rules {
		if r.prefix.Contains(ip) {
			return &BlockedError{IP: ip, Reason: r.reason}
		}
	}
	if ip.Is6() {
		// Translation prefixes carry an IPv4 address that the gateway
		// connects to: judge that one.
		if nat64.Contains(ip) {
			b := ip.As16()
			return p.Check(netip.AddrFrom4([4]byte(b[12:16])))
		}
		if sixToFour.Contains(ip) {
			b := ip.As16()
			return p.Check(netip.AddrFrom4([4]byte(b[2:6])))
		}
		// Everything outside 2000::/3 is unassigned or special.
		if !globalUnicast6.Contains(ip) {
			return &BlockedError{IP: ip, Reason: ReasonReserved}
		}
	}
	return nil
}

// CheckHost judges a host as typed in a URL before any lookup: an IP
// literal (bracketed or not, with or without a zone, IPv4 mapped into
// IPv6) is checked as Check does; a name whose last label is a number
// (127.1, 2130706433, 0x7f.1) is refused as invalid, since some resolvers
// read such names as IPv4 addresses; any other name is left to the
// check of its resolved addresses when it is dialed.
func (p Policy) CheckHost(host string) error {
	h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "."), "["), "]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return p.Check(ip)
	}
	labels := strings.Split(h, ".")
	last := strings.ToLower(labels[len(labels)-1])
	if last != "" && (strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x")) {
		return &BlockedError{Reason: ReasonInvalid}
	}
	return nil
}

func (p Policy) allows(ip netip.Addr) bool {
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return true
		}
	}
	return false
}

func (p Policy) allowsExactly(ip netip.Addr) bool {
	for _, a := range p.Allow {
		if a.IsSingleIP() && a.Addr() == ip {
			return true
		}
	}
	return false
}

// Dialer dials TCP connections to addresses the policy allows.
type Dialer struct {
	// Policy decides which addresses may be dialed.
	Policy Policy
	// Timeout bounds the connect; zero means only ctx bounds it.
	Timeout time.Duration
}

// DialContext connects to address, which must be an IP literal and port:
// the caller resolves names itself and passes each address here, so what
// is checked is what is dialed. The address the socket connects to is
// checked once more just before connect.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: address must be an IP literal and port: %w", address, err)
	}
	return d.dial(ctx, network, ap, d.Policy)
}

// DialHost resolves hostport (a name or an IP literal, and a port),
// checks every answer against the policy and connects to the first one
// allowed; the address connected to is checked once more just before
// connect, so a DNS answer that changes in between cannot slip past. When
// every answer is refused the guard's *BlockedError is returned; a
// connect failure is preferred over it, since it says more.
func (d *Dialer) DialHost(ctx context.Context, network, hostport string) (net.Conn, error) {
	return d.dialHost(ctx, network, hostport, false)
}

// DialTrusted is DialHost for a server the operator named itself (a
// server of the RDAP bootstrap file, a --whois-server): the addresses its
// name resolves to are allowed exactly, loopback and private ones
// included, because the operator chose them. Cloud metadata and
// unspecified addresses stay refused. Whatever such a server refers to
// (a redirect, a referral) is not the operator's: dial it with DialHost.
func (d *Dialer) DialTrusted(ctx context.Context, network, hostport string) (net.Conn, error) {
	return d.dialHost(ctx, network, hostport, true)
}

func (d *Dialer) dialHost(ctx context.Context, network, hostport string, trusted bool) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", hostport, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port", hostport)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		if err := d.Policy.CheckHost(host); err != nil {
			return nil, fmt.Errorf("dial %s: %w", hostport, err)
		}
		ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", hostport, err)
		}
	}
	policy := d.Policy
	if trusted {
		policy = policy.trusting(ips)
	}
	var firstErr error
	for _, ip := range ips {
		conn, err := d.dial(ctx, network, netip.AddrPortFrom(ip.Unmap(), uint16(port)), policy)
		if err == nil {
			return conn, nil
		}
		var be *BlockedError
		if firstErr == nil || (errors.As(firstErr, &be) && !errors.As(err, &be)) {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	return nil, firstErr
}

// trusting returns the policy with ips allowed exactly, except cloud
// metadata addresses, which no name is trusted to lead to.
func (p Policy) trusting(ips []netip.Addr) Policy {
	allow := append([]netip.Prefix(nil), p.Allow...)
	for _, ip := range ips {
		ip = ip.WithZone("").Unmap()
		if !slices.Contains(metadata, ip) && ip.IsValid() {
			allow = append(allow, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	p.Allow = allow
	return p
}

// dial connects to ap when policy allows it, checking again in the socket's
// control hook what the kernel is asked to connect to; a refusal there
// comes before connect, so no packet leaves for a refused address.
func (d *Dialer) dial(ctx context.Context, network string, ap netip.AddrPort, policy Policy) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s %s: network not supported", network, ap)
	}
	if err := policy.Check(ap.Addr()); err != nil {
		return nil, fmt.Errorf("dial %s: %w", ap, err)
	}
	nd := net.Dialer{Timeout: d.Timeout, Control: func(_, address string, _ syscall.RawConn) error {
		return control(policy, address)
	}}
	conn, err := nd.DialContext(ctx, network, ap.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", ap, err)
	}
	return conn, nil
}

// control runs for every socket before it connects, with the address the
// kernel is asked to connect to.
func control(policy Policy, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Reason: ReasonInvalid}
	}
	return policy.Check(ap.Addr())
}

// TenantError is err's text as a tenant may read it (a delivery's or a
// managed certificate's error): the target stays, the addresses of the
// operator's network that Go's errors name beside it go: the resolver a
// lookup asked (" on 10.0.0.2:53"), a connection's local end
// ("10.0.0.5:34567->"), and every one of hidden, host:port addresses the
// caller knows are the operator's (its recursive resolvers, which
// libraries also name in their own words, such as lego's "ns=..."), which
// read "resolver".
func TenantError(err error, hidden ...string) string {
	msg := err.Error()
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.Server != "" {
		msg = strings.ReplaceAll(msg, " on "+dns.Server, "")
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Source != nil && op.Addr != nil {
		msg = strings.ReplaceAll(msg, op.Source.String()+"->", "")
	}
	for _, h := range hidden {
		if h != "" {
			msg = strings.ReplaceAll(msg, h, "resolver")
		}
	}
	return msg
}

// HTTPClient returns the client of every outbound HTTP request to a name
// that is not the operator's own choice alone (webhooks, Slack, RDAP): it
// dials with dial (a Dialer's DialHost or DialTrusted), uses no proxy (a
// proxy would dial for us, unguarded), follows no redirect (a redirect
// could point anywhere; a caller that follows them checks each target by
// dialing it with DialHost) and bounds each request by timeout. roots nil
// means the system's roots.
func HTTPClient(dial func(ctx context.Context, network, address string) (net.Conn, error), timeout time.Duration, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dial,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
