package alerts

import (
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/pipelinetest"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestLabAlerts scans every lab target every second from two regions
// (two agents), with a coordinator and two projector replicas on one
// Redis, and checks each target ends up with exactly the alerts of its
// fault, once, however many scans and evaluations it went through.
func TestLabAlerts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real scans")
	}
	ctx := t.Context()
	rdb := testenv.Redis(t).Client(t)
	logger := testenv.Logger(t)
	// Two projector replicas with an engine each; engine lists alerts.
	var engine *Engine
	var evals []projector.Evaluator
	for range 2 {
		eng, err := New(Config{}, rdb, logger)
		if err != nil {
			t.Fatal(err)
		}
		engine = eng
		evals = append(evals, eng)
	}
	fleet := pipelinetest.Start(t, rdb, pipelinetest.Config{Shards: 4, Interval: time.Second, Regions: []string{"eu", "us"}, Evaluators: evals})

	store, err := accounts.New(accounts.Config{}, rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	tenantID, err := store.EnsureAccount(ctx, "lab@example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"valid":         {},
		"expiring-soon": {"ssl_expiry/14 warning"},
		"expired":       {"ssl_expired critical"},
		"self-signed":   {"chain_invalid critical"},
		"wrong-name":    {"hostname_mismatch critical"},
		"multi-ip":      {},
		"dead-ip":       {"scan_failing warning"},
		"nxdomain":      {"scan_failing warning"},
	}
	names := map[string]string{} // domain id -> target name
	for _, tg := range fleet.Targets() {
		if _, ok := want[tg.Name]; !ok {
			continue
		}
		d, _, err := store.AddDomain(ctx, tenantID, accounts.NewDomain{Host: tg.Host, Port: tg.Port, Source: "api"})
		if err != nil {
			t.Fatal(err)
		}
		names[d.ID] = tg.Name
	}
	if len(names) != len(want) {
		t.Fatalf("lab targets: got %d of %d", len(names), len(want))
	}

	// dead-ip and nxdomain need three scans from a region: about 3s.
	start := time.Now()
	var got map[string][]string
	for {
		as, _, err := engine.List(ctx, tenantID, "", 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		got = map[string][]string{}
		for id := range names {
			got[names[id]] = []string{}
		}
		for _, a := range as {
			s := a.AlertType
			if a.ThresholdDays != nil {
				s += fmt.Sprintf("/%d", *a.ThresholdDays)
			}
			got[names[a.DomainID]] = append(got[names[a.DomainID]], s+" "+a.Severity)
		}
		for _, v := range got {
			sort.Strings(v)
		}
		if reflect.DeepEqual(got, want) || time.Since(start) > 20*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("alerts per target: got %v, want %v", got, want)
	}
	t.Logf("every target's alerts after %s", time.Since(start).Round(100*time.Millisecond))

	// More scans of every target from both regions change nothing.
	time.Sleep(2500 * time.Millisecond)
	as, total, err := engine.List(ctx, tenantID, "", 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	scans, err := rdb.XLen(ctx, events.StreamResults).Result()
	if err != nil {
		t.Fatal(err)
	}
	if total != 6 {
		t.Errorf("after %d scans: got %d alerts %+v, want the same 6", scans, total, as)
	}
	for _, a := range as {
		if a.Status != StatusActive {
			t.Errorf("%s of %s: got status %s, want active", a.AlertType, names[a.DomainID], a.Status)
		}
	}
	t.Logf("%d scans, %d alerts", scans, total)
}
