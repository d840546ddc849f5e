package domainindex

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// WithPlan forces q's plan: "read" (the smallest filter's members,
// sorted), "walk" (the sort's index, filtered) or "semi" (the sort's
// index, kept when among the filters' matches).
func WithPlan(q Query, plan string) Query {
	q.plan = plan
	return q
}

// DecodeCursor is decodeCursor, for the fuzz target.
var DecodeCursor = decodeCursor

// WithoutAttention keeps q's walk off the attention index: the walk of
// before, the benchmark's baseline.
func WithoutAttention(q Query) Query {
	q.noAttention = true
	return q
}

// SetSweepChunk sets how many domains a step of the attention sweep adds,
// until the test ends.
func SetSweepChunk(t interface{ Cleanup(func()) }, n int) {
	was := sweepChunk
	sweepChunk = n
	t.Cleanup(func() { sweepChunk = was })
}

// SweepStep runs one step of the attention sweep of tenantID's first
// tier not ready for q's edges (every tier in turn, so every phase), and
// tells whether every tier is ready.
func SweepStep(ctx context.Context, rdb redis.UniversalClient, tenantID, recordPrefix string, q Query) (bool, error) {
	for _, t := range tiers {
		done, err := sweepStep(ctx, rdb, tenantID, recordPrefix, t.name, q)
		if err != nil || !done {
			return false, err
		}
	}
	return true, nil
}

// Tiers are the attention index's tiers: name, the expiry's key ("ssl",
// "whois"), the status it serves, its bounds' edges ("now", "crit",
// "warn", "" for none) and whether it is the error tier.
func Tiers() []TierDef {
	out := make([]TierDef, len(tiers))
	for i, t := range tiers {
		out[i] = TierDef{Name: t.name, Expiry: t.expiry, Status: t.status, Lo: t.lo, Hi: t.hi, Invalid: t.invalid}
	}
	return out
}

// TierDef is a tier as Tiers lists it.
type TierDef struct {
	Name, Expiry, Status, Lo, Hi string
	Invalid                      bool
}

// SweepPast is how far past its edge a sweep sets a tier's upper bound.
const SweepPast = sweepPast

// SweepChunk is how many domains a step of the attention sweep moves.
func SweepChunk() int { return sweepChunk }

// PlanOf is the plan the list script followed for p.
func PlanOf(p Page) string { return p.plan }

// Attention tells whether q walks a tier of the attention index.
func Attention(q Query) bool { return q.attention() != "" }

// AttentionTier is the tier of the attention index q walks, "" for none.
func AttentionTier(q Query) string { return q.attention() }

// TierOf is the tier of the attention index the list script walked for
// p, "" for none.
func TierOf(p Page) string { return p.tier }

// SetTagOrderMin sets how many domains a tag has past which a list keeps
// its hostname order, until the test ends.
func SetTagOrderMin(t interface{ Cleanup(func()) }, n int) {
	was := tagOrderMin
	tagOrderMin = n
	t.Cleanup(func() { tagOrderMin = was })
}

// HostMember is the hostname index's member of domain id named
// host:port.
func HostMember(host string, port int, id string) string {
	m, err := Member(id)
	if err != nil {
		panic(err)
	}
	return namePrefix(host, port) + m
}

// SetTagOrderShare sets the share of a tenant's domains its tag orders
// may hold together, until the test ends.
func SetTagOrderShare(t interface{ Cleanup(func()) }, share float64) {
	was := tagOrderShare
	tagOrderShare = share
	t.Cleanup(func() { tagOrderShare = was })
}

// OrderRange reads the order key, bucketed or plain, as ZRANGE 0 -1
// WITHSCORES reads a plain one.
func OrderRange(ctx context.Context, rdb redis.UniversalClient, key string) ([]redis.Z, error) {
	var out []redis.Z
	ids, err := rdb.HLen(ctx, key+bucketSep+"n").Result()
	if err != nil || ids == 0 {
		return rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
	}
	entries, err := rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		zs, err := rdb.ZRangeWithScores(ctx, key+bucketSep+e[len(e)-8:], 0, -1).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, zs...)
	}
	return out, nil
}

