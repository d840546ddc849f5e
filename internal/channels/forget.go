package channels

import (
	"context"
	"errors"
	"fmt"
)

// Forget deletes every channel of tenant (a tenant leaving) through
// Delete, so each gets its channel.deleted.v1 event, its attempt list goes
// with it and its pending deliveries give up when the notifier finds it
// gone; then the tenant's channel index. It returns how many channels it
// deleted. The tenant's confirmed recipients go last. Queued delivery records are not the tenant's keys by name and
// expire on their own (30 days).
func (s *Store) Forget(ctx context.Context, tenant string) (int64, error) {
	ids, err := s.rdb.ZRange(ctx, tenantChannelsKey(tenant), 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("forget channels of %s: %w", tenant, err)
	}
	var n int64
	for _, id := range ids {
		err := s.Delete(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	if err := s.rdb.Del(ctx, tenantChannelsKey(tenant), confirmedKey(tenant)).Err(); err != nil {
		return n, fmt.Errorf("forget channels of %s: %w", tenant, err)
	}
	return n, nil
}
