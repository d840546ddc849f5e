// Package registration looks up the registration (registrar, expiry,
// statuses, name servers) of one registrable domain over RDAP or WHOIS.
package registration

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// ErrNotRegistrable is returned for a host that has no registrable domain
// (empty, an IP literal, or a public suffix itself such as "co.uk").
var ErrNotRegistrable = errors.New("registration: host has no registrable domain")

// Registrable returns host's registrable domain (eTLD+1 by the public
// suffix list), lower-case, without a trailing dot: the unit registries
// answer for, so hosts sharing it share one lookup.
func Registrable(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" || strings.ContainsFunc(h, notHostRune) || isIPv4(h) {
		return "", fmt.Errorf("%q: %w", host, ErrNotRegistrable)
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(h)
	if err != nil {
		return "", fmt.Errorf("%q: %w: %w", host, ErrNotRegistrable, err)
	}
	if isIPv4(d) {
		// No TLD is all digits: "a.0.0" names no registry.
		return "", fmt.Errorf("%q: %w", host, ErrNotRegistrable)
	}
	return d, nil
}

// isIPv4 reports whether h is made only of digits and dots: an address,
// not a name (IPv6 literals are refused by the ':' check).
func isIPv4(h string) bool {
	return strings.Trim(h, "0123456789.") == ""
}

// notHostRune reports runes no host name carries: spaces, controls, and
// the separators of ports, paths and IPv6 literals.
func notHostRune(r rune) bool {
	return r <= ' ' || r == 0x7f || r == ':' || r == '/'
}
