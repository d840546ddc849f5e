package health_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestClockOffset: a process whose clock runs ten minutes ahead of
// Redis's reads so, one in step reads about nothing, against a real Redis.
func TestClockOffset(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	ahead := func() time.Time { return time.Now().Add(10 * time.Minute) }
	for _, tc := range []struct {
		name string
		now  func() time.Time
		want time.Duration
	}{{"in step", time.Now, 0}, {"ahead", ahead, 10 * time.Minute}, {"behind", func() time.Time { return time.Now().Add(-time.Hour) }, -time.Hour}} {
		off, err := health.ClockOffset(ctx, rdb, tc.now)
		if err != nil {
			t.Fatal(err)
		}
		if d := off - tc.want; d > time.Second || d < -time.Second {
			t.Errorf("%s: offset %s, want %s within a second", tc.name, off, tc.want)
		}
	}

	// The watcher exports it and warns once while it is past the limit.
	core, logs := observer.New(zap.WarnLevel)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- health.WatchClockOffset(wctx, rdb, ahead, 20*time.Millisecond, time.Minute, zap.New(core))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for health.ClockOffsetValue() < 590 {
		if time.Now().After(deadline) {
			t.Fatalf("certfleet_clock_offset_seconds = %v, want about 600", health.ClockOffsetValue())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a few more samples, still past the limit
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("clock differs").Len(); n != 1 {
		t.Errorf("got %d warnings, want 1 while the offset stays past the limit", n)
	}
}
