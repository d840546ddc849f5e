package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		failures int
		lo, hi   time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{10, 500 * time.Millisecond, time.Second},
		{1000, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := p.Delay(tt.failures); got < tt.lo || got > tt.hi {
				t.Fatalf("Delay(%d) = %s, want in [%s, %s]", tt.failures, got, tt.lo, tt.hi)
			}
		}
	}
}

func TestDelayDefaults(t *testing.T) {
	if got := (Policy{}).Delay(100); got < 15*time.Second || got > 30*time.Second {
		t.Fatalf("zero policy Delay(100) = %s, want in [15s, 30s]", got)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with a cancelled context reported the pause passed")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep(1ms) reported it was cut short")
	}
}
