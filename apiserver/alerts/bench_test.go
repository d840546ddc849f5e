package alerts

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts/accountstest"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

type noEvaluator struct{}

func (noEvaluator) Evaluate(context.Context, []string) error { return nil }

// BenchmarkProjectorWithAlerts measures scan events a projector applies
// per second in batches of 500 (as Run does) with the alert engine,
// beside the same projector without it (the views alone), on 1,000
// domains of one tenant whose certificates do not change: the steady
// state, where each evaluation raises nothing.
func BenchmarkProjectorWithAlerts(b *testing.B) {
	ctx := context.Background()
	const (
		batch   = 500
		domains = 1000
	)
	id := func(i int) string { return fmt.Sprintf("d%04d", i%domains) }
	mk := func(i int) events.Envelope {
		job := uuid.New()
		at := t0.Add(time.Duration(i) * time.Second)
		e, _ := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, tenant, "", events.ScanCompletedV1{
			JobID: job, DomainID: id(i), Host: "example.com", Port: 443, Region: "eu",
			FinishedAt: at,
			Results:    []events.IPResult{cert("192.0.2.1", "aa", t0.Add(90*day)), cert("2001:db8::1", "aa", t0.Add(90*day))},
		})
		return e
	}
	for _, mode := range []string{"views", "views+alerts"} {
		b.Run(mode, func(b *testing.B) {
			rdb := testenv.Redis(b).Client(b)
			for i := range domains {
				accountstest.PutDomain(b, rdb, tenant, id(i), "example.com", 443)
			}
			var ev projector.Evaluator = noEvaluator{}
			if mode == "views+alerts" {
				eng, err := New(Config{}, rdb, testenv.Logger(b))
				if err != nil {
					b.Fatal(err)
				}
				ev = eng
			}
			p, err := projector.New(projector.Config{Consumer: "bench", Evaluator: ev}, rdb, testenv.Logger(b))
			if err != nil {
				b.Fatal(err)
			}
			evs := make([]events.Envelope, b.N)
			for i := range evs {
				evs[i] = mk(i)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(evs); i += batch {
				if err := p.ApplyBatch(ctx, evs[i:min(i+batch, len(evs))]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
