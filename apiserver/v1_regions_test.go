package apiserver

import (
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/presence"
)

// GET /api/v1/regions lists every region an agent was seen in, the stale
// ones (silent past --region-stale-after) marked; a read key suffices, and
// every tenant sees the same regions (they are the operator's).
func TestRegionsList(t *testing.T) {
	e := newKeyEnv(t, Config{RegionStaleAfter: 5 * time.Minute})
	ctx := context.Background()
	for region, ago := range map[string]time.Duration{"eu-west": 10 * time.Second, "us-east": 6 * time.Minute} {
		if err := presence.Seen(ctx, e.rdb, region, e.clock.Now().Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	type region struct {
		Name  string
		Stale bool
	}
	list := func(key string) []region {
		t.Helper()
		r := e.call(0, http.MethodGet, "/api/v1/regions", key, "")
		if r.code != http.StatusOK {
			t.Fatalf("GET /regions: %d %v", r.code, r.body)
		}
		var out []region
		data, _ := r.body["data"].([]any)
		for _, d := range data {
			m := d.(map[string]any)
			if _, err := time.Parse(time.RFC3339, m["last_seen"].(string)); err != nil {
				t.Errorf("last_seen %v: %v", m["last_seen"], err)
			}
			out = append(out, region{Name: m["name"].(string), Stale: m["stale"].(bool)})
		}
		return out
	}
	want := []region{{"eu-west", false}, {"us-east", true}}
	if got := list(e.bootstrapKey("a@example.com", "read")); !reflect.DeepEqual(got, want) {
		t.Errorf("regions: got %+v, want %+v", got, want)
	}
	if got := list(e.bootstrapKey("b@example.com", "read")); !reflect.DeepEqual(got, want) {
		t.Errorf("regions of another tenant: got %+v, want %+v", got, want)
	}
	e.clock.Add(time.Minute) // eu-west silent for 70 s: still active
	if got := list(e.bootstrapKey("c@example.com", "read")); !reflect.DeepEqual(got, want) {
		t.Errorf("a minute later: got %+v, want %+v", got, want)
	}
	wantV1Error(t, e.call(0, http.MethodGet, "/api/v1/regions", "", ""), http.StatusUnauthorized, "")
}
