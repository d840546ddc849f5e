package main

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/agent"
)

// registrationOptions are the flags of registration lookups: their
// schedule (coordinator) and their workers (agent).
type registrationOptions struct {
	RegistrationInterval time.Duration
	RegistrationLookups  bool
	RegistrationWorkers  int
}

func (f *flagSet) registrationCoordinator() *flagSet {
	f.DurationVar(&f.opts.RegistrationInterval, "registration-interval", 7*24*time.Hour,
		"how often the registration (expiry, registrar) of each registrable domain is looked up; daily within 30 days of its expiry")
	return f
}

func (f *flagSet) registrationAgent() *flagSet {
	f.BoolVar(&f.opts.RegistrationLookups, "registration-lookups", true,
		"also do registration lookup jobs (RDAP, WHOIS) for the whole fleet; one group across all regions")
	f.IntVar(&f.opts.RegistrationWorkers, "registration-workers", 4,
		"registration lookups at once at most; they run apart from scan jobs")
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
// worker; nil when this build has none, and then the agent does no
// lookups.
func registrationLookup(_ *options, _ redis.UniversalClient, _ *zap.Logger) (agent.LookupFunc, error) {
	return nil, nil
}
