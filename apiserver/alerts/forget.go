package alerts

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/forget"
)

// Forgotten is what Forget removed of a tenant's alerts.
type Forgotten struct {
	Alerts   int64 // alert:{tNN}:<id> records
	States   int64 // domains whose state was there (in the record, the old key or both)
	Indexes  int64 // the tenant's alert list, per-domain lists and open counts
	Settings int64 // the settings (0 or 1)
}

// forgetStateScript deletes a domain's alert state: the alert fields of
// its record (KEYS[1]) and its old key (KEYS[2]). Returns how many of
// the two held some.
var forgetStateScript = redis.NewScript(dropAlertFieldsLua + `
local n = 0
if drop_alert_fields(KEYS[1]) > 0 then n = 1 end
return n + redis.call('DEL', KEYS[2])
`)

// Forget deletes every alert key of tenant (a tenant leaving): its alert
// records (listed in its alert index), the alert state of each of
// domainIDs (the domains the tenant's deletion removed: the engine drops
// a state when it evaluates the removal, which may not have happened
// yet), in its record (the alert fields a removal leaves, and the hash
// with them) and in its old key, the alert states left by the removals of
// other domains of the tenant that the engine has not evaluated yet
// (found by accounts.RemovedTenantField), the states of the layout before the
// short one, which named their tenant ("@tenant", found by a scan of its
// partition, so the states of domains removed long ago go too), its
// indexes and its settings. It appends no events: the tenant's deletion
// is recorded once, by the caller.
func Forget(ctx context.Context, rdb redis.UniversalClient, tenant string, domainIDs []string) (Forgotten, error) {
	var out Forgotten
	ids, err := rdb.ZRange(ctx, tenantKey(tenant), 0, -1).Result()
	if err != nil {
		return out, fmt.Errorf("forget alerts of %s: %w", tenant, err)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = alertKey(tenant, id)
	}
	if out.Alerts, err = forget.DeleteKeys(ctx, rdb, keys...); err != nil {
		return out, fmt.Errorf("forget alerts of %s: %w", tenant, err)
	}
	for _, id := range domainIDs {
		n, err := forgetStateScript.Run(ctx, rdb, []string{accounts.DomainKey(tenant, id), oldStateKey(tenant, id)}).Int64()
		if err != nil {
			return out, fmt.Errorf("forget alert state of %s: %w", id, err)
		}
		out.States += min(n, 1)
	}
	// Domains removed one by one before the tenant left, whose removal
	// the engine had not evaluated yet: their records are gone but for
	// the alert state, which names the tenant.
	left, err := forget.DeleteWhere(ctx, rdb, accounts.DomainKeyPrefix(tenant)+"*", accounts.RemovedTenantField, tenant)
	if err != nil {
		return out, fmt.Errorf("forget alert states of %s: %w", tenant, err)
	}
	out.States += left
	old, err := forget.DeleteWhere(ctx, rdb, "alerts:state:"+events.TenantTag(tenant)+":*", oldTenantField, tenant)
	if err != nil {
		return out, fmt.Errorf("forget alert states of %s: %w", tenant, err)
	}
	out.States += old
	if out.Indexes, err = forget.DeletePattern(ctx, rdb, tenantKey(tenant)+":domain:*"); err != nil {
		return out, fmt.Errorf("forget alert indexes of %s: %w", tenant, err)
	}
	n, err := forget.DeleteKeys(ctx, rdb, tenantKey(tenant), openKey(tenant))
	if err != nil {
		return out, fmt.Errorf("forget alert index of %s: %w", tenant, err)
	}
	out.Indexes += n
	if out.Settings, err = forget.DeleteKeys(ctx, rdb, settingsKey(tenant)); err != nil {
		return out, fmt.Errorf("forget alert settings of %s: %w", tenant, err)
	}
	return out, nil
}
