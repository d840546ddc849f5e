package accounts

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/forget"
)

// Forgotten is what Forget removed of an account.
type Forgotten struct {
	// Domains are the domains removed through RemoveDomain (each with its
	// domain.removed event): the coordinator unschedules them and the
	// projector drops their views, as for a domain DELETE.
	Domains []Domain
	// APIKeys is the keys revoked (live ones) and key records deleted.
	APIKeys int64
	// Account is 1 when the account record was there.
	Account int64
	// TenantKeys is the other keys of the tenant's namespace deleted (the
	// key and domain indexes, held keys' domain sets, the import horizon).
	TenantKeys int64
}

// Exists tells whether tenantID has an account record.
func (s *Store) Exists(ctx context.Context, tenantID string) (bool, error) {
	n, err := s.rdb.Exists(ctx, accountKey(tenantID)).Result()
	if err != nil {
		return false, fmt.Errorf("read account %s: %w", tenantID, err)
	}
	return n == 1, nil
}

// Forget removes everything this package keeps of tenantID, in the order
// that keeps the account harmless at every step, so a crash half way is
// finished by running it again:
//
//  1. every listed API key is revoked (RevokeKey: it stops authenticating
//     at once and apikey.revoked.v1 is appended; a held key's servers go
//     with it, counted with the domains);
//  2. every domain is removed through RemoveDomain, with its
//     domain.removed.v1 event;
//  3. the key records of the tenant (apikey:<hash>, deployment-wide, so
//     found by their tenant_id among the apikey:* family: revoked keys
//     are no longer listed), the tenant's namespace
//     (tenant:{tNN}:<tenant>:*) and the account record are deleted.
//
// A second run finds nothing and returns zeros.
func (s *Store) Forget(ctx context.Context, tenantID string) (Forgotten, error) {
	var out Forgotten
	keys, err := s.ListKeys(ctx, tenantID)
	if err != nil {
		return out, err
	}
	for _, k := range keys {
		removed, err := s.revokeKey(ctx, tenantID, k.ID)
		out.Domains = append(out.Domains, removed...)
		if err != nil && !errors.Is(err, ErrUnknownKeyID) {
			return out, err
		}
	}
	domains, err := s.ListDomains(ctx, tenantID)
	if err != nil {
		return out, err
	}
	for _, d := range domains {
		removed, err := s.RemoveDomain(ctx, tenantID, d.ID)
		if errors.Is(err, ErrUnknownDomain) {
			continue
		}
		if err != nil {
			return out, err
		}
		out.Domains = append(out.Domains, removed)
	}
	// Key records: the family is deployment-wide (a key's hash names its
	// tenant), so the tenant's are the ones whose tenant_id is it.
	n, err := forget.DeleteWhere(ctx, s.rdb, "apikey:*", "tenant_id", tenantID)
	if err != nil {
		return out, fmt.Errorf("forget api keys of %s: %w", tenantID, err)
	}
	out.APIKeys = n
	if out.TenantKeys, err = forget.DeletePattern(ctx, s.rdb, events.TenantNamespace(tenantID)+"*"); err != nil {
		return out, fmt.Errorf("forget keys of %s: %w", tenantID, err)
	}
	if out.Account, err = s.rdb.Del(ctx, accountKey(tenantID)).Result(); err != nil {
		return out, fmt.Errorf("forget account %s: %w", tenantID, err)
	}
	s.logger.Info("account forgotten", zap.String("tenant_id", tenantID), zap.Int("domains", len(out.Domains)),
		zap.Int64("api_keys", out.APIKeys), zap.Int64("tenant_keys", out.TenantKeys))
	return out, nil
}
