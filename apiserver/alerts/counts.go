package alerts

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// builtField marks a tenant's open counts as built: from then on the
// reconcile script keeps them.
const builtField = "@v"

// buildRetries bounds how often building the counts starts over because
// an alert changed meanwhile.
const buildRetries = 8

// Counts are a tenant's alerts by kind, for GET /api/v1/stats.
type Counts struct {
	// Open counts the active alerts (raised, not resolved; notices such
	// as cert_changed are never open) by alert type; types with none are
	// left out.
	Open map[string]int64
	// Raised counts the alerts (notices too) triggered at or after the
	// time asked for.
	Raised int64
}

// OpenCounts returns tenant's open alerts by type and how many alerts were
// triggered since since. The open counts are a hash the reconcile script
// keeps (alerts:tenant:<tenant>:open), so the read costs the same however
// many alerts the tenant has; the first read of a tenant whose counts were
// never built (alerts raised before the counts existed) builds them from
// its alert records once.
func (e *Engine) OpenCounts(ctx context.Context, tenant string, since time.Time) (Counts, error) {
	for attempt := 0; ; attempt++ {
		var (
			open   *redis.MapStringStringCmd
			raised *redis.IntCmd
		)
		if _, err := e.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			open = pipe.HGetAll(ctx, openKey(tenant))
			raised = pipe.ZCount(ctx, tenantKey(tenant), strconv.FormatInt(since.UnixMilli(), 10), "+inf")
			return nil
		}); err != nil {
			return Counts{}, fmt.Errorf("count alerts of %s: %w", tenant, err)
		}
		if _, built := open.Val()[builtField]; built {
			out := Counts{Open: map[string]int64{}, Raised: raised.Val()}
			for kind, v := range open.Val() {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return Counts{}, fmt.Errorf("count alerts of %s: %s is %q", tenant, kind, v)
				}
				if kind != builtField && n > 0 {
					out.Open[kind] = n
				}
			}
			return out, nil
		}
		if attempt > 0 {
			return Counts{}, fmt.Errorf("count alerts of %s: counts missing after building them", tenant)
		}
		if err := e.buildCounts(ctx, tenant); err != nil {
			return Counts{}, err
		}
	}
}

// buildCounts counts tenant's open alerts from its records and writes the
// counts, marked built, in one transaction that fails if the alert index,
// any record or the counts changed since they were read (WATCH; all the
// keys share the tenant's slot): the reconcile script leaves unbuilt
// counts alone, so a change in between would otherwise be lost.
func (e *Engine) buildCounts(ctx context.Context, tenant string) error {
	build := func(tx *redis.Tx) error {
		ids, err := tx.ZRange(ctx, tenantKey(tenant), 0, -1).Result()
		if err != nil {
			return err
		}
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = alertKey(tenant, id)
		}
		if len(keys) > 0 {
			if err := tx.Watch(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		counts := map[string]int64{}
		pipe := tx.Pipeline()
		recs := make([]*redis.MapStringStringCmd, len(keys))
		for i, k := range keys {
			recs[i] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, cmd := range recs {
			if len(cmd.Val()) == 0 {
				continue // forgotten meanwhile
			}
			a, err := decodeAlert(ids[i], cmd.Val())
			if err != nil {
				return err
			}
			if a.Status == StatusActive {
				counts[a.AlertType]++
			}
		}
		fields := []any{builtField, 1}
		for kind, n := range counts {
			fields = append(fields, kind, n)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, openKey(tenant))
			p.HSet(ctx, openKey(tenant), fields...)
			return nil
		})
		return err
	}
	for range buildRetries {
		err := e.rdb.Watch(ctx, build, tenantKey(tenant), openKey(tenant))
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return fmt.Errorf("build alert counts of %s: %w", tenant, err)
		}
		return nil
	}
	return fmt.Errorf("build alert counts of %s: alerts changed %d times while counting", tenant, buildRetries)
}
