package notifier

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
)

// blackhole is a webhook endpoint that accepts connections and never
// answers: every send to it waits out the notifier's timeout. It counts
// the connections it holds at once.
type blackhole struct {
	ln net.Listener

	mu            sync.Mutex
	open, maxOpen int
	accepted      int
}

func newBlackhole(t *testing.T) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open++
			b.accepted++
			b.maxOpen = max(b.maxOpen, b.open)
			b.mu.Unlock()
			conns.Go(func() {
				// Read (and drop) until the sender gives up and closes.
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
				b.mu.Lock()
				b.open--
				b.mu.Unlock()
			})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	return b
}

func (b *blackhole) url() string { return "http://" + b.ln.Addr().String() + "/hook" }

func (b *blackhole) stats() (maxOpen, accepted int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxOpen, b.accepted
}

// sharingTenant returns a tenant id other than tenant in tenant's partition.
func sharingTenant(tenant string) string {
	tag := events.TenantTag(tenant)
	for i := 0; ; i++ {
		if id := fmt.Sprintf("hostile-%d", i); events.TenantTag(id) == tag {
			return id
		}
	}
}

// TestBrokenTenantDoesNotDelayOthers: a tenant whose webhook never answers
// and which has a backlog of 50 alerts shares a partition with a healthy
// tenant that raises one alert after them. Before the per-tenant cap and
// the channel breaker, the four workers took the hostile deliveries first,
// each waiting out its timeout, so the healthy alert waited about 50/4
// timeouts (12.1 s with this 1 s timeout; 130 s with the default 10 s).
// With the tenant's sends capped at the workers (the breaker alone: the
// baseline, measured in the same run unless -short) it waits until the
// hung channel's breaker opens, about one timeout; with the default cap of
// one send per tenant it goes out at once. No hostile delivery is lost or
// given up meanwhile.
func TestBrokenTenantDoesNotDelayOthers(t *testing.T) {
	var baseline time.Duration
	if !testing.Short() {
		t.Run("baseline tenant sends 4 (breaker only)", func(t *testing.T) {
			baseline, _ = brokenTenantDelay(t, 4)
		})
	}
	t.Run("tenant sends 1", func(t *testing.T) {
		delay, maxOpen := brokenTenantDelay(t, 0)
		if baseline > 0 {
			t.Logf("healthy tenant's delay: %s with the cap, %s with the breaker alone (%.0fx less)", delay, baseline, baseline.Seconds()/delay.Seconds())
		}
		if delay > time.Second {
			t.Errorf("healthy tenant's delay: got %s, want under one send timeout (1s)", delay)
		}
		if maxOpen > 1 {
			t.Errorf("hostile tenant's sends at once: got %d, want at most 1", maxOpen)
		}
	})
}

