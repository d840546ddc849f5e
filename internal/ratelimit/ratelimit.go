// Package ratelimit limits request rates across every replica: the state
// of each limited subject lives in Redis and one Lua script both decides
// and records, so replicas share one budget and never race. The API server
// limits its clients with it; registration lookups limit what certfleet
// asks each registry server.
//
// The algorithm is GCRA (the generic cell rate algorithm): per subject one
// number, the theoretical arrival time (TAT) of the next request, kept in
// microseconds of the Redis server's clock, so that replicas' clocks do not
// matter. A subject idle for a period costs no memory: the key expires when
// its TAT is more than a period in the past (kept that long so that a
// subject's key does not come and go between its requests).
//
// Redis layout (owned by this package; the prefix is the caller's):
//
//	<prefix><key>     string, TAT in µs since the epoch, expiring a period
//	                  after the TAT
//
// Prefixes in use: KeyPrefix ("ratelimit:", API clients) and
// "reglimit:" (registry servers, internal/registration).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix is the prefix of the API server's keys.
const KeyPrefix = "ratelimit:"

// Limit allows Rate requests per Period, of which up to Burst at once.
type Limit struct {
	// Rate is the number of requests allowed per Period.
	Rate int
	// Period is the window Rate counts over, e.g. a minute.
	Period time.Duration
	// Burst is how many requests may come at once after an idle period.
	// Zero means Rate.
	Burst int
}

// PerMinute allows n requests a minute, all of them at once if they come
// together.
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute, Burst: n} }

// Validate reports every problem of the limit.
func (l Limit) Validate() error {
	var errs []error
	if l.Rate <= 0 {
		errs = append(errs, fmt.Errorf("rate must be positive, got %d", l.Rate))
	}
	if l.Period < time.Millisecond {
		errs = append(errs, fmt.Errorf("period must be at least 1ms, got %s", l.Period))
	}
	if l.Burst < 0 {
		errs = append(errs, fmt.Errorf("burst must not be negative, got %d", l.Burst))
	}
	return errors.Join(errs...)
}

// emission is the interval between two requests at the limit's rate, in µs.
func (l Limit) emission() int64 {
	return max(l.Period.Microseconds()/int64(l.Rate), 1)
}

func (l Limit) burst() int {
	if l.Burst == 0 {
		return l.Rate
	}
	return l.Burst
}

// Result is the decision about one request.
type Result struct {
	// Allowed tells whether the request may go ahead.
	Allowed bool
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is how long until a request is allowed again; zero when
	// Allowed.
	RetryAfter time.Duration
}

// gcraScript decides one request and records it when allowed: at once,
// or, when it may wait up to max wait, at its turn (a reservation: the
// caller sleeps until then, and the next caller's turn comes one
// emission interval later, so waiting callers never poll or race).
//
// KEYS: <prefix><key>.
// ARGV: emission interval µs (Period/Rate), burst, period ms, max wait µs,
// and "1" to decide without recording (Check).
// Returns {allowed 0|1, remaining, wait µs}: the wait until the turn when
// allowed, until a request would be allowed when not.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local wait = new_tat - emission * burst - now
if wait > tonumber(ARGV[4]) then
  return {0, 0, wait}
end
if ARGV[5] == '1' then
  if wait > 0 then return {1, 0, wait} end
  return {1, math.floor(-wait / emission), 0}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + tonumber(ARGV[3]))
if wait > 0 then
  return {1, 0, wait}
end
return {1, math.floor(-wait / emission), 0}
`)

// holdScript moves a subject's TAT so that no request is allowed before a
// time, unless it already is later.
//
// KEYS: <prefix><key>.
// ARGV: hold µs from now, emission interval µs, burst, period ms.
var holdScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = now + tonumber(ARGV[1]) + tonumber(ARGV[2]) * (tonumber(ARGV[3]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if want > tat then
  redis.call('SET', KEYS[1], string.format('%d', want), 'PX', math.ceil((want - now) / 1000) + tonumber(ARGV[4]))
end
return 0
`)

