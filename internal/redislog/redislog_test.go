package redislog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certfleet/certfleet/internal/redislog"
	"github.com/certfleet/certfleet/internal/testenv"
)

// clock is a time the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// TestGoRedisLogsThroughZap: a real go-redis client whose server is away
// (nothing listens on its port) writes its pool's "failed to dial" line
// through the Logger installed with redis.SetLogger: a zap entry of
// logger "redis", the line lower-case without go-redis's prefix, the
// dial error as its error field. Ten failed pings within the interval make one
// entry; the first after it says how many it dropped.
func TestGoRedisLogsThroughZap(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	clk := &clock{t: time.Now()}
	redis.SetLogger(redislog.New(zap.New(core), time.Minute, clk.now))
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	// One dial attempt per command, and a pool large enough that each
	// command dials (a pool whose every slot failed stops dialing).
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialerRetries: 1, PoolSize: 100, MaxRetries: -1})
	defer rdb.Close()
	ctx := context.Background()
	ping := func(n int) {
		for range n {
			if err := rdb.Ping(ctx).Err(); err == nil {
				t.Fatalf("ping %s answered, want nothing listening", addr)
			}
		}
	}
	ping(10)
	entries := logs.FilterLoggerName("redis").AllUntimed()
	if len(entries) != 1 {
		t.Fatalf("got %d entries of logger redis after 10 failed pings within the interval, want 1: %v", len(entries), entries)
	}
	e := entries[0]
	fields := e.ContextMap()
	if e.Level != zap.WarnLevel || e.Message != "redis client library logged" || fields["line"] != "connection pool: failed to dial after 1 attempts" {
		t.Errorf("got %s %q line %q, want a warning \"redis client library logged\" line \"connection pool: failed to dial after 1 attempts\"",
			e.Level, e.Message, fields["line"])
	}
	if err, _ := fields["error"].(string); !strings.Contains(err, "connection refused") {
		t.Errorf("got error field %q, want the dial's connection refused", err)
	}
	if f, _ := fields["format"].(string); !strings.Contains(f, "failed to dial after %d attempts") {
		t.Errorf("got format field %q, want go-redis's format", f)
	}

	clk.add(time.Minute)
	ping(1)
	entries = logs.FilterLoggerName("redis").AllUntimed()
	if len(entries) != 2 {
		t.Fatalf("got %d entries after the interval, want 2", len(entries))
	}
	if got := entries[1].ContextMap()["dropped"]; got != int64(9) {
		t.Errorf("got dropped %v on the entry after the interval, want 9", got)
	}
}

// TestLine: go-redis's lines are lower-case without its prefix; a
// trailing error becomes the error field, any other argument stays in
// the line; each format is limited on its own.
func TestLine(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := redislog.New(zap.New(core), time.Minute, time.Now)
	ctx := context.Background()
	l.Printf(ctx, "redis: failed to close connection: %v", errors.New("broken pipe"))
	l.Printf(ctx, "Unexpected conn[%d] state changed by hook to %v, closing it", 7, "closed")
	l.Printf(ctx, "Connection hook error: %v", "not an error")
	l.Printf(ctx, "Connection hook error: %v", "again, within the interval")
	want := []struct{ line, err string }{
		{"failed to close connection", "broken pipe"},
		{"unexpected conn[7] state changed by hook to closed, closing it", ""},
		{"connection hook error: not an error", ""},
	}
	got := logs.AllUntimed()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		err, _ := got[i].ContextMap()["error"].(string)
		if line := got[i].ContextMap()["line"]; line != w.line || err != w.err {
			t.Errorf("entry %d: got line %q (error %q), want %q (error %q)", i, line, err, w.line, w.err)
		}
	}
}
