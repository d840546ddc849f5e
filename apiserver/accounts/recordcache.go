package accounts

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/internal/lru"
)

// revFields are what a record is checked by when the tenant's
// generation moved since the cache last saw it: its rev, which every
// change of a field a list shows moves in the same step (an update, an
// approval; an add makes a new id), and its tenant (none once removed).
var revFields = []string{"rev", tenantField}

// DefaultRecordCacheSize is how many domains a RecordCache keeps by
// default: some 40 pages of 100.
const DefaultRecordCacheSize = 4096

// RecordRecheck is how long a kept record is trusted on its tenant's
// generation alone; past it, the next page that lists it reads its rev
// again. It bounds what a writer that does not move the generation (an
// older certfleet still running during a roll, a hand edit) can leave
// stale.
const RecordRecheck = time.Minute

// RecordCache keeps the listed domains an API server decoded, so that a
// page of domains whose records did not change reads none of them: each
// at its record's rev, stamped with the tenant's record generation
// (domainindex.GenKey) read in the same step as the record. While the
// generation a page's list read (domainindex.Page.Gen) is a kept
// domain's stamp, no field a list shows of any of the tenant's records
// has changed since the domain was read, so the page takes it as it is
// (docs/scaling.md, "A page's reads"). Only records of the compact
// layout (their tenant in "t") are kept: an older one is read whole each
// time until its next update moves it.
type RecordCache struct {
	c   *lru.Versioned[keptRecord]
	now func() time.Time
}

// keptRecord is a domain as decoded at its record's rev, and when its
// stamp was last set.
type keptRecord struct {
	d       Domain
	rev     string
	stamped time.Time
}

// NewRecordCache returns a cache of at most size domains
// (DefaultRecordCacheSize when size is 0 or less).
func NewRecordCache(size int) *RecordCache {
	if size <= 0 {
		size = DefaultRecordCacheSize
	}
	return &RecordCache{c: lru.New[keptRecord](size), now: time.Now}
}

var recordCacheTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_record_cache_total",
	Help: "Domain records a list page asked of the API server's cache: hit (kept at the tenant's record generation, nothing read), checked (kept at an older one, its rev read again and found the same) or miss (read whole and decoded).",
}, []string{"outcome"})

// Listed returns the domains ids of tenantID, listed by a page that read
// the tenant's record generation gen, as DecodeListed decodes them. A
// domain kept at gen (and within RecordRecheck) is taken as it is; one
// kept at another generation has its rev read, and is taken when that
// did not move; the others are read whole. The reads are one
// transaction with the generation: what they read is stamped with it.
// ok[i] is false where the record is gone or not tenantID's. changed
// tells that a record read may differ from what the page listed (the
// generation moved since the page read it, and the record was not found
// at the rev kept): the caller lists the page again, or shows the newer
// record.
func (rc *RecordCache) Listed(ctx context.Context, rdb redis.UniversalClient, tenantID, gen string, ids []string) (domains []Domain, ok []bool, changed bool, err error) {
	stored := storedTenant(tenantID)
	domains, ok = make([]Domain, len(ids)), make([]bool, len(ids))
	now := rc.now()
	var check, whole []int
	kept := make(map[int]keptRecord)
	for i, id := range ids {
		if stored == "" {
			whole = append(whole, i)
			continue
		}
		k, stamp, found := rc.c.Peek(id)
		switch {
		case !found || k.d.TenantID != tenantID:
			whole = append(whole, i)
		case stamp == gen && gen != "" && now.Sub(k.stamped) < RecordRecheck:
			rc.c.Get(id, stamp) // a use, for the LRU order
			domains[i], ok[i] = k.d, true
		default:
			kept[i] = k
			check = append(check, i)
		}
	}
	hits := len(ids) - len(check) - len(whole)
	recordCacheTotal.WithLabelValues("hit").Add(float64(hits))
	if len(check) == 0 && len(whole) == 0 {
		return domains, ok, false, nil
	}
	// The records kept at another generation, by their rev: those whose
	// rev moved are read whole after.
	if len(check) > 0 {
		revs, read, err := rc.read(ctx, rdb, tenantID, ids, check, revFields)
		if err != nil {
			return nil, nil, false, err
		}
		checked := 0
		for k, i := range check {
			if revs[k][tenantField] != stored || cmp.Or(revs[k]["rev"], "0") != kept[i].rev {
				whole = append(whole, i)
				continue
			}
			checked++
			domains[i], ok[i] = kept[i].d, true
			rc.c.Put(ids[i], read, keptRecord{d: kept[i].d, rev: kept[i].rev, stamped: now})
		}
		recordCacheTotal.WithLabelValues("checked").Add(float64(checked))
	}
	recordCacheTotal.WithLabelValues("miss").Add(float64(len(whole)))
	if len(whole) == 0 {
		return domains, ok, false, nil
	}
	recs, read, err := rc.read(ctx, rdb, tenantID, ids, whole, recordFields)
	if err != nil {
		return nil, nil, false, err
	}
	for k, i := range whole {
		rec := recs[k]
		if domains[i], ok[i], err = DecodeListed(tenantID, ids[i], rec); err != nil {
			return nil, nil, false, err
		}
		if ok[i] && stored != "" && rec[tenantField] == stored {
			rc.c.Put(ids[i], read, keptRecord{d: domains[i], rev: cmp.Or(rec["rev"], "0"), stamped: now})
		}
	}
	return domains, ok, read != gen, nil
}

// read reads fields of the records of ids at which, and the tenant's
// record generation after them, in one transaction (the tenant's slot
// holds them all).
func (rc *RecordCache) read(ctx context.Context, rdb redis.UniversalClient, tenantID string, ids []string, which []int, fields []string) ([]map[string]string, string, error) {
	pipe := rdb.TxPipeline()
	cmds := make([]*redis.SliceCmd, len(which))
	for k, i := range which {
		cmds[k] = pipe.HMGet(ctx, domainKey(tenantID, ids[i]), fields...)
	}
	genCmd := pipe.Get(ctx, domainindex.GenKey(tenantID))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("read %d listed domain records: %w", len(which), err)
	}
	out := make([]map[string]string, len(which))
	for k, c := range cmds {
		out[k] = fieldMap(fields, c.Val())
	}
	return out, genCmd.Val(), nil
}
