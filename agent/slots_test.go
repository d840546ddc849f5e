package agent

import (
	"context"
	"testing"
	"time"
)

// granted tells whether a waiter got its slot within a short while; it is
// used only where the answer is decided before the call (a grant happens
// under the lock, synchronously with the release).
func granted(done <-chan error) bool {
	select {
	case err := <-done:
		return err == nil
	case <-time.After(100 * time.Millisecond):
		return false
	}
}

func TestFairSlots(t *testing.T) {
	ctx := context.Background()
	wait := func(f *fairSlots, tenant string) <-chan error {
		done := make(chan error, 1)
		go func() { done <- f.acquire(ctx, tenant) }()
		return done
	}
	waitQueued := func(f *fairSlots, tenant string, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f.mu.Lock()
			got := len(f.waiting[tenant])
			f.mu.Unlock()
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("tenant %s: got %d waiting, want %d", tenant, got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	t.Run("a freed slot goes to the tenant holding fewest", func(t *testing.T) {
		f := newFairSlots(2)
		for range 2 {
			if err := f.acquire(ctx, "flood"); err != nil {
				t.Fatal(err)
			}
		}
		flood := wait(f, "flood")
		waitQueued(f, "flood", 1)
		other := wait(f, "other")
		waitQueued(f, "other", 1)
		f.release("flood")
		if !granted(other) {
			t.Fatal("got the other tenant still waiting, want it granted the freed slot")
		}
		if granted(flood) {
			t.Fatal("got the flooding tenant's older waiter granted, want it waiting")
		}
		f.release("other")
		if !granted(flood) {
			t.Fatal("got the flooding tenant still waiting after a slot came free, want it granted")
		}
	})

	t.Run("one tenant leaves the reserve free", func(t *testing.T) {
		f := newFairSlots(16) // reserve 2
		for range 14 {
			if err := f.acquire(ctx, "flood"); err != nil {
				t.Fatal(err)
			}
		}
		flood := wait(f, "flood")
		if granted(flood) {
			t.Fatal("got the 15th slot granted to one tenant, want the reserve kept")
		}
		if !granted(wait(f, "other")) {
			t.Fatal("got another tenant waiting with the reserve free, want it granted at once")
		}
	})

	t.Run("a tenant alone (here the empty one) uses every slot but the reserve", func(t *testing.T) {
		f := newFairSlots(8) // reserve 1
		for i := range 7 {
			if !granted(wait(f, "")) {
				t.Fatalf("slot %d: got waiting, want granted", i+1)
			}
		}
	})

	t.Run("a waiter whose context ends leaves the queue", func(t *testing.T) {
		f := newFairSlots(1)
		if err := f.acquire(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.acquire(cctx, "b") }()
		waitQueued(f, "b", 1)
		cancel()
		if err := <-done; err == nil {
			t.Fatal("got a slot after cancel, want the context's error")
		}
		f.release("a")
		if !granted(wait(f, "c")) {
			t.Fatal("got the slot lost to the cancelled waiter, want it free")
		}
	})
}
