package registration

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestServerLimiterOverride(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	def := ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}
	fast := ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 10}
	s, err := newServerLimiter(rdb, def, map[string]ratelimit.Limit{"fast.example": fast}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The overridden server takes ten at once; the default allows one an
	// hour, so a second request to another server must give up at once.
	for i := range 10 {
		if err := s.Wait(ctx, "fast.example"); err != nil {
			t.Fatalf("fast request %d: %v", i+1, err)
		}
	}
	if err := s.Wait(ctx, "slow.example"); err != nil {
		t.Fatal(err)
	}
	var tl *ratelimit.TooLateError
	if err := s.Wait(ctx, "slow.example"); !errors.As(err, &tl) {
		t.Errorf("second slow request: got %v, want a TooLateError", err)
	}
	for _, key := range []string{LimitPrefix + "slow.example", LimitPrefix + "fast.example"} {
		// One key per call: on Redis Cluster the two are in two slots.
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("key %s: got exists=%d %v, want 1", key, n, err)
		}
	}
}

// BenchmarkServerLimiter measures how close the shared per-server limit
// comes to its configured rate: two replicas (each its own Redis client
// and limiter), four goroutines each, take turns at one server for a
// window. Reported: achieved ÷ configured requests for the Redis limiter,
// and beside it, measured the same way in the same run, an in-process
// limiter of the same algorithm (the best any limiter can do here; the
// difference is the cost of sharing through Redis). Above 1 means the
// server was asked more often than configured.
func BenchmarkServerLimiter(b *testing.B) {
	srv := testenv.Redis(b)
	limit := ratelimit.Limit{Rate: 50, Period: time.Second, Burst: 1}
	const (
		window  = 3 * time.Second
		workers = 4
	)
	var replicas []*serverLimiter
	for range 2 {
		s, err := newServerLimiter(srv.Client(b), limit, nil, testenv.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		replicas = append(replicas, s)
	}
	configured := float64(limit.Rate) * window.Seconds() / limit.Period.Seconds()
	var shared, local float64
	for i := 0; i < b.N; i++ {
		server := "bench-" + time.Now().Format("150405.000000")
		var waits []func(context.Context) error
		for _, r := range replicas {
			for range workers {
				waits = append(waits, func(ctx context.Context) error { return r.Wait(ctx, server) })
			}
		}
		shared += float64(hammer(window, waits)) / configured
		inproc := &localGCRA{every: limit.Period / time.Duration(limit.Rate)}
		waits = waits[:0]
		for range 2 * workers {
			waits = append(waits, inproc.Wait)
		}
		local += float64(hammer(window, waits)) / configured
	}
	b.ReportMetric(shared/float64(b.N), "redis-achieved/configured")
	b.ReportMetric(local/float64(b.N), "inprocess-achieved/configured")
}

// hammer runs every wait in a loop of its own for window and counts the
// turns granted within it.
func hammer(window time.Duration, waits []func(context.Context) error) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	var granted atomic.Int64
	var wg sync.WaitGroup
	for _, wait := range waits {
		wg.Go(func() {
			for wait(ctx) == nil {
				granted.Add(1)
			}
		})
	}
	wg.Wait()
	return granted.Load()
}

// localGCRA is the same algorithm as internal/ratelimit in one process
// (burst 1): each turn is one interval after the previous one.
type localGCRA struct {
	mu    sync.Mutex
	next  time.Time
	every time.Duration
}

func (l *localGCRA) Wait(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	if dl, ok := ctx.Deadline(); ok && at.After(dl) {
		l.mu.Unlock()
		return context.DeadlineExceeded
	}
	l.next = at.Add(l.every)
	l.mu.Unlock()
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
