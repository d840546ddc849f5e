package clientca

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Forgotten is what Forget did to a tenant's client certificates.
type Forgotten struct {
	// Revoked is the certificates revoked now (cessationOfOperation);
	// ones revoked before are not counted.
	Revoked int64
	// KeysDropped is the sealed private keys deleted from the records.
	KeysDropped int64
	// Lists is the tenant's certificate list deleted (0 or 1).
	Lists int64
}

// Forget revokes every live client certificate of tenantID (a tenant
// leaving) and then drops what the tenant could still take from them: the
// sealed private keys of certificates certfleet generated, and the
// tenant's certificate list, so no route reaches them any more. The
// certificate records themselves, the serial registry and the revocation
// list stay: they are the CA's, and OCSP and the CRL keep answering
// "revoked" for the serials from them (a deleted record would make OCSP
// answer "unknown", which a relying party may accept).
func (s *Store) Forget(ctx context.Context, tenantID string) (Forgotten, error) {
	var out Forgotten
	ids, err := s.rdb.ZRange(ctx, tenantCertsKey(tenantID), 0, -1).Result()
	if err != nil {
		return out, fmt.Errorf("forget client certificates of %s: %w", tenantID, err)
	}
	for _, id := range ids {
		_, err := s.Revoke(ctx, tenantID, id, "cessationOfOperation")
		switch {
		case err == nil:
			out.Revoked++
		case errors.Is(err, ErrAlreadyRevoked), errors.Is(err, ErrNotFound):
		default:
			return out, err
		}
		n, err := s.rdb.HDel(ctx, certKey(id), "key_sealed").Result()
		if err != nil {
			return out, fmt.Errorf("forget key of client certificate %s: %w", id, err)
		}
		out.KeysDropped += n
	}
	if out.Lists, err = s.rdb.Del(ctx, tenantCertsKey(tenantID)).Result(); err != nil {
		return out, fmt.Errorf("forget client certificates of %s: %w", tenantID, err)
	}
	// The active set is empty now (every certificate is revoked); its
	// counted mark goes with the list it counted.
	if err := s.rdb.Del(ctx, tenantActiveKey(tenantID), tenantCountedKey(tenantID)).Err(); err != nil {
		return out, fmt.Errorf("forget client certificates of %s: %w", tenantID, err)
	}
	if len(ids) > 0 {
		s.logger.Info("client certificates of a tenant forgotten", zap.String("tenant_id", tenantID),
			zap.Int64("revoked", out.Revoked), zap.Int64("keys_dropped", out.KeysDropped))
	}
	return out, nil
}
