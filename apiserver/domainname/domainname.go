// Package domainname parses the domain names users register for monitoring:
// `host` or `host:port`, normalized to the one form that names a domain
// everywhere in certfleet (lower case, no trailing dot, IDNA A-labels, port
// 443 when none is given). Every API that accepts a domain parses it here, so
// "Example.COM.", "example.com" and "example.com:443" are the same domain.
package domainname

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/net/idna"
)

// DefaultPort is the port of a domain given without one.
const DefaultPort = 443

const (
	// maxInput bounds the work spent on a hostile input before it is
	// rejected anyway: no valid host:port is longer.
	maxInput = 512
	maxName  = 253
	maxLabel = 63
)

// Error is a domain that cannot be monitored, with a message meant for the
// user who sent it.
type Error struct {
	Input  string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("invalid domain %q: %s", e.Input, e.Reason) }

func bad(input, format string, args ...any) error {
	if len(input) > 80 {
		input = input[:80] + "..."
	}
	return &Error{Input: input, Reason: fmt.Sprintf(format, args...)}
}

// IsInvalid tells whether err is a rejected domain.
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Parse checks s as a domain to monitor and returns its normalized host and
// its port. It accepts `host` and `host:port`; it rejects URLs, paths, user
// information, IP addresses (certfleet monitors names: a certificate is
// checked against the name a browser asks for), wildcards, white space and
// anything that is not a fully qualified DNS name of at least two labels.
func Parse(s string) (host string, port int, err error) {
	switch {
	case s == "":
		return "", 0, bad(s, "empty; send a host name such as example.com or example.com:8443")
	case len(s) > maxInput:
		return "", 0, bad(s, "longer than %d characters", maxInput)
	case strings.Contains(s, "://"):
		return "", 0, bad(s, "a URL is not a domain; send the host name only, e.g. example.com or example.com:8443")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return "", 0, bad(s, "contains white space")
	case strings.ContainsAny(s, "/?#\\"):
		return "", 0, bad(s, "contains a path or query; send the host name only")
	case strings.Contains(s, "@"):
		return "", 0, bad(s, "contains user information (@); send the host name only")
	case strings.Contains(s, "*"):
		return "", 0, bad(s, "wildcards cannot be scanned; register each name")
	case strings.HasPrefix(s, "["):
		return "", 0, bad(s, "IP addresses cannot be monitored; register the DNS name the certificate is for")
	}
	host, port = s, DefaultPort
	switch strings.Count(s, ":") {
	case 0:
	case 1:
		i := strings.LastIndexByte(s, ':')
		host = s[:i]
		if port, err = parsePort(s, s[i+1:]); err != nil {
			return "", 0, err
		}
	default:
		if _, err := netip.ParseAddr(s); err == nil {
			return "", 0, bad(s, "IP addresses cannot be monitored; register the DNS name the certificate is for")
		}
		return "", 0, bad(s, "more than one ':'; use host or host:port")
	}
	host, err = normalizeHost(s, host)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func parsePort(input, p string) (int, error) {
	if p == "" {
		return 0, bad(input, "empty port after ':'")
	}
	if len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return 0, bad(input, "port %q is not a number from 1 to 65535", p)
	}
	n, _ := strconv.Atoi(p)
	if n < 1 || n > 65535 {
		return 0, bad(input, "port %d out of range 1-65535", n)
	}
	return n, nil
}

func normalizeHost(input, host string) (string, error) {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", bad(input, "empty host name")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return "", bad(input, "IP addresses cannot be monitored; register the DNS name the certificate is for")
	}
	ascii := strings.ToLower(host)
	if !isASCII(host) {
		a, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return "", bad(input, "not a valid internationalized domain name")
		}
		ascii = a
	}
	if len(ascii) > maxName {
		return "", bad(input, "name longer than %d characters", maxName)
	}
	labels := strings.Split(ascii, ".")
	if len(labels) < 2 {
		return "", bad(input, "not a fully qualified name; use a name with a dot such as example.com")
	}
	for _, l := range labels {
		if err := checkLabel(input, l); err != nil {
			return "", err
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		// No top-level domain is numeric (RFC 3696 2); such a name is an
		// address written in some other notation, e.g. 127.1.
		return "", bad(input, "the last label is numeric; IP addresses cannot be monitored")
	}
	return ascii, nil
}

func checkLabel(input, l string) error {
	switch {
	case l == "":
		return bad(input, "empty label (two dots in a row or a leading dot)")
	case len(l) > maxLabel:
		return bad(input, "label %q longer than %d characters", l[:16]+"...", maxLabel)
	case l[0] == '-' || l[len(l)-1] == '-':
		return bad(input, "label %q starts or ends with a hyphen", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return bad(input, "label %q has %q; only letters, digits and hyphens are allowed", l, rune(c))
		}
	}
	if len(l) >= 4 && l[2:4] == "--" && l[:2] == "xn" {
		// A hand-written A-label must decode, or TLS clients reject it.
		if _, err := idna.Lookup.ToUnicode(l); err != nil {
			return bad(input, "label %q is not a valid IDNA A-label", l)
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// SearchTerm is s as a prefix of hostnames as Parse keeps them: trimmed,
// lower-case, without a leading or a trailing dot (".shop" and
// "shop.example." search as "shop" and "shop.example" do: a hostname's
// first label is a label too), and each non-ASCII label in its A-label
// form ("bücher" as "xn--bcher-kva"; a label cut short then finds
// nothing, its A-label not being a prefix of the whole one's).
func SearchTerm(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimSuffix(strings.TrimPrefix(s, "."), ".")
	if isASCII(s) {
		return s
	}
	labels := strings.Split(s, ".")
	for i, l := range labels {
		if a, err := idna.Lookup.ToASCII(l); err == nil && !isASCII(l) {
			labels[i] = a
		}
	}
	return strings.Join(labels, ".")
}

// Format is the form of a domain users see and send: the host alone for the
// default port, host:port otherwise.
func Format(host string, port int) string {
	if port == DefaultPort {
		return host
	}
	return host + ":" + strconv.Itoa(port)
}

// Key is the form that identifies a domain inside a tenant: always
// host:port, so that the default port is not a second spelling.
func Key(host string, port int) string {
	return host + ":" + strconv.Itoa(port)
}
