package agent

import (
	"math"
	"strings"
)

// parseHSTS reads a Strict-Transport-Security header value as RFC 6797
// section 6.1 defines it: directives separated by ";", names matched without
// regard to case, values a token or a quoted-string, every directive at most
// once, max-age required and made of digits (quoted or not), includeSubDomains
// without a value. A value that breaks any of these rules is not a valid
// header, and a browser ignores it: ok is false and the result is zero.
// Unknown directives are allowed and ignored. A max-age too large for an
// int64 saturates.
func parseHSTS(v string) (maxAge int64, includeSubdomains, ok bool) {
	var seen []string
	haveMaxAge := false
	rest := v
	for {
		rest = trimOWS(rest)
		if rest == "" {
			break
		}
		if rest[0] == ';' {
			rest = rest[1:]
			continue
		}
		var name, value string
		name, rest = cutToken(rest)
		if name == "" {
			return 0, false, false
		}
		rest = trimOWS(rest)
		hasValue := false
		if rest != "" && rest[0] == '=' {
			rest = trimOWS(rest[1:])
			hasValue = true
			if rest != "" && rest[0] == '"' {
				var good bool
				if value, rest, good = cutQuoted(rest); !good {
					return 0, false, false
				}
			} else if value, rest = cutToken(rest); value == "" {
				return 0, false, false
			}
			rest = trimOWS(rest)
		}
		if rest != "" && rest[0] != ';' {
			return 0, false, false
		}
		name = strings.ToLower(name)
		for _, s := range seen {
			if s == name {
				return 0, false, false
			}
		}
		seen = append(seen, name)
		switch name {
		case "max-age":
			n, good := deltaSeconds(value)
			if !hasValue || !good {
				return 0, false, false
			}
			maxAge, haveMaxAge = n, true
		case "includesubdomains":
			if hasValue {
				return 0, false, false
			}
			includeSubdomains = true
		}
	}
	if !haveMaxAge {
		return 0, false, false
	}
	return maxAge, includeSubdomains, true
}

// deltaSeconds parses 1*DIGIT, saturating at the largest int64.
func deltaSeconds(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, true
}

func trimOWS(s string) string { return strings.TrimLeft(s, " \t") }

// cutToken splits s after its leading RFC 7230 token (possibly empty).
func cutToken(s string) (token, rest string) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// cutQuoted splits s, which starts with '"', after its quoted-string and
// returns the string's content with backslash escapes resolved.
func cutQuoted(s string) (value, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], true
		case c == '\\':
			if i+1 == len(s) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", "", false
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}
