package managedcert

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/internal/guard"
)

// A credential's kind says how its value is checked.
type credKind int

const (
	credText     credKind = iota // any single line
	credSecret                   // any single line, never shown
	credEndpoint                 // a host, host:port or URL the worker connects to
	credSeconds                  // a whole number of seconds, 1..3600
	credNumber                   // a whole number, 0..1000000
	credBool                     // true or false
)

// ProviderSpec is what a tenant's account of one DNS provider may carry,
// by lego v5's names for it.
type ProviderSpec struct {
	// Name is the provider as tenants name it.
	Name string
	// Prefix is the canonical prefix of its names; Aliases maps other
	// prefixes lego also reads to it (lego v5's "dnsupdate" reads
	// DNSUPDATE_* and RFC2136_*; cloudflare reads CLOUDFLARE_* and CF_*).
	Prefix  string
	Aliases map[string]string
	// Names are the names allowed, without the prefix, and their kinds.
	Names map[string]credKind
	// Required lists alternatives: each entry is satisfied when every name
	// of one of its sets is present (e.g. a token, or an email and a key).
	Required [][][]string
}

// Providers is the table of DNS providers tenants may configure. Names
// lego reads but a tenant must not set are absent on purpose: files on the
// server (RFC2136_TSIG_FILE, GSS keytabs), the AWS default credential
// chain (profiles, shared files, assume-role, instance roles).
var Providers = map[string]ProviderSpec{
	ProviderRFC2136: {
		Name: ProviderRFC2136, Prefix: "RFC2136_", Aliases: map[string]string{"DNSUPDATE_": "RFC2136_"},
		Names: map[string]credKind{
			"NAMESERVER": credEndpoint, "TSIG_KEY": credText, "TSIG_SECRET": credSecret,
			"TSIG_ALGORITHM": credText, "ZONES": credText, "DNS_TIMEOUT": credSeconds, "TTL": credNumber,
			"PROPAGATION_TIMEOUT": credSeconds, "POLLING_INTERVAL": credSeconds, "SEQUENCE_INTERVAL": credSeconds,
		},
		Required: [][][]string{{{"NAMESERVER"}}},
	},
	ProviderCloudflare: {
		Name: ProviderCloudflare, Prefix: "CLOUDFLARE_", Aliases: map[string]string{"CF_": "CLOUDFLARE_"},
		Names: map[string]credKind{
			"DNS_API_TOKEN": credSecret, "ZONE_API_TOKEN": credSecret, "EMAIL": credText, "API_EMAIL": credText,
			"API_KEY": credSecret, "BASE_URL": credEndpoint, "TTL": credNumber,
			"PROPAGATION_TIMEOUT": credSeconds, "POLLING_INTERVAL": credSeconds, "HTTP_TIMEOUT": credSeconds,
		},
		Required: [][][]string{{{"DNS_API_TOKEN"}, {"EMAIL", "API_KEY"}, {"API_EMAIL", "API_KEY"}}},
	},
	ProviderRoute53: {
		Name: ProviderRoute53, Prefix: "AWS_",
		Names: map[string]credKind{
			"ACCESS_KEY_ID": credText, "SECRET_ACCESS_KEY": credSecret, "REGION": credText,
			"HOSTED_ZONE_ID": credText, "MAX_RETRIES": credNumber, "PRIVATE_ZONE": credBool,
			"WAIT_FOR_RECORD_SETS_CHANGED": credBool, "TTL": credNumber,
			"PROPAGATION_TIMEOUT": credSeconds, "POLLING_INTERVAL": credSeconds,
		},
		Required: [][][]string{{{"ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}}},
	},
	ProviderHTTPReq: {
		Name: ProviderHTTPReq, Prefix: "HTTPREQ_",
		Names: map[string]credKind{
			"ENDPOINT": credEndpoint, "MODE": credText, "USERNAME": credText, "PASSWORD": credSecret,
			"PROPAGATION_TIMEOUT": credSeconds, "POLLING_INTERVAL": credSeconds, "HTTP_TIMEOUT": credSeconds,
		},
		Required: [][][]string{{{"ENDPOINT"}}},
	},
}

// ProviderNames lists the providers of the table, sorted.
func ProviderNames() []string {
	out := make([]string, 0, len(Providers))
	for name := range Providers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// tsigAlgorithms are the TSIG algorithms an RFC 2136 account may name.
var tsigAlgorithms = []string{"hmac-sha1.", "hmac-sha224.", "hmac-sha256.", "hmac-sha384.", "hmac-sha512."}

// Canonical returns creds with every name in its provider's canonical
// form (DNSUPDATE_X → RFC2136_X, CF_X → CLOUDFLARE_X), or an error for a
// name of no known form or given twice.
func Canonical(provider string, creds map[string]string) (map[string]string, error) {
	spec, ok := Providers[provider]
	if !ok {
		return nil, unknownProvider(provider)
	}
	out := make(map[string]string, len(creds))
	for name, v := range creds {
		canon := name
		for alias, to := range spec.Aliases {
			if rest, ok := strings.CutPrefix(name, alias); ok {
				canon = to + rest
			}
		}
		if _, dup := out[canon]; dup {
			return nil, fmt.Errorf("credential %s is given twice (as %s and another name)", canon, name)
		}
		out[canon] = v
	}
	return out, nil
}

func unknownProvider(provider string) error {
	if provider == "exec" {
		return errors.New(`provider "exec" runs a program on the server: it is the operator's alone and never offered to accounts`)
	}
	return fmt.Errorf("unknown DNS provider %q: want one of %s", provider, strings.Join(ProviderNames(), ", "))
}

// CheckCredentials reports what is wrong with creds for provider: an
// unknown provider, a name the provider does not read or a tenant may not
// set, a missing required name, a bad value, or an endpoint the policy
// refuses (an IP literal it does not allow; a name is checked again by its
// addresses when the worker uses it).
func CheckCredentials(provider string, creds map[string]string, targets guard.Policy) error {
	spec, ok := Providers[provider]
	if !ok {
		return unknownProvider(provider)
	}
	canon, err := Canonical(provider, creds)
	if err != nil {
		return err
	}
	var errs []error
	for name, v := range canon {
		short, ok := strings.CutPrefix(name, spec.Prefix)
		kind, known := spec.Names[short]
		if !ok || !known {
			errs = append(errs, unknownName(spec, name))
			continue
		}
		if err := checkValue(kind, v, targets); err != nil {
			errs = append(errs, fmt.Errorf("credential %s: %w", name, err))
		}
	}
	for _, alternatives := range spec.Required {
		if !slices.ContainsFunc(alternatives, func(set []string) bool {
			return !slices.ContainsFunc(set, func(n string) bool { return canon[spec.Prefix+n] == "" })
		}) {
			errs = append(errs, missing(spec, alternatives))
		}
	}
	if provider == ProviderRFC2136 {
		errs = append(errs, checkTSIG(canon)...)
	}
	if provider == ProviderHTTPReq {
		if m := canon["HTTPREQ_MODE"]; m != "" && m != "RAW" {
			errs = append(errs, errors.New(`credential HTTPREQ_MODE: want "RAW" or nothing`))
		}
	}
	return errors.Join(errs...)
}

func unknownName(spec ProviderSpec, name string) error {
	if strings.HasSuffix(name, "_FILE") || strings.Contains(name, "PROFILE") || strings.Contains(name, "ASSUME_ROLE") ||
		strings.Contains(name, "GSS") {
		return fmt.Errorf("credential %s is not accepted: it would make the server read its own files or credentials; give the values themselves", name)
	}
	names := make([]string, 0, len(spec.Names))
	for n := range spec.Names {
		names = append(names, spec.Prefix+n)
	}
	sort.Strings(names)
	return fmt.Errorf("credential %s is not one %s reads: want %s", name, spec.Name, strings.Join(names, ", "))
}

func missing(spec ProviderSpec, alternatives [][]string) error {
	forms := make([]string, len(alternatives))
	for i, set := range alternatives {
		full := make([]string, len(set))
		for j, n := range set {
			full[j] = spec.Prefix + n
		}
		forms[i] = strings.Join(full, " and ")
	}
	return fmt.Errorf("%s needs %s", spec.Name, strings.Join(forms, ", or "))
}

func checkTSIG(c map[string]string) []error {
	var errs []error
	if (c["RFC2136_TSIG_KEY"] == "") != (c["RFC2136_TSIG_SECRET"] == "") {
		errs = append(errs, errors.New("RFC2136_TSIG_KEY and RFC2136_TSIG_SECRET go together"))
	}
	if a := c["RFC2136_TSIG_ALGORITHM"]; a != "" && !slices.Contains(tsigAlgorithms, strings.ToLower(strings.TrimSuffix(a, "."))+".") {
		errs = append(errs, fmt.Errorf("credential RFC2136_TSIG_ALGORITHM: %q is not one of %s", a, strings.Join(tsigAlgorithms, ", ")))
	}
	return errs
}

func checkValue(kind credKind, v string, targets guard.Policy) error {
	if v == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return errors.New("must be one line")
	}
	switch kind {
	case credSeconds, credNumber:
		n, err := strconv.Atoi(v)
		hi := 1_000_000
		if kind == credSeconds {
			hi = 3600
		}
		if err != nil || n < 0 || n > hi {
			return fmt.Errorf("want a whole number from 0 to %d", hi)
		}
	case credBool:
		if _, err := strconv.ParseBool(v); err != nil {
			return errors.New("want true or false")
		}
	case credEndpoint:
		host, err := EndpointHost(v)
		if err != nil {
			return err
		}
		if err := targets.CheckHost(host); err != nil {
			return fmt.Errorf("%w; DNS providers may not be reached there (an operator can allow a range with --allow-dns-targets)", err)
		}
	}
	return nil
}

// EndpointHost returns the host of an endpoint credential: a URL (http or
// https), a host:port, or a host.
func EndpointHost(v string) (string, error) {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
			return "", errors.New("want an http or https URL")
		}
		if u.User != nil {
			return "", errors.New("put user and password in their own credentials, not in the URL")
		}
		return u.Hostname(), nil
	}
	host := v
	if h, p, err := net.SplitHostPort(v); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", errors.New("bad port")
		}
		host = h
	}
	if host == "" || strings.ContainsAny(host, "/ @") {
		return "", errors.New("want a host, host:port or URL")
	}
	return host, nil
}
