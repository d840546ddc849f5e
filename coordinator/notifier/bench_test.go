package notifier

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkDelivery sends b.N webhook messages to a local receiver twice
// in one run: straight through the webhook sender (the baseline: HTTP and
// signing only), then through the whole pipeline (enqueue with SETNX,
// lease claim, send, the attempt recorded with its event) with the given
// workers. It reports the pipeline's time per delivery and its ratio to
// the baseline's.
func BenchmarkDelivery(b *testing.B) {
	for _, workers := range []int{1, 4} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) { benchDelivery(b, workers) })
	}
}

func benchDelivery(b *testing.B, workers int) {
	rdb := testenv.Redis(b).Client(b)
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got.Add(1) }))
	b.Cleanup(rcv.Close)
	st, err := NewStore(StoreConfig{}, rdb)
	if err != nil {
		b.Fatal(err)
	}
	chans, err := channels.New(channels.Config{Passphrase: testPassphrase, Targets: guard.Policy{Allow: loopback}}, rdb, testenv.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ch, err := chans.Create(ctx, "t1", channels.ChannelInput{Type: TypeWebhook, URL: rcv.URL, Secret: ptr("bench-secret-0123456789")})
	if err != nil {
		b.Fatal(err)
	}
	opened, err := chans.OpenSecret(ctx, ch)
	if err != nil {
		b.Fatal(err)
	}
	client := guard.HTTPClient((&guard.Dialer{Policy: guard.Policy{Allow: loopback}, Timeout: 5 * time.Second}).DialHost, 5*time.Second, nil)
	direct := &webhookSender{client: client, maxResp: 64 << 10, now: time.Now}
	msg := SampleMessage("x", time.Now())

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := direct.Send(ctx, opened, []Message{msg}); err != nil {
			b.Fatal(err)
		}
	}
	baseline := time.Since(start)

	b.StopTimer()
	got.Store(0)
	for i := range b.N {
		m := msg
		m.EventID = "bench-" + strconv.Itoa(i)
		if _, _, err := st.Enqueue(ctx, ch, m); err != nil {
			b.Fatal(err)
		}
	}
	cfg := fastConfig("bench")
	// One tenant: let it use every worker, to measure the pipeline.
	cfg.Workers, cfg.TenantSends, cfg.Poll = workers, workers, time.Millisecond
	n, err := New(cfg, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.StartTimer()
	start = time.Now()
	for range workers {
		wg.Go(func() { n.work(rctx) })
	}
	for got.Load() < int64(b.N) {
		time.Sleep(200 * time.Microsecond)
	}
	pipeline := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(pipeline.Microseconds())/float64(b.N), "µs/delivery")
	b.ReportMetric(float64(baseline.Microseconds())/float64(b.N), "µs/direct-send")
	b.ReportMetric(pipeline.Seconds()/baseline.Seconds(), "x-direct")
}
