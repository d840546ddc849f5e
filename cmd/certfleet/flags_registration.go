package main

import (
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/internal/registration"
	"github.com/certfleet/certfleet/internal/registration/whois"
)

// registrationOptions are the flags of registration lookups: their
// schedule (coordinator) and their workers (agent).
type registrationOptions struct {
	RegistrationInterval time.Duration
	RegistrationLookups  bool
	RegistrationWorkers  int
	RDAPBootstrap        string
	WhoisServers         []string
}

func (f *flagSet) registrationCoordinator() *flagSet {
	defer f.group("registration lookups")()
	f.DurationVar(&f.opts.RegistrationInterval, "registration-interval", 7*24*time.Hour,
		"how often the registration (expiry, registrar) of each registrable domain is looked up; daily within 30 days of its expiry")
	return f
}

func (f *flagSet) registrationAgent() *flagSet {
	defer f.group("registration lookups")()
	f.BoolVar(&f.opts.RegistrationLookups, "registration-lookups", true,
		"also do registration lookup jobs (RDAP, WHOIS) for the whole fleet; one group across all regions")
	f.IntVar(&f.opts.RegistrationWorkers, "registration-workers", 4,
		"registration lookups at once at most; they run apart from scan jobs")
	f.StringVar(&f.opts.RDAPBootstrap, "rdap-bootstrap", "",
		"RDAP bootstrap file in IANA's dns.json format (RFC 9224), merged over the IANA copy embedded at build time: its entries win for their TLDs, every other TLD keeps IANA's server; its servers are trusted")
	f.Func("whois-server", "TLD=HOST[:PORT], repeatable or comma-separated: the WHOIS server of a TLD, trusted (default: the one IANA refers to)", func(v string) error {
		f.opts.WhoisServers = append(f.opts.WhoisServers, v)
		return nil
	})
	return f
}

// validate refuses values the role's config would read as "the default".
func (o registrationOptions) validate(role string) error {
	if (role == "all" || role == "coordinator") && o.RegistrationInterval < time.Second {
		return fmt.Errorf("--registration-interval must be at least 1s, got %s", o.RegistrationInterval)
	}
	if (role == "all" || role == "agent") && o.RegistrationWorkers < 1 {
		return fmt.Errorf("--registration-workers must be positive, got %d", o.RegistrationWorkers)
	}
	return nil
}

// registrationLookup is the lookup function of the agent's registration
// worker: RDAP through the bootstrap, WHOIS as the fallback, both through
// the guarded dialer; redirect and referral targets are checked against
// --allow-targets.
func registrationLookup(o *options, rdb redis.UniversalClient, logger *zap.Logger) (agent.LookupFunc, error) {
	var boot []byte
	if o.RDAPBootstrap != "" {
		b, err := os.ReadFile(o.RDAPBootstrap)
		if err != nil {
			return nil, fmt.Errorf("--rdap-bootstrap: %w", err)
		}
		boot = b
	}
	servers, err := whois.ParseServers(o.WhoisServers)
	if err != nil {
		return nil, fmt.Errorf("--whois-server: %w", err)
	}
	allow, err := parseAllow("--allow-targets", o.AllowTargets)
	if err != nil {
		return nil, err
	}
	l, err := registration.New(registration.Config{
		Bootstrap: boot, WhoisServers: servers, Allow: allow,
		NewFallback: func(d registration.FallbackDeps) (registration.Fallback, error) {
			return whois.New(whois.Config{Servers: d.Servers, DialTrusted: d.DialTrusted, Dial: d.Dial,
				Timeout: d.Timeout, MaxBytes: d.MaxBytes, Wait: d.Wait, Defer: d.Defer})
		},
	}, rdb, logger)
	if err != nil {
		return nil, err
	}
	return l.Lookup, nil
}
