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
