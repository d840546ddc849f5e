package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisPrimary starts a fresh plain redis-server, outside cluster mode
// whatever ClusterEnv says, to be replicated by Replica: for tests of a
// replicated Redis that is not a cluster.
func RedisPrimary(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, plainRedis, "--save", "", "--appendonly", "no")
}

// Replica starts a plain redis-server replicating s (REPLICAOF), which
// RedisPrimary started, and waits until it has synced.
func (s *RedisServer) Replica(t testing.TB) *RedisServer {
	t.Helper()
	if slices.Contains(s.args, "--cluster-enabled") {
		t.Fatal("testenv: Replica of a cluster node; start the primary with RedisPrimary")
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	// A full sync waits 5 s for more replicas to share it by default.
	mc := redis.NewClient(&redis.Options{Addr: s.Addr})
	err := mc.ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err()
	_ = mc.Close()
	if err != nil {
		t.Fatalf("config of %s: %v", s.Addr, err)
	}
	r := startRedis(t, plainRedis, "--save", "", "--appendonly", "no", "--replicaof", host, port)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	m := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer m.Close()
	if err := waitFor(30*time.Second, func() error {
		if err := linkUp(c); err != nil {
			return err
		}
		if err := replicasOnline(m); err != nil {
			return err
		}
		return acked(m)
	}); err != nil {
		t.Fatalf("replica %s of %s did not sync: %v", r.Addr, s.Addr, err)
	}
	return r
}

// acked is nil once a write to m is confirmed by a replica within 100 ms.
// The first WAIT after a replica synced can take up to a second (until
// the replica's first acknowledgement): tests start after it.
func acked(m *redis.Client) error {
	return ackedKey(m, "testenv:replica-acked")
}

// ackedKey is acked with a write to key, which must be in m's slots.
func ackedKey(m *redis.Client, key string) error {
	ctx := context.Background()
	conn := m.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, key, "1", 0).Err(); err != nil {
		return err
	}
	n, err := conn.Do(ctx, "WAIT", 1, 100).Int()
	if err == nil && n < 1 {
		err = errors.New("write not acknowledged by the replica yet")
	}
	return err
}

// replicasOnline is nil once the master counts every replica it has as
// online. A replica that has loaded the master's data sees its link up
// before that: the master counts it for WAIT only after its first
// acknowledgement, up to a second later.
func replicasOnline(m *redis.Client) error {
	info, err := m.Info(context.Background(), "replication").Result()
	if err != nil {
		return err
	}
	if strings.Contains(info, "connected_slaves:0") {
		return fmt.Errorf("master has no replica")
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=") && !strings.Contains(line, "state=online") {
			return fmt.Errorf("replica not online yet: %s", strings.TrimSpace(line))
		}
	}
	return nil
}

// linkUp is nil once a replica's link to its master is up.
func linkUp(c *redis.Client) error {
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("replica not in sync: %s", info)
	}
	return nil
}

// NodeTimeout is the cluster-node-timeout of the nodes of
// RedisClusterWithReplicas: how long a master may be silent before its
// replica takes over. Production keeps Redis's 15 s default; tests want
// their failovers quick.
const NodeTimeout = 2 * time.Second

// RedisClusterWithReplicas starts a fresh Redis Cluster of masters masters,
// each with one replica (redis-cli --cluster create --cluster-replicas 1),
// on loopback, and waits until every master's replica is in sync. Nodes
// lists the masters first; KillMaster fails one over. A replica always
// takes over (cluster-replica-validity-factor 0), however long its link
// was down, as a test that kills a master wants. Each master holds one
// key of the helper's, testenv:replica-acked:<n>: the write that proved
// its replica acknowledges (the first WAIT after a sync can take a
// second).
func RedisClusterWithReplicas(t testing.TB, masters int) *Cluster {
	t.Helper()
	cli := lookBinary(t, "redis-cli")
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for range 2 * masters {
		n := startRedis(t, clusterNode, "--save", "", "--appendonly", "no",
			"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())),
			"--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0")
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	var q []string
	for _, n := range c.Nodes[1:] {
		q = append(q, "addr="+n.Addr)
	}
	c.URL = "redis://" + c.Nodes[0].Addr + "?" + strings.Join(q, "&")
	if err := c.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("redis cluster of %d masters and their replicas did not form: %v", masters, err)
	}
	return c
}

// clusterNodes is CLUSTER NODES as seen by node, one line per node.
func clusterNodes(ctx context.Context, node *redis.Client) ([]string, error) {
	s, err := node.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(s), "\n"), nil
}

