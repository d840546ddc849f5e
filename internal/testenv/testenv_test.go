package testenv_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func TestServices(t *testing.T) {
	r := testenv.Redis(t).Client(t)
	if err := r.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db := testenv.ClickHouse(t)
	c := db.Conn(t)
	var n uint64
	if err := c.QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = currentDatabase()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("got %d tables in a new database, want 0", n)
	}
}

// TestRedisCluster proves the cluster test bed refuses what a real cluster
// refuses: a command and a script over keys of two slots, and any database
// but 0. The same commands pass on one slot (a shared hash tag).
func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	r := testenv.RedisCluster(t).Client(t)
	script := redis.NewScript(`redis.call('SET', KEYS[1], 'v'); redis.call('SET', KEYS[2], 'v'); return 1`)
	tests := []struct {
		name    string
		run     func() error
		refused bool
	}{
		{"mset two slots", func() error { return r.MSet(ctx, "a", "1", "b", "2").Err() }, true},
		{"mset one tag", func() error { return r.MSet(ctx, "{t}a", "1", "{t}b", "2").Err() }, false},
		{"script two slots", func() error { return script.Run(ctx, r, []string{"a", "b"}).Err() }, true},
		{"script one tag", func() error { return script.Run(ctx, r, []string{"{t}a", "{t}b"}).Err() }, false},
		{"select 1", func() error { return r.Do(ctx, "SELECT", 1).Err() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if got := err != nil; got != tt.refused {
				t.Fatalf("got error %v, want refused=%v", err, tt.refused)
			}
		})
	}
}

// TestClickHouseRestart proves a killed server refuses connections and
// comes back with its data.
func TestClickHouseRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := testenv.OwnClickHouse(t)
	c := srv.Conn(t)
	if err := c.Exec(ctx, "CREATE TABLE t (a UInt8) ENGINE = MergeTree() ORDER BY a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "INSERT INTO t SELECT 7"); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if err := c.Ping(ctx); err == nil {
		t.Fatal("ping of a killed server: got no error, want one")
	}
	srv.Start(t)
	var n uint64
	if err := srv.Conn(t).QueryRow(ctx, "SELECT count() FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows after restart: got %d, want 1", n)
	}
}
