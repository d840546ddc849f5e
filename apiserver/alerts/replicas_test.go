package alerts

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

// publish XADDs e to the results stream as an agent does.
func (f *fixture) publish(e events.Envelope) {
	f.t.Helper()
	v, err := e.StreamValues()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: events.StreamResults, Values: v}).Err(); err != nil {
		f.t.Fatal(err)
	}
}

// waitConsumed waits until the projector group has read and acknowledged
// every entry of both streams.
func (f *fixture) waitConsumed() {
	f.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, stream := range append(events.EventStreams(), events.StreamResults) {
			if n, err := f.rdb.XLen(ctx, stream).Result(); err != nil || n == 0 {
				if err != nil {
					f.t.Fatal(err)
				}
				continue // nothing was ever added
			}
			info, err := f.rdb.XInfoStream(ctx, stream).Result()
			if err != nil {
				f.t.Fatal(err)
			}
			groups, err := f.rdb.XInfoGroups(ctx, stream).Result()
			if err != nil {
				f.t.Fatal(err)
			}
			for _, g := range groups {
				if g.Name == projector.Group && (g.Pending != 0 || g.LastDeliveredID != info.LastGeneratedID) {
					done = false
				}
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatal("projectors did not consume every entry within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoDuplicatesAcrossReplicas runs two projector replicas on one
// stream in which every scan arrives twice (an agent's retry re-XADDs it)
// and the first one is also left pending with a consumer that died (the
// replicas XAUTOCLAIM it), while two more engines evaluate the domain
// over and over. Each crossing must still be one alert.
func TestNoDuplicatesAcrossReplicas(t *testing.T) {
	f := newFixture(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	old := cert("192.0.2.1", "aaaa", t0.Add(20*day))
	renewed := cert("192.0.2.1", "bbbb", t0.Add(120*day))
	steps := [][]events.Envelope{
		{scan(t, "eu", t0, old), scan(t, "us", t0.Add(time.Minute), old)},
		{scan(t, "eu", t0.Add(7*day), old), scan(t, "us", t0.Add(7*day+time.Minute), old)},
		{scan(t, "us", t0.Add(15*day), old), scan(t, "eu", t0.Add(15*day+time.Minute), old)},
		{scan(t, "eu", t0.Add(16*day), renewed), scan(t, "us", t0.Add(16*day+time.Minute), renewed)},
		{scan(t, "eu", t0.Add(17*day), refused("192.0.2.1")), scan(t, "eu", t0.Add(17*day+time.Hour), refused("192.0.2.1")),
			scan(t, "eu", t0.Add(17*day+2*time.Hour), refused("192.0.2.1"))},
		{scan(t, "eu", t0.Add(18*day), renewed)},
	}

	// The first scan is read by a consumer that dies without acking.
	if err := f.rdb.XGroupCreateMkStream(ctx, events.StreamResults, projector.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	f.publish(steps[0][0])
	if err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: projector.Group, Consumer: "dead",
		Streams: []string{events.StreamResults, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for _, p := range f.proj {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("projector stopped: %v", err)
			}
		})
	}
	// Two more engines evaluating at once, as replicas whose batches
	// touch the domain would.
	for i := range 2 {
		eng, err := New(Config{}, f.rdb, f.engine.logger.Named(fmt.Sprint("extra-", i)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := eng.Evaluate(ctx, []string{domainID}); err != nil && ctx.Err() == nil {
					t.Errorf("evaluate: %v", err)
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	for i, step := range steps {
		for j, e := range step {
			if i > 0 || j > 0 {
				f.publish(e)
			}
			f.publish(e) // the retry
		}
		f.waitConsumed()
	}

	want := []string{
		"raised ssl_expiry/30 warning",
		"raised ssl_expiry/14 warning",
		"raised ssl_expiry/7 critical",
		"raised cert_changed info",
		"resolved ssl_expiry: certificate replaced",
		"resolved ssl_expiry: certificate replaced",
		"resolved ssl_expiry: certificate replaced",
		"raised scan_failing warning",
		"resolved scan_failing: condition cleared",
	}
	if got := f.since(0); !reflect.DeepEqual(got, want) {
		t.Fatalf("alert events: got %q, want %q", got, want)
	}
	ids := map[string]bool{}
	for _, a := range f.alertEvents() {
		if a.name == events.AlertRaised {
			if ids[a.raised.AlertID] {
				t.Errorf("alert %s raised twice", a.raised.AlertID)
			}
			ids[a.raised.AlertID] = true
		}
	}
	if as := f.list(); len(as) != 5 {
		t.Errorf("list: got %d alerts, want 5", len(as))
	}
}
