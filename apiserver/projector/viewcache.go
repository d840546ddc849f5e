package projector

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/lru"
)

// ViewCache keeps the decoded expiration views that pages of many domains
// read (the domain list), so that a view that did not change is neither
// read whole nor decoded again. Views asks every view's version ("@v",
// which every script that changes a view bumps in the same step) in one
// pipeline, and reads whole and decodes, as the package's Views does,
// only the views whose version is not the kept one's, or that have none (no
// view yet, or one of the layout whose version was a key of its own). The
// kept version is the one read with the whole view, in the same command.
// It keeps at most max views, dropping the least recently used.
//
// While `certfleet views rebuild` runs, which deletes each view but its
// "@v" before replaying it, the cache answers a view as it was until the
// replay's first write bumps it. The views it returns are shared with
// other callers: read only.
type ViewCache struct {
	c *lru.Versioned[View]
}

// DefaultViewCacheSize is how many views a ViewCache keeps by default:
// some 40 pages of 100 domains (a decoded view of three regions and two
// IPs is a few KB).
const DefaultViewCacheSize = 4096

// NewViewCache returns a cache of at most max views (DefaultViewCacheSize
// when max is 0 or less).
func NewViewCache(max int) *ViewCache {
	if max <= 0 {
		max = DefaultViewCacheSize
	}
	return &ViewCache{c: lru.New[View](max)}
}

var viewCacheTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_view_cache_total",
	Help: "Expiration views a page asked of the API server's cache: hit (unchanged, not read again) or miss (read whole and decoded).",
}, []string{"outcome"})

// Views is the package's Views through the cache.
func (c *ViewCache) Views(ctx context.Context, rdb redis.UniversalClient, domainIDs []string) (map[string]View, error) {
	if len(domainIDs) == 0 {
		return map[string]View{}, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(domainIDs))
	for i, id := range domainIDs {
		cmds[i] = pipe.HGet(ctx, ViewKey(id), versionField)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read versions of %d expiration views: %w", len(domainIDs), err)
	}
	out := make(map[string]View, len(domainIDs))
	var missed []string
	for i, id := range domainIDs {
		if v, ok := c.c.Get(id, cmds[i].Val()); ok {
			out[id] = v
			continue
		}
		missed = append(missed, id)
	}
	viewCacheTotal.WithLabelValues("hit").Add(float64(len(domainIDs) - len(missed)))
	viewCacheTotal.WithLabelValues("miss").Add(float64(len(missed)))
	read, versions, err := readViews(ctx, rdb, missed)
	if err != nil {
		return nil, err
	}
	for id, view := range read {
		out[id] = view
		c.c.Put(id, versions[id], view)
	}
	return out, nil
}
