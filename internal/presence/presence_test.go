package presence

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestActive(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Now()
	for region, seen := range map[string]time.Time{"eu-west": now, "us-east": now.Add(-30 * time.Second), "gone": now.Add(-time.Hour)} {
		if err := Seen(ctx, rdb, region, seen); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Active(ctx, rdb, now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eu-west", "us-east"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("active regions: got %v, want %v", got, want)
	}
}

func TestAllStaleForget(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Now().Truncate(time.Millisecond)
	if err := Seen(ctx, rdb, "us-east", now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := Seen(ctx, rdb, "eu-west", now); err != nil {
		t.Fatal(err)
	}
	got, err := All(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "eu-west" || !got[0].LastSeen.Equal(now) || got[1].Name != "us-east" {
		t.Fatalf("all regions: got %+v, want eu-west seen %s, then us-east", got, now)
	}
	if got[0].Stale(now, 10*time.Minute) || !got[1].Stale(now, 10*time.Minute) {
		t.Errorf("stale after 10m: eu-west %v, us-east %v; want false, true", got[0].Stale(now, 10*time.Minute), got[1].Stale(now, 10*time.Minute))
	}
	if ok, err := Forget(ctx, rdb, "us-east"); err != nil || !ok {
		t.Fatalf("forget us-east: %v, %v", ok, err)
	}
	if ok, err := Forget(ctx, rdb, "us-east"); err != nil || ok {
		t.Fatalf("forget us-east again: %v, %v; want false", ok, err)
	}
	if got, _ := All(ctx, rdb); len(got) != 1 || got[0].Name != "eu-west" {
		t.Errorf("after forget: %+v", got)
	}
}
