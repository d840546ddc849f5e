package projector

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

func failed(ip string) events.IPResult {
	return events.IPResult{IP: ip, Outcome: events.OutcomeConnectionRefused}
}

func snapshot(t *testing.T, p *Projector) Snapshot {
	t.Helper()
	s, err := ReadSnapshot(context.Background(), p.rdb, domainID)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return s
}

// TestSnapshotCountsFailuresAndVersions follows a domain's snapshot through
// scans that fail and succeed, a redelivery and a removal.
func TestSnapshotCountsFailuresAndVersions(t *testing.T) {
	ctx := context.Background()
	p, _ := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	good := okResult("192.0.2.1", "aa", na)
	steps := []struct {
		name     string
		ev       events.Envelope
		version  int64
		failures map[string]int
		removed  bool
	}{
		{"added", domainEvent(t, events.DomainAdded, "example.com", 443, t0.Add(-time.Hour)), 1, map[string]int{}, false},
		{"one IP fails", scan(t, "eu", t0, good, failed("192.0.2.2")), 2, map[string]int{"eu": 1}, false},
		{"again", scan(t, "eu", t0.Add(time.Minute), good, failed("192.0.2.2")), 3, map[string]int{"eu": 2}, false},
		{"other region fails", scan(t, "us", t0.Add(time.Minute), failed("192.0.2.1")), 4, map[string]int{"eu": 2, "us": 1}, false},
		{"older scan changes nothing", scan(t, "eu", t0.Add(-time.Minute), good), 4, map[string]int{"eu": 2, "us": 1}, false},
		{"eu recovers", scan(t, "eu", t0.Add(2*time.Minute), good), 5, map[string]int{"us": 1}, false},
		{"removed", removed(t, t0.Add(time.Hour)), 6, map[string]int{}, true},
	}
	for _, st := range steps {
		if err := p.Apply(ctx, st.ev); err != nil {
			t.Fatalf("%s: apply: %v", st.name, err)
		}
		s := snapshot(t, p)
		if s.Version != st.version || !reflect.DeepEqual(s.Failures, st.failures) || s.Removed != st.removed ||
			s.TenantID != tenant || s.Name != "example.com:443" {
			t.Errorf("%s: got version %d, failures %v, removed %v, tenant %q, name %q; want %d, %v, %v, %q, example.com:443",
				st.name, s.Version, s.Failures, s.Removed, s.TenantID, s.Name, st.version, st.failures, st.removed, tenant)
		}
	}
}

// evaluatorFunc records what the projector asks to evaluate.
type evaluatorFunc func(ctx context.Context, ids []string) error

func (f evaluatorFunc) Evaluate(ctx context.Context, ids []string) error { return f(ctx, ids) }

func TestEvaluatorSeesEveryBatchDomain(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	var (
		mu  sync.Mutex
		got [][]string
	)
	p, err := New(Config{Consumer: "test", Evaluator: evaluatorFunc(func(_ context.Context, ids []string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ids)
		return nil
	})}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	na := t0.Add(90 * 24 * time.Hour)
	ev := scan(t, "eu", t0, okResult("192.0.2.1", "aa", na))
	// Applied, then redelivered: the second changes no view and is still
	// evaluated, in case the first replica died before evaluating.
	for range 2 {
		if err := p.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.apply(ctx, []events.Envelope{ev, removed(t, t0.Add(time.Hour)), scan(t, "us", t0, okResult("192.0.2.1", "aa", na))}); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{domainID}, {domainID}, {domainID}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("evaluated: got %v, want %v", got, want)
	}
}
