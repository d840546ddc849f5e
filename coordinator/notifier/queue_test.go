package notifier

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestQueueOnRedisCluster runs a delivery through the queue's scripts
// (enqueue, claim, finish, depth) on a Redis Cluster node, which refuses
// any script over two slots: the delivery, its tenant's due and busy sets,
// its partition's ready set, its channel's attempts and breaker and its
// events share the tenant's slot.
func TestQueueOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.RedisCluster(t).Client(t)
	s, err := NewStore(StoreConfig{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ tenant, channel string }{{"t1", "ch_a"}, {"t2", "ch_b"}, {"t3", "ch_c"}}
	for _, tt := range tests {
		t.Run(tt.tenant, func(t *testing.T) {
			ch := Channel{ID: tt.channel, TenantID: tt.tenant}
			did, created, err := s.Enqueue(ctx, ch, SampleMessage("ev-"+tt.tenant, time.Now()))
			if err != nil || !created {
				t.Fatalf("enqueue: got created=%v %v, want a new delivery", created, err)
			}
			d, token, ok, err := s.claim(ctx, time.Minute)
			if err != nil || !ok || d.ID != did || d.TenantID != tt.tenant {
				t.Fatalf("claim: got %+v ok=%v %v, want delivery %s of %s", d, ok, err, did, tt.tenant)
			}
			done, err := s.finish(ctx, d, token, Attempt{DeliveryID: did, Attempt: 1, Status: DeliveryDelivered, At: time.Now()}, 0, true)
			if err != nil || !done {
				t.Fatalf("finish: got %v %v, want recorded", done, err)
			}
			st, n, err := s.DeliveryStatus(ctx, tt.tenant, did)
			if err != nil || st != DeliveryDelivered || n != 1 {
				t.Errorf("status: got %s %d %v, want delivered 1", st, n, err)
			}
			if got := rdb.LLen(ctx, channels.AttemptsKey(tt.tenant, tt.channel)).Val(); got != 1 {
				t.Errorf("attempts listed: got %d, want 1", got)
			}
			evs, err := events.ReadAll(ctx, rdb, events.EventStream(tt.tenant))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 || evs[len(evs)-1].Name != events.NotificationAttempted {
				t.Errorf("events of %s: got %v, want a notification attempt last", tt.tenant, evs)
			}
		})
	}
	if _, _, ok, err := s.claim(ctx, time.Minute); ok || err != nil {
		t.Errorf("claim of an empty queue: got ok=%v %v, want nothing", ok, err)
	}
	if n, err := s.Depth(ctx); n != 0 || err != nil {
		t.Errorf("depth of an empty queue: got %d %v, want 0", n, err)
	}
}

// TestQueueDepthMetric: certfleet_notifier_queue_depth counts the
// deliveries waiting over every partition.
func TestQueueDepthMetric(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	n := e.newNotifier(fastConfig("n0"))
	reg := prometheus.NewRegistry()
	if err := n.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	depth := func() float64 {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 {
			t.Fatalf("gather: %v %v", mfs, err)
		}
		return mfs[0].GetMetric()[0].GetGauge().GetValue()
	}
	if got := depth(); got != 0 {
		t.Fatalf("empty queue: got %v, want 0", got)
	}
	for i, tenant := range []string{"t1", "t2", "t3"} {
		ch := e.channel(tenant, channels.ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"})
		msg := sampleMessage(SeverityCritical, StatusTriggered)
		msg.EventID = fmt.Sprintf("event-%d", i)
		if _, _, err := e.store.Enqueue(ctx, ch, msg); err != nil {
			t.Fatal(err)
		}
	}
	if got := depth(); got != 3 {
		t.Fatalf("three deliveries of three tenants: got %v, want 3", got)
	}
}
