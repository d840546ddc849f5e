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
