// Package ratelimit limits request rates across every API server replica:
// the state of each limited subject lives in Redis and one Lua script both
// decides and records, so replicas share one budget and never race.
//
// The algorithm is GCRA (the generic cell rate algorithm): per subject one
// number, the theoretical arrival time (TAT) of the next request, kept in
// microseconds of the Redis server's clock, so that replicas' clocks do not
// matter. A subject idle for a period costs no memory: the key expires when
// its TAT is more than a period in the past (kept that long so that a
// subject's key does not come and go between its requests).
//
// Redis layout (owned by this package):
//
//	ratelimit:<key>   string, TAT in µs since the epoch, expiring a period
//	                  after the TAT
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix is the prefix of every Redis key of this package.
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

// Limiter decides requests against limits kept in Redis.
type Limiter struct {
	rdb redis.UniversalClient
}

// New returns a limiter keeping its state in rdb.
func New(rdb redis.UniversalClient) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: redis client is nil")
	}
	return &Limiter{rdb: rdb}, nil
}

// Allow decides one request of the subject key under limit, and counts it
// when allowed. Every replica calling Allow with the same key and limit
// shares one budget.
func (l *Limiter) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	if err := limit.Validate(); err != nil {
		return Result{}, fmt.Errorf("rate limit %s: %w", key, err)
	}
	emission := max(limit.Period.Microseconds()/int64(limit.Rate), 1)
	res, err := gcraScript.Run(ctx, l.rdb, []string{KeyPrefix + key}, emission, limit.burst(), limit.Period.Milliseconds()).Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("rate limit %s: %w", key, err)
	}
	if len(res) != 3 {
		return Result{}, fmt.Errorf("rate limit %s: unexpected script result %v", key, res)
	}
	return Result{Allowed: res[0] == 1, Remaining: int(res[1]), RetryAfter: time.Duration(res[2]) * time.Microsecond}, nil
}
