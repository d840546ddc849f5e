package coordinator

import (
	"context"
	"fmt"
	"testing"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkRegistrationDedup measures how many registration lookups one
// interval of a fleet costs: hosts of several tenants spread over fewer
// registrable domains (subdomains, and tenants monitoring the same
// sites). The baseline, measured in the same run over the same events, is
// the per-domain schedule the scans use: one job per host. lookups/host is
// the dedup ratio (registrable domains ÷ hosts); the baseline's is 1.
func BenchmarkRegistrationDedup(b *testing.B) {
	const tenants, hostsPerTenant = 5, 400
	for _, registrables := range []int{20, 200} {
		var evs []events.Envelope
		for ti := range tenants {
			tenant := events.TenantID(fmt.Sprintf("t%d@example.org", ti))
			for i := range hostsPerTenant {
				host := fmt.Sprintf("h%d.site%d.example", i, (ti*hostsPerTenant+i)%registrables)
				id := events.DomainID(tenant, host, 443)
				e, err := events.New(events.DomainAdded, tenant, id, events.DomainAddedV1{DomainID: id, Host: host, Port: 443})
				if err != nil {
					b.Fatal(err)
				}
				evs = append(evs, e)
			}
		}
		hosts := len(evs)
		for _, mode := range []string{"registration", "baseline"} {
			b.Run(fmt.Sprintf("hosts=%d/registrable=%d/%s", hosts, registrables, mode), func(b *testing.B) {
				ctx := context.Background()
				rdb := testenv.Redis(b).Client(b)
				total := 0
				for b.Loop() {
					b.StopTimer()
					if err := rdb.FlushAll(ctx).Err(); err != nil {
						b.Fatal(err)
					}
					c, err := New(Config{Name: "bench", Shards: 4}, rdb, testenv.Logger(b))
					if err != nil {
						b.Fatal(err)
					}
					c.balanceLeases(ctx)
					b.StartTimer()
					for _, e := range evs {
						if err := c.applyEvent(ctx, e); err != nil {
							b.Fatal(err)
						}
					}
					n := 0
					if mode == "registration" {
						n, err = c.dispatchRegistrations(ctx)
					} else {
						for shard := range 4 {
							var k int
							k, err = c.dispatchShard(ctx, shard)
							n += k
						}
					}
					if err != nil {
						b.Fatal(err)
					}
					total += n
				}
				b.ReportMetric(float64(total)/float64(b.N)/float64(hosts), "lookups/host")
			})
		}
	}
}
