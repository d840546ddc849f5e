package chaos

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/schema"
)

// TestSnapshotterKilled kills the apiserver (SIGKILL), whose projector
// takes a view snapshot every second, at random moments under load, so
// that some snapshots die half stored; then, once every event is stored
// and applied, `certfleet views rebuild` must give back exactly the views
// the live projector built, from a complete snapshot. It takes some
// 100 s, so it runs in the full form only (go tool task chaos).
func TestSnapshotterKilled(t *testing.T) {
	s := suite(t)
	if !s.full {
		t.Skip("full form only (CERTFLEET_CHAOS=full): some 100 s of real processes")
	}
	f := newFleet(t, s)
	ctx := context.Background()
	api := f.restartWith("apiserver", "--view-snapshot-interval", "1s")
	f.load()
	time.Sleep(s.load)

	const kills = 5
	for range kills {
		time.Sleep(time.Second + time.Duration(rand.IntN(1000))*time.Millisecond)
		api.kill()
		api.run(t, f.bin)
		f.waitReady(time.Minute)
	}
	// Stop the scans, then let the sink and the projector catch up.
	f.procs["agent"].stop()
	f.landed("after the apiserver kills")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		behind := ""
		for _, st := range append(events.EventStreams(), events.StreamResults) {
			id, _, ok, err := stream.OldestUnacknowledged(ctx, f.rdb, st, projector.Group)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				behind = st + " " + id
			}
		}
		if behind == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projector has not acknowledged %s after 1m", behind)
		}
	}
	api.stop()
	var complete, started uint64
	if err := f.conn.QueryRow(ctx, "SELECT count() FROM view_snapshots").Scan(&complete); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.QueryRow(ctx, "SELECT uniqExact(snapshot_id) FROM view_snapshot_rows").Scan(&started); err != nil {
		t.Fatal(err)
	}
	snap, ok, err := schema.LatestSnapshot(ctx, f.conn)
	if err != nil || !ok {
		t.Fatalf("latest snapshot: %v, %v; want one", ok, err)
	}
	want := f.allViews(ctx)
	if len(want) == 0 {
		t.Fatal("no views after the load")
	}

	for _, args := range [][]string{{}, {"--full"}} {
		cmd := exec.Command(f.bin, append(append([]string{"views", "rebuild", "--clickhouse-dsn", f.ch.DSN}, args...), f.common...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("views rebuild %v: %v\n%s", args, err, out)
		}
		if got := f.allViews(ctx); !reflect.DeepEqual(got, want) {
			t.Errorf("views rebuild %v: views differ from the live ones:\n got %v\nwant %v", args, got, want)
		}
	}
	t.Logf("%d kills; snapshots: %d complete kept, %d with stored views (the rest cut short or dropped); rebuilt from snapshot %d, %d views",
		kills, complete, started, snap.ID, len(want))
}

// allViews reads every expiration view, versions aside.
func (f *fleet) allViews(ctx context.Context) map[string]projector.Snapshot {
	f.t.Helper()
	var ids []string
	iter := f.rdb.Scan(ctx, 0, projector.ViewPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		ids = append(ids, k[len(projector.ViewPrefix)+1:len(k)-1])
	}
	if err := iter.Err(); err != nil {
		f.t.Fatal(err)
	}
	snaps, err := projector.ReadSnapshots(ctx, f.rdb, ids)
	if err != nil {
		f.t.Fatal(err)
	}
	out := make(map[string]projector.Snapshot, len(snaps))
	for _, s := range snaps {
		s.Version = 0
		out[s.DomainID] = s
	}
	return out
}
