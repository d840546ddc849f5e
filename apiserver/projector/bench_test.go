package projector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkApply measures scan events applied per second as Run applies
// them (one pipelined batch) beside the baseline of applying them one call
// (one round trip) at a time.
func BenchmarkApply(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	logger := testenv.Logger(b)
	ctx := context.Background()
	const batch = 500
	mk := func(i int) events.Envelope {
		job := uuid.New()
		na := time.Now().Add(90 * 24 * time.Hour)
		e, _ := events.NewWithID(events.ScanEventID(job, "eu-west"), events.ScanCompleted, "t", "", events.ScanCompletedV1{
			JobID: job, DomainID: fmt.Sprintf("d%d", i%10000), Host: "example.com", Port: 443, Region: "eu-west",
			FinishedAt: time.Now().Add(time.Duration(i) * time.Millisecond),
			Results: []events.IPResult{
				{IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "aa", NotAfter: na},
				{IP: "2001:db8::1", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "aa", NotAfter: na},
			},
		})
		return e
	}
	for _, mode := range []string{"batch", "baseline"} {
		b.Run(mode, func(b *testing.B) {
			evs := make([]events.Envelope, b.N)
			for i := range evs {
				evs[i] = mk(i)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(evs); i += batch {
				chunk := evs[i:min(i+batch, len(evs))]
				if mode == "batch" {
					if _, _, err := applyBatch(ctx, rdb, chunk, logger); err != nil {
						b.Fatal(err)
					}
					continue
				}
				for _, e := range chunk {
					if _, _, err := applyBatch(ctx, rdb, []events.Envelope{e}, logger); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkRegistrationFanOut measures one lookup of a registrable domain
// with 10,000 monitored hosts under it (the index read, every view's name
// checked, every version bumped) beside the baseline of the same 10,000
// domains' scans applied in one batch: the fan-out of one lookup against
// what one scan round of those hosts costs the projector anyway.
func BenchmarkRegistrationFanOut(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	logger := testenv.Logger(b)
	ctx := context.Background()
	const n = 10000
	p, err := New(Config{Consumer: "bench"}, rdb, logger)
	if err != nil {
		b.Fatal(err)
	}
	at := time.Now()
	added := make([]events.Envelope, n)
	scans := make([]events.Envelope, n)
	for i := range added {
		id := fmt.Sprintf("d%05d", i)
		host := fmt.Sprintf("h%d.example.com", i)
		added[i], _ = events.New(events.DomainAdded, "t", id, events.DomainAddedV1{DomainID: id, Host: host, Port: 443})
		added[i].OccurredAt = at
		job := uuid.New()
		scans[i], _ = events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, "t", id, events.ScanCompletedV1{
			JobID: job, DomainID: id, Host: host, Port: 443, Region: "eu", FinishedAt: at,
			Results: []events.IPResult{{IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "aa", NotAfter: at.Add(90 * 24 * time.Hour)}},
		})
	}
	for i := 0; i < n; i += 1000 {
		if err := p.ApplyBatch(ctx, added[i:i+1000]); err != nil {
			b.Fatal(err)
		}
	}
	exp := at.AddDate(1, 0, 0)
	b.Run("lookup", func(b *testing.B) {
		for i := range b.N {
			if err := p.Apply(ctx, lookup(b, "example.com", events.RegistrationOK, at.Add(time.Duration(i)*time.Second), &exp)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-scans", func(b *testing.B) {
		for range b.N {
			for i := 0; i < n; i += 1000 {
				if err := p.ApplyBatch(ctx, scans[i:i+1000]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
