package ratelimit

import (
	"context"
	"errors"
	"fmt"
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
	l, err := New(rdb, KeyPrefix)
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
	l, err := New(testenv.Redis(t).Client(t), KeyPrefix)
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
		l, err := New(srv.Client(t), KeyPrefix)
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

func TestWait(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	l, err := New(rdb, "reglimit:")
	if err != nil {
		t.Fatal(err)
	}
	lim := Limit{Rate: 20, Period: time.Second, Burst: 1}
	// The second request waits for the first's emission interval.
	for i := range 2 {
		if err := l.Wait(ctx, "s", lim); err != nil {
			t.Fatalf("wait %d: got %v, want nil", i+1, err)
		}
	}
	if n, err := rdb.Exists(ctx, "reglimit:s").Result(); err != nil || n != 1 {
		t.Errorf("key reglimit:s: got exists=%d %v, want 1", n, err)
	}
	// A wait that cannot end before the deadline gives up at once and
	// counts nothing.
	slow := Limit{Rate: 1, Period: time.Hour, Burst: 1}
	if err := l.Wait(ctx, "slow", slow); err != nil {
		t.Fatal(err)
	}
	before, _ := rdb.Get(ctx, "reglimit:slow").Result()
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = l.Wait(dctx, "slow", slow)
	var tl *TooLateError
	if !errors.As(err, &tl) || !errors.Is(err, context.DeadlineExceeded) || tl.RetryAfter < 59*time.Minute {
		t.Errorf("got %v, want a TooLateError of about an hour wrapping context.DeadlineExceeded", err)
	}
	if after, _ := rdb.Get(ctx, "reglimit:slow").Result(); after != before {
		t.Errorf("TAT: got %s after a refused wait, want %s unchanged", after, before)
	}
	cctx, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := l.Wait(cctx, "s", lim); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}

func TestHold(t *testing.T) {
	ctx := context.Background()
	l, err := New(testenv.Redis(t).Client(t), "reglimit:")
	if err != nil {
		t.Fatal(err)
	}
	for _, burst := range []int{1, 5} {
		lim := Limit{Rate: 10, Period: time.Second, Burst: burst}
		key := fmt.Sprintf("burst-%d", burst)
		if err := l.Hold(ctx, key, lim, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		// A shorter hold later does not shorten the first.
		if err := l.Hold(ctx, key, lim, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		res, err := l.Allow(ctx, key, lim)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed || res.RetryAfter < 59*time.Minute || res.RetryAfter > time.Hour {
			t.Errorf("burst %d: got %+v, want refused for about an hour", burst, res)
		}
	}
	// A hold in the past changes nothing.
	lim := Limit{Rate: 10, Period: time.Second, Burst: 1}
	if err := l.Hold(ctx, "past", lim, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if res, _ := l.Allow(ctx, "past", lim); !res.Allowed {
		t.Errorf("after a past hold: got %+v, want allowed", res)
	}
}

// Waiters take turns in line: each gets its own slot, none is refused
// while the line fits in its deadline, and the line's length is the
// limit's interval times the waiters (read from the TAT, not a clock).
func TestWaitReserves(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	l, err := New(rdb, "reglimit:")
	if err != nil {
		t.Fatal(err)
	}
	// 10 waiters at 1 per 10 ms need 100 ms; they may take 10 s.
	lim := Limit{Rate: 100, Period: time.Second, Burst: 1}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() { errs <- l.Wait(dctx, "line", lim) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("waiter: got %v, want nil", err)
		}
	}
	tat, err := rdb.Get(ctx, "reglimit:line").Int64()
	if err != nil {
		t.Fatal(err)
	}
	// The first took the slot at about start, each next one 10 ms later:
	// the TAT is at least 10 slots past start.
	if d := time.Duration(tat-start.UnixMicro()) * time.Microsecond; d < 100*time.Millisecond {
		t.Errorf("TAT %s after start, want at least 100ms (10 slots of 10ms)", d)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	l, err := New(rdb, KeyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	lim := PerMinute(2)
	// Checks count nothing: any number of them leave the whole budget.
	for range 5 {
		if res, err := l.Check(ctx, "a", lim); err != nil || !res.Allowed {
			t.Fatalf("check of a fresh subject: got %+v %v, want allowed", res, err)
		}
	}
	if n, _ := rdb.Exists(ctx, KeyPrefix+"a").Result(); n != 0 {
		t.Fatalf("check wrote the subject's key")
	}
	for range 2 {
		if res, _ := l.Allow(ctx, "a", lim); !res.Allowed {
			t.Fatalf("allow within the budget: got %+v", res)
		}
	}
	res, err := l.Check(ctx, "a", lim)
	if err != nil || res.Allowed || res.RetryAfter < 29*time.Second || res.RetryAfter > 30*time.Second {
		t.Fatalf("check past the budget: got %+v %v, want refused, retry after about 30s", res, err)
	}
}
