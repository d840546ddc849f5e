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

// SweepStep runs one step of the attention sweep of tenantID's tier
// "att" (the one with every phase) for q's warning bound, and tells
// whether the tier is ready.
func SweepStep(ctx context.Context, rdb redis.UniversalClient, tenantID, recordPrefix string, q Query) (bool, error) {
	_, _, warnB := q.bounds()
	return sweepStep(ctx, rdb, tenantID, recordPrefix, tierAll, warnB)
}

// PlanOf is the plan the list script followed for p.
func PlanOf(p Page) string { return p.plan }

// Attention tells whether q walks a tier of the attention index.
func Attention(q Query) bool { return q.attention() != "" }

// AttentionTier is the tier of the attention index q walks, "" for none.
func AttentionTier(q Query) string { return q.attention() }

// TierOf is the tier of the attention index the list script walked for
// p, "" for none.
func TierOf(p Page) string { return p.tier }
