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

// gcraScript decides one request and records it when allowed.
//
// KEYS: ratelimit:<key>.
// ARGV: emission interval µs (Period/Rate), burst, period ms.
// Returns {allowed 0|1, remaining, retry after µs}.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local diff = now - (new_tat - emission * burst)
if diff < 0 then
  return {0, 0, -diff}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + tonumber(ARGV[3]))
return {1, math.floor(diff / emission), 0}
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
	if err := limit.Validate(); err != nil {
		return Result{}, fmt.Errorf("rate limit %s: %w", key, err)
	}
	res, err := gcraScript.Run(ctx, l.rdb, []string{l.prefix + key}, limit.emission(), limit.burst(), limit.Period.Milliseconds()).Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("rate limit %s: %w", key, err)
	}
	if len(res) != 3 {
		return Result{}, fmt.Errorf("rate limit %s: unexpected script result %v", key, res)
	}
	return Result{Allowed: res[0] == 1, Remaining: int(res[1]), RetryAfter: time.Duration(res[2]) * time.Microsecond}, nil
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

// Wait blocks until a request of the subject key is allowed under limit
// and counts it. It returns early, without counting, when ctx ends, or
// at once with a *TooLateError when ctx's deadline comes before the
// request could be allowed.
func (l *Limiter) Wait(ctx context.Context, key string, limit Limit) error {
	for {
		res, err := l.Allow(ctx, key, limit)
		if err != nil {
			return err
		}
		if res.Allowed {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < res.RetryAfter {
			return &TooLateError{Key: key, RetryAfter: res.RetryAfter}
		}
		t := time.NewTimer(res.RetryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("rate limit %s: %w", key, ctx.Err())
		case <-t.C:
		}
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
