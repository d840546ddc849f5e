package ratelimit

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestAllow(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	l, err := New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	lim := PerMinute(3)
	// A burst of Rate passes, counting down; the next waits one emission
	// interval (20 s) less the little time the burst took.
	for i, wantRemaining := range []int{2, 1, 0} {
		res, err := l.Allow(ctx, "a", lim)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed || res.Remaining != wantRemaining || res.RetryAfter != 0 {
			t.Errorf("request %d: got %+v, want allowed with %d remaining", i+1, res, wantRemaining)
		}
	}
	res, err := l.Allow(ctx, "a", lim)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed || res.Remaining != 0 || res.RetryAfter < 19*time.Second || res.RetryAfter > 20*time.Second {
		t.Errorf("request 4: got %+v, want refused, retry after about 20s", res)
	}
	// Refused requests are not counted: the wait does not grow.
	res2, _ := l.Allow(ctx, "a", lim)
	if res2.Allowed || res2.RetryAfter > res.RetryAfter {
		t.Errorf("request 5: got %+v, want refused, retry after at most %s", res2, res.RetryAfter)
	}
	// Another subject has its own budget.
	if res, _ := l.Allow(ctx, "b", lim); !res.Allowed || res.Remaining != 2 {
		t.Errorf("other subject: got %+v, want allowed with 2 remaining", res)
	}
	// The key expires a period after its TAT.
	ttl, err := rdb.PTTL(ctx, KeyPrefix+"a").Result()
	if err != nil || ttl < 110*time.Second || ttl > 2*time.Minute {
		t.Errorf("ttl: got %s %v, want about 2m (TAT 1m ahead plus a period)", ttl, err)
	}
}

func TestAllowRefills(t *testing.T) {
	ctx := context.Background()
	l, err := New(testenv.Redis(t).Client(t))
	if err != nil {
		t.Fatal(err)
	}
	lim := Limit{Rate: 10, Period: time.Second, Burst: 2}
	for range 2 {
		if res, _ := l.Allow(ctx, "a", lim); !res.Allowed {
			t.Fatalf("burst: got %+v, want allowed", res)
		}
	}
	res, _ := l.Allow(ctx, "a", lim)
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 100*time.Millisecond {
		t.Fatalf("over burst: got %+v, want refused, retry after at most 100ms", res)
	}
	time.Sleep(res.RetryAfter + 5*time.Millisecond)
	if res, _ := l.Allow(ctx, "a", lim); !res.Allowed {
		t.Errorf("after retry after: got %+v, want allowed", res)
	}
}

// TestAllowConcurrent: limiters sharing one Redis (the replicas) never let
// more than the burst through together.
func TestAllowConcurrent(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Redis(t)
	lim := PerMinute(25)
	var (
		mu      sync.Mutex
		allowed int
		wg      sync.WaitGroup
	)
	for range 4 {
		l, err := New(srv.Client(t))
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			wg.Go(func() {
				for range 10 {
					res, err := l.Allow(ctx, "shared", lim)
					if err != nil {
						t.Error(err)
						return
					}
					if res.Allowed {
						mu.Lock()
						allowed++
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	// 200 requests within well under a second: the burst of 25, and at
	// most one more refilled (one per 2.4 s).
	if allowed < 25 || allowed > 26 {
		t.Errorf("allowed: got %d, want 25 (or 26 if a refill came)", allowed)
	}
}

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		name    string
		limit   Limit
		wantErr bool
	}{
		{"per minute", PerMinute(5), false},
		{"burst defaults to rate", Limit{Rate: 5, Period: time.Second}, false},
		{"zero rate", Limit{Period: time.Second}, true},
		{"no period", Limit{Rate: 5}, true},
		{"negative burst", Limit{Rate: 5, Period: time.Second, Burst: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.limit.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("got %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
