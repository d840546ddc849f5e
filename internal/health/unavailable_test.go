package health

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestUnavailable asks a real Redis that was stopped, and a live one with
// a bad command: only the first is a dependency being away.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Redis(t)
	rdb := srv.Client(t)
	_, bad := rdb.Do(ctx, "NOSUCHCOMMAND").Result()
	if bad == nil || Unavailable(ctx, bad) {
		t.Fatalf("unknown command: got %v, Unavailable %v; want an error that is not unavailability", bad, Unavailable(ctx, bad))
	}
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = down.Close() })
	err := down.Ping(ctx).Err()
	if !Unavailable(ctx, fmt.Errorf("read domain: %w", err)) {
		t.Fatalf("refused connection: got %v, want unavailable", err)
	}
	if Unavailable(ctx, errors.New("internal")) || Unavailable(ctx, nil) {
		t.Fatal("plain errors are not unavailability")
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if Unavailable(done, err) {
		t.Fatal("a request the client abandoned is not unavailability")
	}
}

// TestOutOfMemory fills a real Redis to its maxmemory (noeviction): a
// write, and a script's write, are out of memory; reads and other errors
// are not.
func TestOutOfMemory(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	err := rdb.Set(ctx, "k", "v", 0).Err()
	if !OutOfMemory(fmt.Errorf("write: %w", err)) {
		t.Errorf("SET at maxmemory: got %v, want out of memory", err)
	}
	err = rdb.Eval(ctx, "redis.call('GET', KEYS[1]); return redis.call('SET', KEYS[1], 'v')", []string{"k"}).Err()
	if !OutOfMemory(err) {
		t.Errorf("script writing at maxmemory: got %v, want out of memory", err)
	}
	if err := rdb.Get(ctx, "k").Err(); OutOfMemory(err) {
		t.Errorf("GET at maxmemory: %v is not out of memory", err)
	}
	_, bad := rdb.Do(ctx, "NOSUCHCOMMAND").Result()
	if OutOfMemory(bad) || OutOfMemory(nil) {
		t.Errorf("%v: not out of memory", bad)
	}
}
