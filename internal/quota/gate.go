package quota

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Gate counts each tenant's requests in flight in this process and
// refuses one that would pass the tenant's InFlight limit. The count is
// per process (one API server replica): a limit on concurrency protects
// the replica's goroutines and connections, which are per replica too.
// Limits are read from Redis at most once per CacheFor per tenant, so an
// override applies within that time and a request costs no Redis read.
type Gate struct {
	rdb      redis.UniversalClient
	defaults Limits
	cacheFor time.Duration
	now      func() time.Time

	mu     sync.Mutex
	counts map[string]int64
	limits map[string]cachedLimit
}

type cachedLimit struct {
	limit int64
	until time.Time
}

// CacheFor is how long a Gate keeps a tenant's limit.
const CacheFor = 30 * time.Second

// NewGate returns a gate reading overrides through rdb over defaults.
func NewGate(rdb redis.UniversalClient, defaults Limits) *Gate {
	return &Gate{rdb: rdb, defaults: defaults.With(Defaults), cacheFor: CacheFor, now: time.Now,
		counts: map[string]int64{}, limits: map[string]cachedLimit{}}
}

// Enter admits one request of tenant, or returns *Exceeded when the
// tenant already has its limit of requests in flight here. release must
// be called when the request ends.
func (g *Gate) Enter(ctx context.Context, tenant string) (release func(), err error) {
	limit, err := g.limit(ctx, tenant)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if limit > 0 && g.counts[tenant] >= limit {
		return nil, &Exceeded{Resource: InFlight, Limit: limit}
	}
	g.counts[tenant]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.counts[tenant]--; g.counts[tenant] <= 0 {
				delete(g.counts, tenant)
			}
		})
	}, nil
}

// limit returns the tenant's InFlight limit, from the cache when fresh.
func (g *Gate) limit(ctx context.Context, tenant string) (int64, error) {
	now := g.now()
	g.mu.Lock()
	c, ok := g.limits[tenant]
	g.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.limit, nil
	}
	l, err := Effective(ctx, g.rdb, tenant, g.defaults)
	if err != nil {
		return 0, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.limits) > 100_000 {
		for t, c := range g.limits {
			if !now.Before(c.until) {
				delete(g.limits, t)
			}
		}
	}
	g.limits[tenant] = cachedLimit{limit: l[InFlight], until: now.Add(g.cacheFor)}
	return l[InFlight], nil
}

// InFlight returns how many of tenant's requests this process serves now.
func (g *Gate) InFlight(tenant string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts[tenant]
}
