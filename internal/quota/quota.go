// Package quota holds each tenant's limits: how many domains, notification
// channels and API keys it may have, and how many of its requests one API
// server serves at once. The operator sets defaults by flag; a tenant's
// overrides live in Redis, in the tenant's slot, so the Lua script that
// adds a domain (or a channel, or a key) reads the limit and counts in the
// same step: two replicas adding at once can never pass a limit together.
//
// Redis layout ({tNN} is events.TenantTag(tenant)):
//
//	quota:{tNN}:<tenant>   hash resource -> limit (overrides only; 0 = unlimited)
package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
)

// Resource names a counted thing. Its value is the field in the override
// hash and the name shown by the API.
type Resource string

// The counted resources.
const (
	Domains  Resource = "domains"
	Channels Resource = "channels"
	APIKeys  Resource = "api_keys"
	// InFlight is requests of the tenant served at once by one API server.
	InFlight Resource = "requests_in_flight"
	// ManagedCerts is the domains whose certificates certfleet orders over
	// ACME for the tenant.
	ManagedCerts Resource = "managed_certificates"
	// CertOrders is the ACME orders placed for the tenant per UTC day
	// (first issuances, renewals and retries): one tenant's failing
	// orders never spend the CA's rate limits for everyone.
	CertOrders Resource = "certificate_orders_per_day"
	// ClientCerts is the tenant's active client certificates (neither
	// revoked nor expired) from the private CA. The CA's keys live in its
	// own slot, so its script reads the limit from Effective, not LuaLimit.
	ClientCerts Resource = "client_certificates"
	// HeldAPIKeys is the claimed keys the account has not approved yet
	// (apiserver/accounts/held.go): anyone who knows the account's email
	// can claim one, so they count here and not in APIKeys, and a flood
	// of claims never takes the account's own keys' room.
	HeldAPIKeys Resource = "held_api_keys"
	// HeldDomains is the domains held keys added (all of them together),
	// which count here and not in Domains until their key is approved.
	HeldDomains Resource = "held_domains"
)

// Resources lists every resource in the order the API shows them.
var Resources = []Resource{Domains, Channels, APIKeys, InFlight, ManagedCerts, CertOrders, ClientCerts, HeldAPIKeys, HeldDomains}

// Limits maps each resource to its limit; 0 means unlimited.
type Limits map[Resource]int64

// Defaults are the operator's limits when a tenant has no override.
var Defaults = Limits{Domains: 10_000, Channels: 50, APIKeys: 100, InFlight: 32, ManagedCerts: 100, CertOrders: 50,
	ClientCerts: 10_000, HeldAPIKeys: 5, HeldDomains: 100}

// Key is the tenant's override hash.
func Key(tenant string) string { return "quota:" + events.TenantTag(tenant) + ":" + tenant }

// ErrUnknownResource is an override for a resource that does not exist.
var ErrUnknownResource = errors.New("unknown quota resource")

// Exceeded is a request refused because it would pass a limit.
type Exceeded struct {
	Resource Resource
	Limit    int64
}

// ScriptExceeded reads the answer a counting script gives over a limit:
// "quota:<limit>" for r, or "quota:<resource>:<limit>" from a script that
// counts more than one resource; nil for any other answer.
func ScriptExceeded(answer string, r Resource) *Exceeded {
	rest, ok := strings.CutPrefix(answer, "quota:")
	if !ok {
		return nil
	}
	if named, limit, ok := strings.Cut(rest, ":"); ok {
		r, rest = Resource(named), limit
	}
	n, _ := strconv.ParseInt(rest, 10, 64)
	return &Exceeded{Resource: r, Limit: n}
}

func (e *Exceeded) Error() string {
	switch e.Resource {
	case HeldAPIKeys:
		return fmt.Sprintf("quota exceeded: this account already has %d claimed keys waiting for its approval; "+
			"the account approves or revokes them (GET /api/v1/api-keys) before more can be claimed", e.Limit)
	case HeldDomains:
		return fmt.Sprintf("quota exceeded: the keys waiting for this account's approval may add at most %d servers together; "+
			"ask the account to approve them", e.Limit)
	}
	return fmt.Sprintf("quota exceeded: this account may have at most %d %s; remove some or ask the operator to raise the quota",
		e.Limit, string(e.Resource))
}

