// Package lease is a Redis key that one process at a time holds: taken with
// SET NX and an expiry under a token of the holder's, and released only by
// that holder, so a late release never frees a lease another process has
// taken over since it expired. The coordinator's shard leases, the CRL
// writer's lock and the client certificate renewal pass use it.
package lease

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewToken returns a random token that names one holder.
func NewToken() string { return rand.Text() }

// Acquire takes the lease at key for ttl under token; false when another
// holder has it.
func Acquire(ctx context.Context, rdb redis.UniversalClient, key, token string, ttl time.Duration) (bool, error) {
	ok, err := rdb.SetNX(ctx, key, token, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", key, err)
	}
	return ok, nil
}

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// Renew extends the lease at key to ttl from now if token still holds it,
// and tells whether it did (false: the lease was lost).
func Renew(ctx context.Context, rdb redis.UniversalClient, key, token string, ttl time.Duration) (bool, error) {
	n, err := renewScript.Run(ctx, rdb, []string{key}, token, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", key, err)
	}
	return n == 1, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// Release gives the lease at key up if token still holds it, and tells
// whether it did.
func Release(ctx context.Context, rdb redis.UniversalClient, key, token string) (bool, error) {
	n, err := releaseScript.Run(ctx, rdb, []string{key}, token).Int()
	if err != nil {
		return false, fmt.Errorf("release lease %s: %w", key, err)
	}
	return n == 1, nil
}
