package accounts

import (
	"cmp"
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/lru"
)

// RevFields are the record fields a list page reads with its ids when the
// API server keeps the domains it decoded (RecordCache): the record's
// rev, which every change of a listed field moves in the same step (an
// update; an add makes a new id), and its tenant. Reading these two
// instead of every field the list shows takes about a third off a page's
// list script
// (docs/scaling.md, "Where a page's time goes inside Redis").
var RevFields = []string{"rev", tenantField}

// DefaultRecordCacheSize is how many domains a RecordCache keeps by
// default: some 40 pages of 100.
const DefaultRecordCacheSize = 4096

// RecordCache keeps the listed domains an API server decoded, each at its
// record's rev, so that a page of domains whose records did not change
// reads two fields of each in its list script instead of every listed
// one, and decodes none. Only records of the compact layout (their
// tenant in "t") are kept: an older one is read whole each time until
// its next update moves it.
type RecordCache struct {
	c *lru.Versioned[Domain]
}

// NewRecordCache returns a cache of at most size domains
// (DefaultRecordCacheSize when size is 0 or less).
func NewRecordCache(size int) *RecordCache {
	if size <= 0 {
		size = DefaultRecordCacheSize
	}
	return &RecordCache{c: lru.New[Domain](size)}
}

var recordCacheTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_record_cache_total",
	Help: "Domain records a list page asked of the API server's cache: hit (unchanged, not read again) or miss (read whole and decoded).",
}, []string{"outcome"})

// Listed returns the domains ids of tenantID, whose list page read revs
// (each id's RevFields, as domainindex.Row.Record holds them), as
// DecodeListed decodes them: a domain whose record has the tenant and
// rev read there comes from the cache; the others are read whole
// (recordFields) in one pipeline. ok[i] is false where the record is gone or not tenantID's.
// changed tells that a record read whole had another rev than the page
// read (it changed in between): the caller lists the page again, or
// shows the newer record.
func (rc *RecordCache) Listed(ctx context.Context, rdb redis.UniversalClient, tenantID string, ids []string,
	revs []map[string]string) (domains []Domain, ok []bool, changed bool, err error) {
	stored := storedTenant(tenantID)
	domains, ok = make([]Domain, len(ids)), make([]bool, len(ids))
	var missed []int
	for i, id := range ids {
		if stored != "" && revs[i][tenantField] == stored {
			if d, hit := rc.c.Get(id, cmp.Or(revs[i]["rev"], "0")); hit {
				domains[i], ok[i] = d, true
				continue
			}
		}
		missed = append(missed, i)
	}
	recordCacheTotal.WithLabelValues("hit").Add(float64(len(ids) - len(missed)))
	recordCacheTotal.WithLabelValues("miss").Add(float64(len(missed)))
	if len(missed) == 0 {
		return domains, ok, false, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(missed))
	for k, i := range missed {
		cmds[k] = pipe.HMGet(ctx, domainKey(tenantID, ids[i]), recordFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, false, fmt.Errorf("read %d listed domain records: %w", len(missed), err)
	}
	for k, i := range missed {
		rec := recordMap(cmds[k].Val())
		rev := cmp.Or(rec["rev"], "0")
		if rev != cmp.Or(revs[i]["rev"], "0") {
			changed = true
		}
		if domains[i], ok[i], err = DecodeListed(tenantID, ids[i], rec); err != nil {
			return nil, nil, false, err
		}
		if ok[i] && rec[tenantField] == stored {
			rc.c.Put(ids[i], rev, domains[i])
		}
	}
	return domains, ok, changed, nil
}
