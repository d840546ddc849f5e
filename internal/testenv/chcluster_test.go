package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// The servers of a cluster share ZooKeeper: a row written to one replica
// of a ReplicatedMergeTree table through the Distributed table in front
// reaches the other.
func TestClickHouseCluster(t *testing.T) {
	start := time.Now()
	c := StartClickHouseCluster(t, "certfleet", 2)
	t.Logf("zookeeper and %d clickhouse servers up in %s", len(c.Servers), time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	for _, s := range c.Servers {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"CREATE DATABASE certfleet",
			"CREATE TABLE certfleet.t_local (k UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/t', '{replica}') ORDER BY k",
			fmt.Sprintf("CREATE TABLE certfleet.t AS certfleet.t_local ENGINE = Distributed(%s, certfleet, t_local)", c.Name),
		} {
			if err := conn.Exec(ctx, q); err != nil {
				log, _ := os.ReadFile(filepath.Join(c.ZooKeeper.dir, "stdout.log"))
				t.Fatalf("%s: %s: %v\n%s", s.Addr, q, err, log)
			}
		}
		_ = conn.Close()
	}
	first, second := c.Servers[0].Conn(t), c.Servers[1].Conn(t)
	b, err := first.PrepareBatch(ctx, "INSERT INTO t (k)")
	if err != nil {
		t.Fatal(err)
	}
	for k := range uint32(3) {
		if err := b.Append(k); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	err = waitFor(30*time.Second, func() error {
		var n uint64
		if err := second.QueryRow(ctx, "SELECT count() FROM t_local").Scan(&n); err != nil {
			return err
		}
		if n != 3 {
			return fmt.Errorf("%d rows on the second replica, want 3", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replicated after %s", time.Since(start).Round(time.Millisecond))
}
