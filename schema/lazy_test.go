package schema

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestLazy: until open succeeds every call is health.ErrNotConnected
// (unavailability: a 503, a retry); then calls reach the connection.
func TestLazy(t *testing.T) {
	ctx := context.Background()
	db := testenv.ClickHouse(t)
	release := make(chan struct{})
	open := func(ctx context.Context) (driver.Conn, error) {
		select {
		case <-release:
			return Open(ctx, db.DSN, testenv.Logger(t))
		default:
			return nil, errors.New("connection refused")
		}
	}
	l := OpenLazy(ctx, open, backoff.Policy{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}, testenv.Logger(t))
	defer l.Close()
	var n uint8
	if err := l.QueryRow(ctx, "SELECT 1").Scan(&n); !errors.Is(err, health.ErrNotConnected) || !health.Unavailable(ctx, err) {
		t.Fatalf("before open: %v, want ErrNotConnected, unavailable", err)
	}
	if err := l.Ping(ctx); !errors.Is(err, health.ErrNotConnected) {
		t.Fatalf("ping before open: %v", err)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for l.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("not connected 10s after open could succeed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after open: %d, %v", n, err)
	}
}
