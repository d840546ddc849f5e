package stream_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/testenv"
)

// The tests below re-execute the test binary as a consumer process that
// they let crash or kill with SIGKILL: a real process dying mid-work, not a
// cancelled context.
const (
	childEnv      = "STREAM_TEST_CHILD"
	childRedisEnv = "STREAM_TEST_REDIS"
)

func childConfig() stream.Config {
	return stream.Config{
		Streams: []string{"s"}, Group: "g", Consumer: "c1", Count: 10,
		PollInterval: 10 * time.Millisecond, ClaimIdle: time.Minute, MaxDeliveries: 3,
		Backoff: backoff.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	}
}

// runChild is the consumer process. "crash": a per-entry consumer that
// kills itself on the entry "poison" and exits 0 once it stored "last".
// "hang": a batch consumer that stores its batches and hangs in its third.
func runChild() int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(childRedisEnv)})
	defer rdb.Close()
	c, err := stream.New(childConfig(), rdb, zap.NewNop())
	if err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch os.Getenv(childEnv) {
	case "crash":
		_ = c.RunEach(ctx, func(ctx context.Context, e stream.Entry) error {
			switch e.Event.AggregateID {
			case "poison":
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			case "last":
				rdb.SAdd(ctx, "stored", e.Event.AggregateID)
				go func() {
					// Exit once the ack is in.
					for pending(nopTB{}, rdb, "s", "g") != 0 {
						time.Sleep(5 * time.Millisecond)
					}
					os.Exit(0)
				}()
				return nil
			}
			return rdb.SAdd(ctx, "stored", e.Event.AggregateID).Err()
		})
	case "hang":
		batches := 0
		_ = c.RunBatches(ctx, func(ctx context.Context, batch []stream.Entry) error {
			for _, e := range batch {
				if err := rdb.SAdd(ctx, "stored", e.Event.AggregateID).Err(); err != nil {
					return err
				}
			}
			if batches++; batches == 3 {
				rdb.Set(ctx, "inside", "1", 0)
				select {}
			}
			return nil
		})
	}
	return 3
}

// nopTB lets the child use the helpers that take a testing.TB.
type nopTB struct{ testing.TB }

func (nopTB) Helper()               {}
func (nopTB) Fatalf(string, ...any) { os.Exit(4) }
func (nopTB) Fatal(...any)          { os.Exit(4) }

func startChild(t *testing.T, kind, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+kind, childRedisEnv+"="+addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestEntryThatCrashesTheProcessIsDeadLetteredByDeliveryCount(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	publish(t, rdb, "s", "a", "poison", "b", "last")
	crashes := 0
	for run := 1; ; run++ {
		if run > 10 {
			t.Fatalf("the consumer still crashed after %d runs", crashes)
		}
		err := startChild(t, "crash", srv.Addr).Wait()
		if err == nil {
			break
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: got %v, want a SIGKILL or exit 0", run, err)
		}
		crashes++
	}
	// Deliveries 1..3 crashed; the 4th is past MaxDeliveries.
	if want := childConfig().MaxDeliveries; crashes != want {
		t.Fatalf("got %d crashes, want %d", crashes, want)
	}
	dl := deadLetters(t, rdb)
	if len(dl) != 1 || dl[0].Values["reason"] != stream.ReasonDeliveries || dl[0].Values["deliveries"] != "4" {
		t.Fatalf("got dead letters %v, want one for max deliveries after 4 deliveries", dl)
	}
	got, err := rdb.SMembers(ctx, "stored").Result()
	if err != nil || len(got) != 3 {
		t.Fatalf("got stored %v (%v), want a, b and last", got, err)
	}
}

func TestConsumerKilledMidBatchLosesNothing(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	want := keys("k", 50)
	publish(t, rdb, "s", want...)
	child := startChild(t, "hang", srv.Addr)
	eventually(t, "child inside its third batch", func() bool { return rdb.Exists(ctx, "inside").Val() == 1 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if n := pending(t, rdb, "s", "g"); n == 0 {
		t.Fatal("got 0 pending after the kill, want the batch in flight (and the one read ahead)")
	}
	// The same consumer name comes back: its pending walk redelivers.
	m := modes[2]
	run(t, rdb, m, childConfig(), func(ctx context.Context, e stream.Entry) error {
		return rdb.SAdd(ctx, "stored", e.Event.AggregateID).Err()
	})
	eventually(t, "everything stored and acknowledged", func() bool {
		return rdb.SCard(ctx, "stored").Val() == int64(len(want)) && pending(t, rdb, "s", "g") == 0
	})
	if dl := deadLetters(t, rdb); len(dl) != 0 {
		t.Fatalf("got %d dead letters, want 0", len(dl))
	}
}
