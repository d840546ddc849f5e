// Package forget has the helpers the packages keeping tenant data use to
// delete a family of their own keys when a tenant leaves (`certfleet
// tenant delete`). Each package names its own families (a SCAN MATCH
// pattern within the tenant's namespace, or a deployment-wide family
// filtered by the hash field naming the tenant); nothing here knows any
// key layout.
package forget

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// scanBatch is the COUNT of one SCAN call.
const scanBatch = 1000

// DeletePattern deletes every key matching pattern and returns how many it
// deleted. On Redis Cluster it scans every master.
func DeletePattern(ctx context.Context, rdb redis.UniversalClient, pattern string) (int64, error) {
	return deleteMatching(ctx, rdb, pattern, nil)
}

// DeleteWhere deletes every hash matching pattern whose field is want
// (e.g. the apikey:* records whose tenant_id is the tenant) and returns
// how many it deleted.
func DeleteWhere(ctx context.Context, rdb redis.UniversalClient, pattern, field, want string) (int64, error) {
	return DeleteWhereAny(ctx, rdb, pattern, map[string]string{field: want})
}

// DeleteWhereAny is DeleteWhere for a family that names the tenant in
// one of several fields (a layout and the one before): it deletes every
// hash matching pattern in which any field of fields holds its value.
func DeleteWhereAny(ctx context.Context, rdb redis.UniversalClient, pattern string, fields map[string]string) (int64, error) {
	if _, empty := fields[""]; empty || len(fields) == 0 {
		return 0, errors.New("forget: DeleteWhere needs a field")
	}
	return deleteMatching(ctx, rdb, pattern, fields)
}

// Keys returns the keys matching pattern (for a family whose members must
// be read before they are deleted).
func Keys(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	var out []string
	err := eachNode(ctx, rdb, func(c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, scanBatch).Result()
			if err != nil {
				return err
			}
			out = append(out, keys...)
			if next == 0 {
				return nil
			}
			cursor = next
		}
	})
	return out, err
}

func deleteMatching(ctx context.Context, rdb redis.UniversalClient, pattern string, fields map[string]string) (int64, error) {
	keys, err := Keys(ctx, rdb, pattern)
	if err != nil {
		return 0, err
	}
	if len(fields) == 0 {
		return DeleteKeys(ctx, rdb, keys...)
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	// The fields are read checkBatch keys per pipeline: a family may hold
	// millions (every view at 1M domains), more than one pipeline sends
	// within the client's write timeout.
	var mine []string
	for from := 0; from < len(keys); from += checkBatch {
		batch := keys[from:min(from+checkBatch, len(keys))]
		pipe := rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.HMGet(ctx, k, names...)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		for i, k := range batch {
			for j, v := range cmds[i].Val() {
				if s, ok := v.(string); ok && s == fields[names[j]] {
					mine = append(mine, k)
					break
				}
			}
		}
	}
	return DeleteKeys(ctx, rdb, mine...)
}

// checkBatch is how many keys' field DeleteWhere reads in one pipeline.
const checkBatch = 10_000

// DeleteKeys deletes keys one DEL each (on Redis Cluster they may be in
// different slots) and returns how many existed.
func DeleteKeys(ctx context.Context, rdb redis.UniversalClient, keys ...string) (int64, error) {
	var total int64
	for _, k := range keys {
		n, err := rdb.Del(ctx, k).Result()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// eachNode runs fn on every master of a cluster, one at a time, or on rdb.
func eachNode(ctx context.Context, rdb redis.UniversalClient, fn func(redis.Cmdable) error) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return fn(rdb)
	}
	var mu sync.Mutex
	return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(c)
	})
}
