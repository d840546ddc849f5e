package stream

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/testenv"
)

// Only what every group read and acknowledged goes: a group's pending and
// unread entries stay, and a stream without groups is left whole.
func TestTrimAcknowledged(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const st = "results"
	var ids []string
	for i := range 1000 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: st, Values: map[string]any{"n": i}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if n, err := TrimAcknowledged(ctx, rdb, st); err != nil || n != 0 {
		t.Fatalf("no groups: trimmed %d (%v), want 0", n, err)
	}
	if n, err := TrimAcknowledged(ctx, rdb, "no-such-stream"); err != nil || n != 0 {
		t.Fatalf("missing stream: trimmed %d (%v), want 0", n, err)
	}
	read := func(group string, count int64, ack int) {
		t.Helper()
		if err := CreateGroup(ctx, rdb, st, group, "0"); err != nil {
			t.Fatal(err)
		}
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{st, ">"}, Count: count}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res[0].Messages[:ack] {
			if err := rdb.XAck(ctx, st, group, m.ID).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	read("sink", 1000, 1000)    // read and acknowledged everything
	read("projector", 700, 300) // 300 done, 400 pending, 300 unread
	read("notifier", 650, 650)  // 650 done, 350 unread

	n, err := TrimAcknowledged(ctx, rdb, st)
	if err != nil {
		t.Fatal(err)
	}
	first, err := rdb.XRangeN(ctx, st, "-", "+", 1).Result()
	if err != nil {
		t.Fatal(err)
	}
	length := rdb.XLen(ctx, st).Val()
	if n != 300 || length != 700 || first[0].ID != ids[300] {
		t.Fatalf("trimmed %d, %d left, first %s; want the 300 every group acknowledged gone and %s (projector's oldest pending) first", n, length, first[0].ID, ids[300])
	}

	// A second run with nothing new to trim removes nothing more.
	if again, err := TrimAcknowledged(ctx, rdb, st); err != nil || rdb.XLen(ctx, st).Val() != length {
		t.Fatalf("second run: trimmed %d (%v), length %d, want %d", again, err, rdb.XLen(ctx, st).Val(), length)
	}
}
