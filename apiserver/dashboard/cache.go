package dashboard

import (
	"sync"
	"time"
)

// maxCachedTenants bounds a ttlCache: past it, expired entries go, and
// when none has expired the cache starts over.
const maxCachedTenants = 10_000

// ttlCache keeps a value per key for ttl (measured with the monotonic
// clock, so a test's fixed Now does not freeze it); ttl < 0 keeps nothing.
// It is per process: replicas each keep their own.
type ttlCache[V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[string]cached[V]
}

type cached[V any] struct {
	v  V
	at time.Time
}

func newTTLCache[V any](ttl time.Duration, max int) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, max: max, m: map[string]cached[V]{}}
}

// get returns key's value when younger than the ttl.
func (c *ttlCache[V]) get(key string) (V, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || c.ttl < 0 || time.Since(e.at) >= c.ttl {
		var zero V
		return zero, time.Time{}, false
	}
	return e.v, e.at, true
}

// put keeps v for key from now.
func (c *ttlCache[V]) put(key string, v V) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if time.Since(e.at) >= c.ttl {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[key] = cached[V]{v: v, at: time.Now()}
}
