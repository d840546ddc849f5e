package alerts

import (
	"context"
	"testing"
	"time"

	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// TestAlertsReachClickHouse: the alert events the engine XADDs are stored
// by the sink like every event, once each.
func TestAlertsReachClickHouse(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := testenv.ClickHouse(t)
	conn, err := schema.Open(ctx, db.DSN, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 1)
	sk, err := sink.New(sink.Config{Consumer: "test", FlushInterval: 20 * time.Millisecond}, f.rdb, conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sk.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	}()

	expired := scan(t, "eu", t0, cert("192.0.2.1", "aaaa", t0.Add(-day)))
	f.step("expired", []string{"raised ssl_expired critical"}, expired, expired)
	f.step("renewed", []string{"raised cert_changed info", "resolved ssl_expired: certificate replaced"},
		scan(t, "eu", t0.Add(time.Hour), cert("192.0.2.1", "bbbb", t0.Add(90*day))))

	want := map[string]uint64{events.AlertRaised: 2, events.AlertResolved: 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]uint64{}
		rows, err := conn.Query(ctx, "SELECT name, count() FROM events FINAL WHERE tenant_id = ? AND name LIKE 'alert.%' GROUP BY name", tenant)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			var n uint64
			if err := rows.Scan(&name, &n); err != nil {
				t.Fatal(err)
			}
			got[name] = n
		}
		_ = rows.Close()
		if got[events.AlertRaised] == want[events.AlertRaised] && got[events.AlertResolved] == want[events.AlertResolved] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert events in ClickHouse: got %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
