package domainindex

import (
	"context"

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