// waitHealthy waits until every running node reports the cluster ok,
// knows every node it should, sees no node failing, and every master
// holding slots has a replica whose link is up.
func (c *Cluster) waitHealthy(limit time.Duration) error {
	ctx := context.Background()
	return waitFor(limit, func() error {
		for _, n := range c.Nodes {
			if n.cmd == nil {
				continue
			}
			nc := redis.NewClient(&redis.Options{Addr: n.Addr})
			err := func() error {
				if err := clusterOK(nc); err != nil {
					return fmt.Errorf("%s: %w", n.Addr, err)
				}
				lines, err := clusterNodes(ctx, nc)
				if err != nil {
					return err
				}
				if len(lines) != len(c.Nodes) {
					return fmt.Errorf("%s knows %d nodes, want %d", n.Addr, len(lines), len(c.Nodes))
				}
				for _, l := range lines {
					if strings.Contains(l, "fail") {
						return fmt.Errorf("%s sees a failing node: %s", n.Addr, l)
					}
				}
				info, err := nc.Info(ctx, "replication").Result()
				if err != nil {
					return err
				}
				if strings.Contains(info, "role:slave") && !strings.Contains(info, "master_link_status:up") {
					return fmt.Errorf("replica %s not in sync", n.Addr)
				}
				if strings.Contains(info, "role:master") && ownsSlots(lines) {
					if err := replicasOnline(nc); err != nil {
						return fmt.Errorf("master %s: %w", n.Addr, err)
					}
					key, err := ownKey(ctx, nc, lines)
					if err != nil {
						return err
					}
					if err := ackedKey(nc, key); err != nil {
						return fmt.Errorf("master %s: %w", n.Addr, err)
					}
				}
				return nil
			}()
			_ = nc.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// ownKey finds a key in a slot of the node whose CLUSTER NODES lines
// these are.
func ownKey(ctx context.Context, nc *redis.Client, lines []string) (string, error) {
	var ranges [][2]int64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 9 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			from, to, found := strings.Cut(r, "-")
			if !found {
				to = from
			}
			a, err1 := strconv.ParseInt(from, 10, 64)
			b, err2 := strconv.ParseInt(to, 10, 64)
			if err1 == nil && err2 == nil {
				ranges = append(ranges, [2]int64{a, b})
			}
		}
	}
	for i := range 10000 {
		key := fmt.Sprintf("testenv:replica-acked:%d", i)
		slot, err := nc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return "", err
		}
		for _, r := range ranges {
			if r[0] <= slot && slot <= r[1] {
				return key, nil
			}
		}
	}
	return "", fmt.Errorf("no key found in slots %v", ranges)
}

// ownsSlots reports whether the "myself" line of CLUSTER NODES lists slots.
func ownsSlots(lines []string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 8 && strings.Contains(f[2], "myself") {
			return true
		}
	}
	return false
}

// MasterOf is the node that is master of key's slot now, as the cluster
// itself says (CLUSTER SLOTS of a running node).
func (c *Cluster) MasterOf(t testing.TB, key string) *RedisServer {
	t.Helper()
	ctx := context.Background()
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		slot, err := nc.ClusterKeySlot(ctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = nc.ClusterSlots(ctx).Result()
		}
		_ = nc.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, m := range c.Nodes {
					if m.Addr == s.Nodes[0].Addr {
						return m
					}
				}
			}
		}
	}
	t.Fatalf("no running node knows the master of %s", key)
	return nil
}

// KillMaster kills the master of key's slot (SIGKILL, as a crash does),
// waits until the cluster has promoted its replica and serves every slot
// again, and returns the killed node (its Start brings it back; Rejoin
// waits until it is the new master's replica). It returns how long the
// failover took, from the kill to a cluster that is ok.
func (c *Cluster) KillMaster(t testing.TB, key string) (*RedisServer, time.Duration) {
	t.Helper()
	victim := c.MasterOf(t, key)
	victim.Stop()
	killed := time.Now()
	err := waitFor(60*time.Second, func() error {
		if m := c.MasterOf(t, key); m == victim {
			return fmt.Errorf("%s still master of %s", victim.Addr, key)
		}
		for _, n := range c.Nodes {
			if n.cmd == nil {
				continue
			}
			nc := redis.NewClient(&redis.Options{Addr: n.Addr})
			err := clusterOK(nc)
			_ = nc.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("failover after killing %s: %v", victim.Addr, err)
	}
	return victim, time.Since(killed)
}

// Rejoin starts a node KillMaster killed and waits until it is back as a
// replica of the master that replaced it and every master has a replica in
// sync again.
func (c *Cluster) Rejoin(t testing.TB, n *RedisServer) {
	t.Helper()
	n.Start(t)
	if err := c.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("node %s did not rejoin: %v", n.Addr, err)
	}
}

// ReplicaOf is the running node replicating master now (INFO replication
// of the master).
func (c *Cluster) ReplicaOf(t testing.TB, master *RedisServer) *RedisServer {
	t.Helper()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer mc.Close()
	info, err := mc.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatalf("replication info of %s: %v", master.Addr, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "slave0:") {
			continue
		}
		var port string
		for _, kv := range strings.Split(strings.TrimPrefix(strings.TrimSpace(line), "slave0:"), ",") {
			if v, ok := strings.CutPrefix(kv, "port="); ok {
				port = v
			}
		}
		for _, n := range c.Nodes {
			if n.Addr == "127.0.0.1:"+port {
				return n
			}
		}
	}
	t.Fatalf("master %s has no replica: %s", master.Addr, info)
	return nil
}

// Pause stops the server's process (SIGSTOP) without killing it: its
// connections stay open and nothing it should receive arrives. Resume
// continues it.
func (s *RedisServer) Pause() { _ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume continues a server Pause stopped.
func (s *RedisServer) Resume() { _ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) }
