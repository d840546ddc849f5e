package projector

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/forget"
	"github.com/certfleet/certfleet/internal/registration"
)

// ForgetDomain deletes the view and version of a removed domain and its
// reference in its registrable domain's index (a tenant leaving), and
// returns how many keys or references it removed. The domain.removed
// event the caller appended first makes the projector do the same, but
// leaves a tombstone in the view (the removal time, which keeps a scan
// delivered late out of it); a tenant leaving wants no key naming its
// domains, so ForgetDomain drops the tombstone too. A scan of the domain
// still in flight could write a view again; it names no tenant data beyond
// the domain id and is reached by no route (the domain is gone).
func ForgetDomain(ctx context.Context, rdb redis.UniversalClient, domainID, host string) (int64, error) {
	var n int64
	for _, k := range []string{ViewKey(domainID), VersionKey(domainID)} {
		d, err := rdb.Del(ctx, k).Result()
		if err != nil {
			return n, fmt.Errorf("forget view of %s: %w", domainID, err)
		}
		n += d
	}
	if reg, err := registration.Registrable(host); err == nil {
		// In the view, and in the index of the layout before.
		pipe := rdb.Pipeline()
		inView, inOld := pipe.HDel(ctx, RegistrationKey(reg), memberField(domainID)), pipe.HDel(ctx, RegistrationIndexKey(reg), domainID)
		if _, err := pipe.Exec(ctx); err != nil {
			return n, fmt.Errorf("forget registration reference of %s: %w", domainID, err)
		}
		n += inView.Val() + inOld.Val()
	}
	return n, nil
}

// ForgetTenantViews deletes every view that names tenant (its "@t", or
// "@tenant" in views written before), a tenant leaving, and returns how
// many: after ForgetDomain of the domains the tenant's deletion removed,
// what is left are the tombstones of its domains removed one by one
// before (which name the domain and the tenant until they expire,
// TombstoneTTL) and any view a scan in flight wrote since. It reads the
// fields of every view, some seconds at 1M domains.
func ForgetTenantViews(ctx context.Context, rdb redis.UniversalClient, tenant string) (int64, error) {
	n, err := forget.DeleteWhereAny(ctx, rdb, ViewPrefix+"*", map[string]string{tenantField: tenantCode(tenant), oldTenantField: tenant})
	if err != nil {
		return n, fmt.Errorf("forget views of %s: %w", tenant, err)
	}
	return n, nil
}