// OrderMembers is OrderRange's members.
func OrderMembers(ctx context.Context, rdb redis.UniversalClient, key string) []string {
	zs, _ := OrderRange(ctx, rdb, key)
	out := make([]string, len(zs))
	for i, z := range zs {
		out[i] = z.Member.(string)
	}
	return out
}

// Unbucket rewrites the order key, when bucketed, as the plain sorted
// set of layouts before 7 (for tests that write an old layout's index).
func Unbucket(ctx context.Context, rdb redis.UniversalClient, key string) error {
	if n, err := rdb.Exists(ctx, key+bucketSep+"n").Result(); err != nil || n == 0 {
		return err
	}
	zs, err := OrderRange(ctx, rdb, key)
	if err != nil {
		return err
	}
	if err := dropOrder(ctx, rdb, key); err != nil {
		return err
	}
	return rdb.ZAdd(ctx, key, zs...).Err()
}

// scored tells the bucketed orders by score (named without the
// prefix): their positions start with the score (scoreEnc).
func scored(name string) bool {
	return name == keyCreated || strings.HasPrefix(name, keyTag)
}

// scoreEnc is bucketLua's ob_enc: 16 characters that sort as the whole
// score s does.
func scoreEnc(s float64) string {
	const maxS = 999999999999999
	n := int64(math.Floor(s))
	if n >= 0 {
		return fmt.Sprintf("1%015d", min(n, maxS))
	}
	return fmt.Sprintf("0%015d", max(n, -maxS)+maxS+1)
}

// CheckOrders checks every bucketed order of tenantID's index: each
// bucket not empty, within the capacity, its size as the sizes hash
// says and its members from its lower end up to the next one's, the
// first's lower end empty, "#" the sum.
func CheckOrders(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	keys, err := rdb.Keys(ctx, Prefix(tenantID)+"*"+bucketSep+"n").Result()
	if err != nil {
		return err
	}
	for _, sk := range keys {
		k := sk[:len(sk)-len(bucketSep+"n")]
		sizes, err := rdb.HGetAll(ctx, sk).Result()
		if err != nil {
			return err
		}
		entries, err := rdb.ZRange(ctx, k, 0, -1).Result()
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return fmt.Errorf("%q: sizes %q without a directory", k, sizes)
		}
		total := 0
		for i, e := range entries {
			lo, id := e[:len(e)-8], e[len(e)-8:]
			if (i == 0) != (lo == "\x00\x00") {
				return fmt.Errorf("%q: entry %d %q", k, i, e)
			}
			ms, err := rdb.ZRangeWithScores(ctx, k+bucketSep+id, 0, -1).Result()
			if err != nil {
				return err
			}
			if len(ms) == 0 || len(ms) > bucketCap || sizes[id] != strconv.Itoa(len(ms)) {
				return fmt.Errorf("%q: bucket %s holds %d, sizes say %q", k, id, len(ms), sizes[id])
			}
			total += len(ms)
			for _, z := range ms {
				m := z.Member.(string)
				p := strings.ReplaceAll(m, "\x00", "\x00\x01") + "\x00\x00"
				if scored(strings.TrimPrefix(k, Prefix(tenantID))) {
					p = scoreEnc(z.Score) + p
				} else if z.Score != 0 {
					return fmt.Errorf("%q: bucket %d holds %q at score %v in an order by member", k, i, m, z.Score)
				}
				if i > 0 && p < lo {
					return fmt.Errorf("%q: bucket %d holds %q below its lower end", k, i, m)
				}
				if i+1 < len(entries) && p >= entries[i+1][:len(entries[i+1])-8] {
					return fmt.Errorf("%q: bucket %d holds %q past the next lower end", k, i, m)
				}
			}
		}
		if sizes["#"] != strconv.Itoa(total) {
			return fmt.Errorf("%q: sizes say %q in all, buckets hold %d (%d buckets)", k, sizes["#"], total, len(entries))
		}
	}
	return nil
}

// DropOrder deletes the order key and, when bucketed, its buckets and
// sizes (a DEL of the key alone leaves them).
var DropOrder = dropOrder