// Limiter decides requests against limits kept in Redis.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a limiter keeping its state in rdb under keys starting with
// prefix (one prefix per kind of subject, e.g. KeyPrefix).
func New(rdb redis.UniversalClient, prefix string) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: redis client is nil")
	}
	if prefix == "" {
		return nil, errors.New("ratelimit: key prefix is empty")
	}
	return &Limiter{rdb: rdb, prefix: prefix}, nil
}

// Allow decides one request of the subject key under limit, and counts it
// when allowed. Every replica calling Allow with the same key and limit
// shares one budget.
func (l *Limiter) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	return l.result(l.decide(ctx, key, limit, 0, false))
}

// Check tells what Allow would decide for the subject key under limit
// now, counting nothing: for limits on outcomes known only after the
// request (failed sign-ins), checked before it and counted with Allow
// after it when it failed.
func (l *Limiter) Check(ctx context.Context, key string, limit Limit) (Result, error) {
	return l.result(l.decide(ctx, key, limit, 0, true))
}

// result is decide's answer as Allow and Check give it.
func (l *Limiter) result(allowed bool, remaining int, wait time.Duration, err error) (Result, error) {
	if err != nil {
		return Result{}, err
	}
	if allowed {
		return Result{Allowed: true, Remaining: remaining}, nil
	}
	return Result{RetryAfter: wait}, nil
}

// decide runs gcraScript: the request is allowed when its turn comes
// within maxWait, and wait says when that is; dry records nothing.
func (l *Limiter) decide(ctx context.Context, key string, limit Limit, maxWait time.Duration, dry bool) (allowed bool, remaining int, wait time.Duration, err error) {
	if err := limit.Validate(); err != nil {
		return false, 0, 0, fmt.Errorf("rate limit %s: %w", key, err)
	}
	dryArg := "0"
	if dry {
		dryArg = "1"
	}
	res, err := gcraScript.Run(ctx, l.rdb, []string{l.prefix + key}, limit.emission(), limit.burst(), limit.Period.Milliseconds(), maxWait.Microseconds(), dryArg).Int64Slice()
	if err != nil {
		return false, 0, 0, fmt.Errorf("rate limit %s: %w", key, err)
	}
	if len(res) != 3 {
		return false, 0, 0, fmt.Errorf("rate limit %s: unexpected script result %v", key, res)
	}
	return res[0] == 1, int(res[1]), time.Duration(res[2]) * time.Microsecond, nil
}

// TooLateError is Wait's answer when the next request would be allowed
// only after ctx's deadline; it wraps context.DeadlineExceeded.
type TooLateError struct {
	// Key is the subject.
	Key string
	// RetryAfter is how long until a request would be allowed.
	RetryAfter time.Duration
}

func (e *TooLateError) Error() string {
	return fmt.Sprintf("rate limit %s: next request in %s, after the deadline", e.Key, e.RetryAfter)
}

func (e *TooLateError) Unwrap() error { return context.DeadlineExceeded }

// Wait takes the next turn of the subject key under limit and blocks
// until it comes: one Redis call, then a sleep. It returns at once with a
// *TooLateError, counting nothing, when the turn would come after ctx's
// deadline. A Wait whose ctx ends while it sleeps gives its turn up
// unused: the server is asked less, never more.
func (l *Limiter) Wait(ctx context.Context, key string, limit Limit) error {
	maxWait := time.Duration(math.MaxInt64)
	if dl, ok := ctx.Deadline(); ok {
		maxWait = max(time.Until(dl), 0)
	}
	allowed, _, wait, err := l.decide(ctx, key, limit, maxWait, false)
	if err != nil {
		return err
	}
	if !allowed {
		return &TooLateError{Key: key, RetryAfter: wait}
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("rate limit %s: %w", key, ctx.Err())
	case <-t.C:
		return nil
	}
}

// Hold allows no request of the subject key before until (a server's
// Retry-After), for every replica; a later hold already set is kept.
// until is read against this process's clock and stored against Redis's.
func (l *Limiter) Hold(ctx context.Context, key string, limit Limit, until time.Time) error {
	if err := limit.Validate(); err != nil {
		return fmt.Errorf("rate limit %s: %w", key, err)
	}
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	if err := holdScript.Run(ctx, l.rdb, []string{l.prefix + key}, d.Microseconds(), limit.emission(), limit.burst(), limit.Period.Milliseconds()).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("rate limit %s: hold: %w", key, err)
	}
	return nil
}