// ParseResource checks a resource name; its error lists every one.
func ParseResource(s string) (Resource, error) {
	names := make([]string, len(Resources))
	for i, r := range Resources {
		if string(r) == s {
			return r, nil
		}
		names[i] = string(r)
	}
	return "", fmt.Errorf("%w %q: one of %s", ErrUnknownResource, s, strings.Join(names, ", "))
}

// Validate reports a negative limit or an unknown resource.
func (l Limits) Validate() error {
	var errs []error
	for r, v := range l {
		if _, err := ParseResource(string(r)); err != nil {
			errs = append(errs, err)
		}
		if v < 0 {
			errs = append(errs, fmt.Errorf("quota %s must not be negative, got %d", r, v))
		}
	}
	return errors.Join(errs...)
}

// With returns defaults with the resources set in l replaced.
func (l Limits) With(defaults Limits) Limits {
	out := make(Limits, len(Resources))
	for _, r := range Resources {
		out[r] = defaults[r]
		if v, ok := l[r]; ok {
			out[r] = v
		}
	}
	return out
}

// Overrides returns the tenant's overrides only.
func Overrides(ctx context.Context, rdb redis.UniversalClient, tenant string) (Limits, error) {
	rec, err := rdb.HGetAll(ctx, Key(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("read quota of %s: %w", tenant, err)
	}
	out := Limits{}
	for k, v := range rec {
		r, err := ParseResource(k)
		if err != nil {
			continue // a resource a newer release added; not ours to judge
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("read quota of %s: %s is %q, not a limit", tenant, k, v)
		}
		out[r] = n
	}
	return out, nil
}

// Effective returns the tenant's limits: its overrides over defaults.
func Effective(ctx context.Context, rdb redis.UniversalClient, tenant string, defaults Limits) (Limits, error) {
	o, err := Overrides(ctx, rdb, tenant)
	if err != nil {
		return nil, err
	}
	return o.With(defaults), nil
}

// Set writes the tenant's overrides in l; Clear removes the named ones.
func Set(ctx context.Context, rdb redis.UniversalClient, tenant string, l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if len(l) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(l))
	for r, v := range l {
		args = append(args, string(r), v)
	}
	if err := rdb.HSet(ctx, Key(tenant), args...).Err(); err != nil {
		return fmt.Errorf("set quota of %s: %w", tenant, err)
	}
	return nil
}

// Clear removes the tenant's overrides of rs, so the defaults apply again.
func Clear(ctx context.Context, rdb redis.UniversalClient, tenant string, rs ...Resource) error {
	if len(rs) == 0 {
		return nil
	}
	fields := make([]string, len(rs))
	for i, r := range rs {
		fields[i] = string(r)
	}
	if err := rdb.HDel(ctx, Key(tenant), fields...).Err(); err != nil {
		return fmt.Errorf("clear quota of %s: %w", tenant, err)
	}
	return nil
}

// LuaLimit is a Lua expression for a script that has the override hash in
// KEYS[k] and the default in ARGV[a]: the effective limit, 0 = unlimited.
// Every script that counts a resource uses it, so that a limit is read the
// same way everywhere.
func LuaLimit(k, a int, r Resource) string {
	return fmt.Sprintf("tonumber(redis.call('HGET', KEYS[%d], '%s') or ARGV[%d])", k, string(r), a)
}

// Forget deletes tenant's overrides (a tenant leaving) and returns how
// many keys it deleted (0 or 1).
func Forget(ctx context.Context, rdb redis.UniversalClient, tenant string) (int64, error) {
	n, err := rdb.Del(ctx, Key(tenant)).Result()
	if err != nil {
		return 0, fmt.Errorf("forget quota of %s: %w", tenant, err)
	}
	return n, nil
}
