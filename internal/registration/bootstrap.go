package registration

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ianaDNS is IANA's RDAP bootstrap file for domain names, the default when
// the operator gives none (iana/README.md says where it came from).
//
//go:embed iana/dns.json
var ianaDNS []byte

// Bootstrap maps TLDs (and longer suffixes, should IANA list any) to the
// base URLs of their RDAP servers: IANA's RDAP bootstrap registry for DNS
// (RFC 9224).
type Bootstrap struct {
	// Publication is when the file was published.
	Publication time.Time
	servers     map[string][]*url.URL
}

// bootstrapFile is the JSON of RFC 9224 section 3.
type bootstrapFile struct {
	Version     string              `json:"version"`
	Publication string              `json:"publication"`
	Services    [][]json.RawMessage `json:"services"`
}

// ParseBootstrap parses a bootstrap file in IANA's dns.json format. Every
// problem is reported at once; a file with no usable service is refused,
// so that a wrong file does not quietly send every lookup to WHOIS.
func ParseBootstrap(b []byte) (*Bootstrap, error) {
	var f bootstrapFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("rdap bootstrap: %w", err)
	}
	var errs []error
	if f.Version != "1.0" {
		errs = append(errs, fmt.Errorf("version %q, want \"1.0\"", f.Version))
	}
	bs := &Bootstrap{servers: map[string][]*url.URL{}}
	if f.Publication != "" {
		t, err := time.Parse(time.RFC3339, f.Publication)
		if err != nil {
			errs = append(errs, fmt.Errorf("publication %q is not an RFC 3339 time", f.Publication))
		}
		bs.Publication = t
	}
	for i, svc := range f.Services {
		if len(svc) != 2 {
			errs = append(errs, fmt.Errorf("service %d: %d elements, want 2 (entries, URLs)", i, len(svc)))
			continue
		}
		var labels, urls []string
		if err := json.Unmarshal(svc[0], &labels); err != nil {
			errs = append(errs, fmt.Errorf("service %d: entries: %w", i, err))
			continue
		}
		if err := json.Unmarshal(svc[1], &urls); err != nil {
			errs = append(errs, fmt.Errorf("service %d: urls: %w", i, err))
			continue
		}
		bases, err := parseBases(urls)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %d: %w", i, err))
			continue
		}
		for _, l := range labels {
			l = strings.TrimSuffix(strings.ToLower(l), ".")
			if l == "" || strings.HasPrefix(l, ".") || strings.HasSuffix(l, ".") || strings.Contains(l, "..") {
				errs = append(errs, fmt.Errorf("service %d: entry %q is not a domain name suffix", i, l))
				continue
			}
			bs.servers[l] = bases
		}
	}
	if len(bs.servers) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no services"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("rdap bootstrap: %w", err)
	}
	return bs, nil
}

// parseBases parses a service's base URLs, https ones first (RFC 9224
// section 3: a client should prefer them), each ending in "/" so that
// "domain/<name>" can be appended.
func parseBases(urls []string) ([]*url.URL, error) {
	var https, http []*url.URL
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("url %q is not an absolute http(s) base URL", raw)
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		switch u.Scheme {
		case "https":
			https = append(https, u)
		case "http":
			http = append(http, u)
		default:
			return nil, fmt.Errorf("url %q: scheme must be http or https", raw)
		}
	}
	if len(https)+len(http) == 0 {
		return nil, errors.New("no urls")
	}
	return append(https, http...), nil
}

// Over returns the bootstrap with b's entries over base's: an entry of b
// replaces base's for the same suffix, and every other suffix keeps base's
// servers. --rdap-bootstrap is merged over the embedded IANA copy this way,
// so a file naming one TLD's server (the lab's) leaves the rest of the
// world's RDAP servers in place. Neither input is changed.
func (b *Bootstrap) Over(base *Bootstrap) *Bootstrap {
	out := &Bootstrap{Publication: b.Publication, servers: make(map[string][]*url.URL, len(base.servers)+len(b.servers))}
	for l, s := range base.servers {
		out.servers[l] = s
	}
	for l, s := range b.servers {
		out.servers[l] = s
	}
	return out
}

// Servers returns the RDAP base URLs for domain, best first, from the
// longest entry that is a suffix of it (RFC 9224 section 4); nil when the
// bootstrap names none.
func (b *Bootstrap) Servers(domain string) []*url.URL {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	for {
		if s, ok := b.servers[d]; ok {
			return s
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return nil
		}
		d = d[i+1:]
	}
}
