package main

import (
	"fmt"

	"github.com/certfleet/certfleet/apiserver/keychest"
	"github.com/certfleet/certfleet/internal/quota"
)

// tenancyOptions are the API server's limits per tenant and its KeyChest
// claim policy.
type tenancyOptions struct {
	QuotaDomains  int64
	QuotaChannels int64
	QuotaAPIKeys  int64
	QuotaInFlight int64
	QuotaCerts    int64
	QuotaOrders   int64
	// QuotaClientCerts is the active client certificates of an account.
	QuotaClientCerts int64
	QuotaHeldKeys    int64
	QuotaHeldDoms    int64
	KeyChestClaim    string
	ClaimQuota       int64
}

func (f *flagSet) tenancy() *flagSet {
	defer f.group("tenancy and quotas")()
	o := &f.opts.tenancyOptions
	d := quota.Defaults
	f.Int64Var(&o.QuotaDomains, "quota-domains", d[quota.Domains], "domains an account may monitor (0: unlimited); `certfleet quota set` overrides per account")
	f.Int64Var(&o.QuotaChannels, "quota-channels", d[quota.Channels], "notification channels an account may have (0: unlimited)")
	f.Int64Var(&o.QuotaAPIKeys, "quota-api-keys", d[quota.APIKeys], "API keys an account may have, claimed ones it approved included, held ones not (0: unlimited)")
	f.Int64Var(&o.QuotaHeldKeys, "quota-held-api-keys", d[quota.HeldAPIKeys], "claimed keys waiting for an account's approval at once; more claims are refused (0: unlimited)")
	f.Int64Var(&o.QuotaHeldDoms, "quota-held-domains", d[quota.HeldDomains], "servers an account's claimed keys waiting for approval may add together; they count against --quota-domains once approved (0: unlimited)")
	f.Int64Var(&o.QuotaInFlight, "quota-requests-in-flight", d[quota.InFlight], "requests of one account one API server serves at once; more are answered 429 (0: unlimited)")
	f.Int64Var(&o.QuotaClientCerts, "quota-client-certificates", d[quota.ClientCerts], "active (unexpired, unrevoked) client certificates of the private CA an account may have (0: unlimited)")
	f.StringVar(&o.KeyChestClaim, "keychest-claim", keychest.ClaimsApprove, "KeyChest claim calls: approve (claimed keys see only their own servers until the account approves them), open (full keys at once: single-tenant installs), off (claims refused)")
	f.Int64Var(&o.ClaimQuota, "claim-quota", 100, "servers a claimed key may add before the account approves it")
	return f
}

// quotaFlags registers every --quota-* flag of the API server (tenancy's
// and the managed certificates'), with the server's defaults
// (quota.Defaults): what `certfleet quota` shows an account's limits
// against.
func (f *flagSet) quotaFlags() *flagSet { return f.tenancy().certQuotas() }

// quotas returns the operator's default limits.
func (o tenancyOptions) quotas() quota.Limits {
	return quota.Limits{quota.Domains: o.QuotaDomains, quota.Channels: o.QuotaChannels,
		quota.APIKeys: o.QuotaAPIKeys, quota.InFlight: o.QuotaInFlight,
		quota.ManagedCerts: o.QuotaCerts, quota.CertOrders: o.QuotaOrders, quota.ClientCerts: o.QuotaClientCerts,
		quota.HeldAPIKeys: o.QuotaHeldKeys, quota.HeldDomains: o.QuotaHeldDoms}
}

// validate reports the problems of the tenancy flags.
func (o tenancyOptions) validate() error {
	if err := o.quotas().Validate(); err != nil {
		return err
	}
	switch o.KeyChestClaim {
	case keychest.ClaimsApprove, keychest.ClaimsOpen, keychest.ClaimsOff:
	default:
		return fmt.Errorf("--keychest-claim must be approve, open or off, got %q", o.KeyChestClaim)
	}
	if o.ClaimQuota < 1 {
		return fmt.Errorf("--claim-quota must be at least 1, got %d", o.ClaimQuota)
	}
	return nil
}
