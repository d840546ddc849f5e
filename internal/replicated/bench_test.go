package replicated_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkWait measures what waiting for a replica costs on a cluster of
// three masters and three replicas on loopback: the same writes, by 16
// writers at once, without WAIT (the baseline) and with WAIT 1, in the
// same run. "result" is the agent's write: one ~1 KB entry on the one
// results stream (one master takes them all). "add" is a command script
// over tenant-tagged keys, spread over the masters, as a domain add is.
// It reports ops/s and p99 of each, and the ratios.
//
//	go test -run '^$' -bench BenchmarkWait -benchtime 5000x ./internal/replicated
func BenchmarkWait(b *testing.B) {
	c := testenv.RedisClusterWithReplicas(b, 3)
	cc := c.Client(b)
	ctx := context.Background()
	payload := strings.Repeat("x", 1000)
	add := redis.NewScript(`
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'created', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], KEYS[1])
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', 'payload', ARGV[3])`)
	writes := map[string]func(w *replicated.Writer, i int) error{
		"result": func(w *replicated.Writer, i int) error {
			_, err := w.Pipelined(ctx, "results", func(p redis.Pipeliner) error {
				return p.XAdd(ctx, &redis.XAddArgs{Stream: "results", MaxLen: 100000, Approx: true,
					Values: []any{"payload", payload}}).Err()
			})
			return err
		},
		"add": func(w *replicated.Writer, i int) error {
			tag := fmt.Sprintf("{t%02d}", i%16)
			return w.RunScript(ctx, add, []string{"domain:" + tag + fmt.Sprint(i), "tenant:" + tag + ":domains", "events:" + tag},
				fmt.Sprint("host-", i), time.Now().UnixMilli(), payload[:300]).Err()
		},
	}
	for _, name := range []string{"result", "add"} {
		write := writes[name]
		b.Run(name, func(b *testing.B) {
			type run struct{ opsPerSec, p99 float64 }
			measure := func(cfg replicated.Config) run {
				w, err := replicated.New(cfg, cc)
				if err != nil {
					b.Fatal(err)
				}
				const writers = 16
				lat := make([]time.Duration, b.N)
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := int(next.Add(1)) - 1
							if i >= b.N {
								return
							}
							t0 := time.Now()
							if err := write(w, i); err != nil {
								b.Error(err)
								return
							}
							lat[i] = time.Since(t0)
						}
					}()
				}
				wg.Wait()
				took := time.Since(start)
				slices.Sort(lat)
				return run{float64(b.N) / took.Seconds(), float64(lat[len(lat)*99/100].Microseconds()) / 1000}
			}
			// Warm both paths (connections, script caches) before timing.
			measure(replicated.Config{})
			b.ResetTimer()
			off := measure(replicated.Config{})
			on := measure(replicated.Config{Replicas: 1, Timeout: time.Second})
			b.ReportMetric(off.opsPerSec, "off-ops/s")
			b.ReportMetric(on.opsPerSec, "wait-ops/s")
			b.ReportMetric(off.p99, "off-p99-ms")
			b.ReportMetric(on.p99, "wait-p99-ms")
			b.ReportMetric(on.opsPerSec/off.opsPerSec, "wait/off-ops")
			b.ReportMetric(on.p99/off.p99, "wait/off-p99")
		})
	}
}
