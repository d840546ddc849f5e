package stream

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// OldestUnacknowledged returns the id of the oldest entry of stream that
// group has not acknowledged, pending with a consumer or not delivered
// yet, and its time (the id's Unix milliseconds); ok is false when the
// group has acknowledged every entry. A stream the group does not read
// yet is unacknowledged from its first entry. An entry added after the
// call has a later id than any the call saw, so the answer stays a lower
// bound of what the group has not applied for as long as it only moves
// forward.
func OldestUnacknowledged(ctx context.Context, rdb redis.UniversalClient, stream, group string) (id string, ms int64, ok bool, err error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if HasRedisError(err, "no such key") {
			return "", 0, false, nil
		}
		return "", 0, false, fmt.Errorf("groups of %s: %w", stream, err)
	}
	start := "-"
	pending := ""
	for _, g := range groups {
		if g.Name != group {
			continue
		}
		start = nextID(g.LastDeliveredID)
		if g.Pending > 0 {
			p, err := rdb.XPending(ctx, stream, group).Result()
			if err != nil {
				return "", 0, false, fmt.Errorf("pending of %s in %s: %w", group, stream, err)
			}
			if p.Count > 0 {
				pending = p.Lower
			}
		}
	}
	first, err := rdb.XRangeN(ctx, stream, start, "+", 1).Result()
	if err != nil {
		return "", 0, false, fmt.Errorf("first undelivered entry of %s: %w", stream, err)
	}
	switch {
	case pending != "" && (len(first) == 0 || CompareIDs(pending, first[0].ID) < 0):
		id = pending
	case len(first) > 0:
		id = first[0].ID
	default:
		return "", 0, false, nil
	}
	m, _ := splitID(id)
	return id, int64(m), true, nil
}