// brokenTenantDelay runs TestBrokenTenantDoesNotDelayOthers' scenario with
// Config.TenantSends tenantSends (0: the default) and returns the healthy
// tenant's delay and how many sends the hostile tenant had at once.
func brokenTenantDelay(t *testing.T, tenantSends int) (delay time.Duration, maxOpen int) {
	e := newTestEnv(t)
	ctx := context.Background()
	const healthy, backlog = "healthy-tenant", 50
	hostile := sharingTenant(healthy)
	hole := newBlackhole(t)
	recv := newReceiver(t)
	bad := e.channel(hostile, channels.ChannelInput{Type: TypeWebhook, URL: hole.url()})
	good := e.channel(healthy, channels.ChannelInput{Type: TypeWebhook, URL: recv.srv.URL})
	var queued []string
	for i := range backlog {
		ev := e.raise(hostile, fmt.Sprintf("hostile-alert-%d", i), SeverityCritical)
		queued = append(queued, channels.DeliveryID(ev.EventID.String(), bad.ID))
	}
	e.raise(healthy, "healthy-alert", SeverityCritical)

	cfg := fastConfig("n1")
	cfg.Timeout, cfg.TenantSends = time.Second, tenantSends
	start := time.Now()
	n := e.start(cfg)
	for {
		if len(recv.got()) > 0 {
			delay = time.Since(start)
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the healthy tenant's alert not delivered after 60 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Let the hostile tenant's sends run a while longer, to see how many
	// workers it holds at once.
	time.Sleep(2500 * time.Millisecond)
	maxOpen, accepted := hole.stats()
	t.Logf("healthy tenant's delay behind a backlog of %d alerts to a blackhole (timeout %s, %d workers, tenant sends %d): %s; "+
		"the hostile tenant held at most %d connections at once, %d made",
		backlog, cfg.Timeout, n.cfg.Workers, n.cfg.TenantSends, delay, maxOpen, accepted)
	e.waitAttempts(healthy, good.ID, 1)
	// Nothing of the hostile tenant is lost: every delivery is still queued
	// (pending or retrying), none gave up.
	for i, id := range queued {
		st, _, err := e.store.DeliveryStatus(ctx, hostile, id)
		if err != nil || (st != DeliveryPending && st != DeliveryRetrying) {
			t.Errorf("hostile delivery %d: got %q %v, want pending or retrying", i, st, err)
		}
	}
	return delay, maxOpen
}

// TestTenantSendsCap: with one send in flight a tenant's next delivery is
// not claimed, another tenant's is; a lease that runs out (its notifier
// died) frees the tenant's turn, and the tenant's deliveries are claimed
// in the order they fall due.
func TestTenantSendsCap(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	other := sharingTenant("t1")
	var ids []string
	for i := range 3 {
		id, _, err := e.store.Enqueue(ctx, Channel{ID: "ch_a", TenantID: "t1"}, SampleMessage(fmt.Sprintf("ev-%d", i), time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(2 * time.Millisecond) // due times are milliseconds
	}
	otherID, _, err := e.store.Enqueue(ctx, Channel{ID: "ch_b", TenantID: other}, SampleMessage("ev-other", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	const lease = 300 * time.Millisecond
	d, token, ok, err := e.store.claim(ctx, lease)
	if err != nil || !ok || d.ID != ids[0] {
		t.Fatalf("first claim: got %s ok=%v %v, want t1's first delivery %s", d.ID, ok, err, ids[0])
	}
	d2, _, ok, err := e.store.claim(ctx, time.Minute)
	if err != nil || !ok || d2.ID != otherID {
		t.Fatalf("second claim: got %s ok=%v %v, want the other tenant's %s", d2.ID, ok, err, otherID)
	}
	if d3, _, ok, err := e.store.claim(ctx, time.Minute); ok || err != nil {
		t.Fatalf("third claim with t1 at its cap: got %s ok=%v %v, want nothing", d3.ID, ok, err)
	}
	// The first lease runs out: t1 has its turn again. Its first delivery
	// is due again from the lease's end, so after the two queued before.
	time.Sleep(lease + 50*time.Millisecond)
	for i, want := range []string{ids[1], ids[2], ids[0]} {
		got, tok, ok, err := e.store.claim(ctx, time.Minute)
		if err != nil || !ok || got.ID != want {
			t.Fatalf("claim %d after the lease ran out: got %s ok=%v %v, want %s", i, got.ID, ok, err, want)
		}
		if i == 2 {
			if kept, err := e.store.finish(ctx, d, token, Attempt{Attempt: 1, Status: DeliveryDelivered}, 0, true); kept || err != nil {
				t.Fatalf("finish with the lost lease: got %v %v, want nothing recorded", kept, err)
			}
		}
		if kept, err := e.store.finish(ctx, got, tok, Attempt{Attempt: 1, Status: DeliveryDelivered}, 0, true); !kept || err != nil {
			t.Fatalf("finish %d: got %v %v, want recorded", i, kept, err)
		}
	}
	if n, err := e.store.Depth(ctx); err != nil || n != 1 {
		t.Errorf("depth: got %d %v, want 1 (the other tenant's, in flight)", n, err)
	}
}

// TestLegacyDueSet: a delivery a notifier of before left in its
// partition's single due set is moved to its tenant's and sent.
func TestLegacyDueSet(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	id, _, err := e.store.Enqueue(ctx, Channel{ID: "ch_a", TenantID: "t1"}, SampleMessage("ev-old", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	tag := events.TenantTag("t1")
	// Queue it as before: in the partition's due set only.
	pipe := e.rdb.TxPipeline()
	pipe.Del(ctx, dueKeyIn(tag, "t1"), readyKeyIn(tag))
	pipe.ZAdd(ctx, legacyDueKeyIn(tag), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: id})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := e.store.Depth(ctx); err != nil || n != 1 {
		t.Fatalf("depth with the legacy due set: got %d %v, want 1", n, err)
	}
	d, token, ok, err := e.store.claim(ctx, time.Minute)
	if err != nil || !ok || d.ID != id {
		t.Fatalf("claim: got %s ok=%v %v, want the legacy delivery %s", d.ID, ok, err, id)
	}
	if kept, err := e.store.finish(ctx, d, token, Attempt{Attempt: 1, Status: DeliveryDelivered}, 0, true); !kept || err != nil {
		t.Fatalf("finish: got %v %v, want recorded", kept, err)
	}
	if n := e.rdb.Exists(ctx, legacyDueKeyIn(tag), readyKeyIn(tag), dueKeyIn(tag, "t1"), busyKeyIn(tag, "t1")).Val(); n != 0 {
		t.Errorf("queue keys left after the delivery: got %d, want none", n)
	}
}

// TestChannelBreaker: after breakerTimeouts sends in a row to a channel
// time out, its other due deliveries are not tried but wait behind the
// last one's retry (another channel's of the same tenant go meanwhile);
// then the channel's deliveries go in their order, and a send that does
// not time out closes the breaker.
func TestChannelBreaker(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	hung, fine := Channel{ID: "ch_hung", TenantID: "t1"}, Channel{ID: "ch_fine", TenantID: "t1"}
	var hungIDs []string
	for i := range breakerTimeouts + 2 {
		id, _, err := e.store.Enqueue(ctx, hung, SampleMessage(fmt.Sprintf("ev-%d", i), time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		hungIDs = append(hungIDs, id)
		time.Sleep(2 * time.Millisecond)
	}
	fineID, _, err := e.store.Enqueue(ctx, fine, SampleMessage("ev-fine", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	claim := func(want string) (delivery, string) {
		t.Helper()
		d, token, ok, err := e.store.claim(ctx, time.Minute)
		if err != nil || !ok || d.ID != want {
			t.Fatalf("claim: got %q ok=%v %v, want %s", d.ID, ok, err, want)
		}
		return d, token
	}
	finish := func(d delivery, token, class string, delay time.Duration) {
		t.Helper()
		a := Attempt{Attempt: 1, Status: DeliveryDelivered, ErrorClass: class, At: time.Now()}
		if class != "" {
			a.Status = DeliveryRetrying
		}
		if kept, err := e.store.finish(ctx, d, token, a, delay, true); !kept || err != nil {
			t.Fatalf("finish %s: got %v %v, want recorded", d.ID, kept, err)
		}
	}
	const retry = 800 * time.Millisecond
	for i := range breakerTimeouts {
		d, token := claim(hungIDs[i])
		finish(d, token, ClassTimeout, retry+time.Duration(i)*time.Millisecond)
	}
	// Open: the next hung delivery waits, the other channel's goes.
	d, token := claim(fineID)
	finish(d, token, "", 0)
	if d, _, ok, err := e.store.claim(ctx, time.Minute); ok || err != nil {
		t.Fatalf("claim with the breaker open: got %s ok=%v %v, want nothing", d.ID, ok, err)
	}
	time.Sleep(retry + 50*time.Millisecond)
	// The breaker's end passed: the channel's deliveries go in their order,
	// the retries first, then the ones that waited behind the breaker.
	for i, id := range hungIDs {
		d, token := claim(id)
		if i == 0 {
			// The probe does not time out: closed.
			finish(d, token, ClassHTTP5xx, time.Hour)
			if n := e.rdb.Exists(ctx, breakerKeyIn(events.TenantTag("t1"), hung.ID)).Val(); n != 0 {
				t.Fatalf("breaker after a send that did not time out: still there")
			}
			continue
		}
		finish(d, token, "", 0)
	}
}

// TestBrokenChannelDoesNotDelayItsTenant: a tenant with a webhook that
// never answers and one that works raises 20 alerts. With one send at a
// time per tenant and no breaker, each alert's working delivery would wait
// behind a timeout of the hung channel (20 timeouts); with the breaker,
// after breakerTimeouts of them the hung channel's deliveries wait behind
// its retry and the working channel gets every alert at once.
func TestBrokenChannelDoesNotDelayItsTenant(t *testing.T) {
	e := newTestEnv(t)
	const alerts = 20
	hole := newBlackhole(t)
	recv := newReceiver(t)
	e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: hole.url()})
	e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: recv.srv.URL})
	for i := range alerts {
		e.raise("t1", fmt.Sprintf("alert-%d", i), SeverityCritical)
	}
	cfg := fastConfig("n1")
	cfg.Timeout, cfg.Backoff, cfg.MaxBackoff = 500*time.Millisecond, 5*time.Second, 20*time.Second
	start := time.Now()
	e.start(cfg)
	for len(recv.got()) < alerts {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("working channel: got %d alerts after 30 s, want %d", len(recv.got()), alerts)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	_, accepted := hole.stats()
	t.Logf("working channel got %d alerts in %s beside a hung one (timeout %s: %s without the breaker); the hung one was tried %d times",
		alerts, took, cfg.Timeout, alerts*cfg.Timeout, accepted)
	if limit := (breakerTimeouts + 3) * cfg.Timeout; took > limit {
		t.Errorf("working channel's alerts: got them in %s, want within %s", took, limit)
	}
	if accepted > breakerTimeouts+1 {
		t.Errorf("hung channel's sends: got %d, want %d before the breaker opened", accepted, breakerTimeouts)
	}
}

// TestBreakerBacklogDoesNotHoldThePartition: a tenant with more due
// deliveries behind an open breaker than one claim moves does not keep
// the claim from the partition's other tenants.
func TestBreakerBacklogDoesNotHoldThePartition(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	other := sharingTenant("t1")
	hung := Channel{ID: "ch_hung", TenantID: "t1"}
	tag := events.TenantTag("t1")
	if err := e.rdb.HSet(ctx, breakerKeyIn(tag, hung.ID), "until", time.Now().Add(time.Hour).UnixMilli(), "seq", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		if _, _, err := e.store.Enqueue(ctx, hung, SampleMessage(fmt.Sprintf("ev-%d", i), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Millisecond)
	otherID, _, err := e.store.Enqueue(ctx, Channel{ID: "ch_b", TenantID: other}, SampleMessage("ev-other", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	d, _, ok, err := e.store.claimIn(ctx, tag, time.Minute)
	if err != nil || !ok || d.ID != otherID {
		t.Fatalf("claim: got %q ok=%v %v, want the other tenant's %s", d.ID, ok, err, otherID)
	}
	if n, err := e.store.Depth(ctx); err != nil || n != 401 {
		t.Errorf("depth: got %d %v, want 401 (nothing dropped)", n, err)
	}
}
