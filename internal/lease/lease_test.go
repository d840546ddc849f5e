package lease

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestLease(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	a, b := NewToken(), NewToken()
	if a == b {
		t.Fatalf("two tokens are equal: %q", a)
	}
	if ok, err := Acquire(ctx, rdb, "l", a, time.Minute); err != nil || !ok {
		t.Fatalf("first acquire: got %v %v, want true", ok, err)
	}
	if ok, err := Acquire(ctx, rdb, "l", b, time.Minute); err != nil || ok {
		t.Fatalf("acquire of a held lease: got %v %v, want false", ok, err)
	}
	if ok, err := Release(ctx, rdb, "l", b); err != nil || ok {
		t.Fatalf("release by another holder: got %v %v, want false", ok, err)
	}
	if got := rdb.Get(ctx, "l").Val(); got != a {
		t.Fatalf("after a foreign release: lease holds %q, want %q", got, a)
	}
	if ok, err := Release(ctx, rdb, "l", a); err != nil || !ok {
		t.Fatalf("release by the holder: got %v %v, want true", ok, err)
	}
	if ok, err := Acquire(ctx, rdb, "l", b, time.Minute); err != nil || !ok {
		t.Fatalf("acquire after release: got %v %v, want true", ok, err)
	}
}
