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
// It reports ops/s and p99 of each, and the ratios. The two alternate in
// rounds, so that load from outside the benchmark falls on both alike.
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
			// mode is one way of writing: its latencies and time spent.
			type mode struct {
				w    *replicated.Writer
				lat  []time.Duration
				took time.Duration
			}
			newMode := func(cfg replicated.Config) *mode {
				w, err := replicated.New(cfg, cc)
				if err != nil {
					b.Fatal(err)
				}
				return &mode{w: w}
			}
			// round writes n entries from base on with 16 writers.
			round := func(m *mode, base, n int) {
				const writers = 16
				lat := make([]time.Duration, n)
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := int(next.Add(1)) - 1
							if i >= n {
								return
							}
							t0 := time.Now()
							if err := write(m.w, base+i); err != nil {
								b.Error(err)
								return
							}
							lat[i] = time.Since(t0)
						}
					}()
				}
				wg.Wait()
				m.took += time.Since(start)
				m.lat = append(m.lat, lat...)
			}
			off := newMode(replicated.Config{})
			on := newMode(replicated.Config{Replicas: 1, Timeout: time.Second})
			// Warm both paths (connections, script caches) before timing.
			round(newMode(replicated.Config{}), 0, 500)
			round(newMode(replicated.Config{Replicas: 1}), 0, 500)
			b.ResetTimer()
			const rounds = 8
			per := max(1, b.N/rounds)
			for r := range rounds {
				round(off, 2*r*per, per)
				round(on, (2*r+1)*per, per)
			}
			stats := func(m *mode) (opsPerSec, p99ms float64) {
				slices.Sort(m.lat)
				return float64(len(m.lat)) / m.took.Seconds(), float64(m.lat[len(m.lat)*99/100].Microseconds()) / 1000
			}
			offOps, offP99 := stats(off)
			onOps, onP99 := stats(on)
			b.ReportMetric(offOps, "off-ops/s")
			b.ReportMetric(onOps, "wait-ops/s")
			b.ReportMetric(offP99, "off-p99-ms")
			b.ReportMetric(onP99, "wait-p99-ms")
			b.ReportMetric(onOps/offOps, "wait/off-ops")
			b.ReportMetric(onP99/offP99, "wait/off-p99")
		})
	}
}
