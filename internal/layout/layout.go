// Package layout keeps, in Redis, the generation of the data layout the
// newest certfleet that ran against it writes, so that an older binary
// stops instead of misreading data it does not know (a view field per
// region, a record without its default port, compact alert leaves, ids
// as bytes in the schedule...). Every role that reads or writes those
// (the API server and the coordinator) claims its generation at start
// (Claim) and watches for a newer one while it runs (Watch); agents read
// only jobs and write only results, whose format is versioned apart.
//
// The gate protects from the next layout change on: binaries from before
// it do not check (docs/operations.md, "Upgrading").
package layout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Generation is this binary's layout. Raise it with every change that an
// older binary would misread, and say so in docs/operations.md
// ("Upgrading"). 1: the layouts up to 2026-12-06 (sixth). 2: the list
// indexes' attention index, which an older projector would not keep. 3:
// its tiers in the other expiry's order (list index layout 5), which an
// older projector would not keep either. 4: the tiers as one status's
// band each, and tags and registration reasons as zsets (list index
// layout 6), whose bounds an older projector would misread and whose
// zsets it would write as sets. 5: schedule buckets that split as they
// fill (coordinator/buckets.go), which an older coordinator would not
// find, and views of layout 5 (a region's scan mark in its own field,
// the name in "@n"), which an older API server cannot decode and whose
// scripts would let a view go back in time, and domain records whose
// tenant is "t" (16 bytes), in which an older API server finds none. 6:
// a tag's orders by hostname and expiry (domainindex's keyTagHost and
// the rest), which a list builds and an older API server's writers
// would not keep. 7: the tenant's record generation
// (domainindex.GenKey), which an older API server's updates and
// approvals would not move, so a newer one's record cache would go on
// showing the records as they were. 8: email recipients' double opt-in
// (internal/channels' confirm.go): an older API server would rewrite a
// channel without its "confirm" mark, so that its pending recipients
// counted as confirmed, and an older notifier would mail them alerts.
// 9: the list indexes' orders by member as bucketed orders past 128
// members (list index layout 7, domainindex's bucketLua), which an
// older API server would read as plain zsets (its lookups by name would
// miss) and write beside the buckets. 10: the tenant's created order
// and its tags' orders (created_at) as bucketed orders too (list index
// layout 8), which an older API server would count as its domains (the
// directory's size, its quotas) and read its ids from, and whose
// writers would add to beside the buckets. 11: the registrations'
// references counted in their states (reg:state, coordinator's
// refsLua), whose count an older coordinator's result would drop and
// whose hash of before (reg:refs) it would go on writing.
const Generation = 11

// Key holds the newest generation that ran against this Redis.
const Key = "certfleet:layout"

// ErrNewer is a Redis whose data a newer certfleet has written.
var ErrNewer = errors.New("the data is of a newer certfleet layout")

// claimScript sets the generation to ARGV[1] unless it is higher, and
// returns the generation it finds after.
var claimScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(ARGV[1])
if cur >= mine then return cur end
redis.call('SET', KEYS[1], mine)
return mine
`)

// Claim records gen as the layout of the data, unless a newer one is
// recorded: then it fails with ErrNewer (wrapped, naming both).
func Claim(ctx context.Context, rdb redis.UniversalClient, gen int) error {
	got, err := claimScript.Run(ctx, rdb, []string{Key}, gen).Int()
	if err != nil {
		return fmt.Errorf("claim layout generation: %w", err)
	}
	return check(got, gen)
}

func check(got, gen int) error {
	if got > gen {
		return fmt.Errorf("%w: %s is %d, this binary's is %d; run the newer certfleet (docs/operations.md, \"Upgrading\")",
			ErrNewer, Key, got, gen)
	}
	return nil
}

// Watch reads the recorded generation every interval until ctx ends, and
// returns ErrNewer (wrapped) once it is above gen, so that the process
// stops. A failed read is retried at the next interval (Redis being away
// is the readiness checks' business).
func Watch(ctx context.Context, rdb redis.UniversalClient, gen int, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		v, err := rdb.Get(ctx, Key).Result()
		if err != nil {
			continue
		}
		got, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("layout generation %q (key %s): %w", v, Key, err)
		}
		if err := check(got, gen); err != nil {
			return err
		}
	}
}
