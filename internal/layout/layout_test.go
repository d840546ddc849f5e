package layout

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestClaim: the first claim records the generation, an older binary's
// claim is refused and changes nothing, a newer one raises it.
func TestClaim(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	if err := Claim(ctx, rdb, 3); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(ctx, Key).Val(); got != "3" {
		t.Fatalf("after the first claim: %s = %q, want 3", Key, got)
	}
	if err := Claim(ctx, rdb, 3); err != nil {
		t.Errorf("the same generation again: %v", err)
	}
	if err := Claim(ctx, rdb, 2); !errors.Is(err, ErrNewer) {
		t.Errorf("an older binary: got %v, want ErrNewer", err)
	}
	if got := rdb.Get(ctx, Key).Val(); got != "3" {
		t.Errorf("after the older claim: %s = %q, want 3 kept", Key, got)
	}
	if err := Claim(ctx, rdb, 4); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(ctx, Key).Val(); got != "4" {
		t.Errorf("after a newer claim: %s = %q, want 4", Key, got)
	}
}

// TestWatch: a running binary goes on while the generation is its own
// and stops with ErrNewer once a newer binary claimed a newer one.
func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb := testenv.Redis(t).Client(t)
	if err := Claim(ctx, rdb, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, rdb, 1, 10*time.Millisecond) }()
	select {
	case err := <-done:
		t.Fatalf("watch ended with its own generation recorded: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := Claim(ctx, rdb, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrNewer) {
			t.Errorf("watch: got %v, want ErrNewer", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop 5 s after a newer generation was claimed")
	}
}
