package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// zooKeeperJar is where Debian's zookeeper package puts the server;
// /etc/zookeeper/conf on the class path gives it the package's log4j
// settings.
const zooKeeperJar = "/usr/share/java/zookeeper.jar"

// slf4jSimple, when there, gives ZooKeeper a log (the package's class path
// has no logger and logs nothing).
const slf4jSimple = "/usr/share/java/slf4j-simple.jar"

// ZooKeeper is a standalone ZooKeeper server of one test's, on a free
// loopback port with its data under the test's temporary directory.
type ZooKeeper struct {
	// Addr is host:port of its client port.
	Addr string
	dir  string
}

// StartZooKeeper starts a ZooKeeper server for the test (Debian's
// zookeeper package, which `go tool task test` installs), stopped when the
// test ends, and waits until it serves.
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	z := launchZooKeeper(t, FreePort(t))
	z.wait(t)
	return z
}

// launchZooKeeper starts the server on port without waiting for it. The
// JVM is told to start fast rather than run fast (C1 only, serial GC,
// small heap): a test's ZooKeeper serves a handful of ClickHouse sessions.
func launchZooKeeper(t testing.TB, port int) *ZooKeeper {
	t.Helper()
	if _, err := os.Stat(zooKeeperJar); err != nil {
		t.Fatalf("%s not found: run the tests with `go tool task test`, which installs Debian's zookeeper", zooKeeperJar)
	}
	java := lookBinary(t, "java")
	dir := t.TempDir()
	cp := "/etc/zookeeper/conf:" + zooKeeperJar
	if _, err := os.Stat(slf4jSimple); err == nil {
		cp += ":" + slf4jSimple // its log in stdout.log, when installed
	}
	// A configuration file, not ZooKeeperServerMain's port and directory
	// arguments: only it binds the client port to loopback.
	conf := fmt.Sprintf("tickTime=500\ninitLimit=10\nsyncLimit=5\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n"+
		"dataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n",
		filepath.Join(dir, "data"), port)
	if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(conf), 0o644); err != nil {
		t.Fatalf("zookeeper config: %v", err)
	}
	cmd := start(t, dir, java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-Xmx128m",
		"-cp", cp, "org.apache.zookeeper.server.ZooKeeperServerMain", filepath.Join(dir, "zoo.cfg"))
	t.Cleanup(func() { stop(cmd) })
	return &ZooKeeper{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
}

// wait waits until the server serves.
func (z *ZooKeeper) wait(t testing.TB) {
	t.Helper()
	if err := waitFor(60*time.Second, func() error { return serving(z.Addr) }); err != nil {
		log, _ := os.ReadFile(filepath.Join(z.dir, "stdout.log"))
		t.Fatalf("zookeeper did not start: %v\n%s", err, log)
	}
}

// serving asks srvr, which ZooKeeper answers with its mode once it serves
// sessions: it accepts connections, and answers ruok, before it loaded its
// data, and closes the sessions it is asked for until then.
func serving(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "Mode: ") {
		return fmt.Errorf("zookeeper answered %q", b)
	}
	return nil
}

// ClickHouseCluster is ZooKeeper and clickhouse-servers that each define
// the cluster Name: one shard whose replicas are all the servers
// (internal_replication: a Distributed table writes to one replica and
// ReplicatedMergeTree copies it to the others), each server's {shard} and
// {replica} macros set.
type ClickHouseCluster struct {
	// Name is the cluster's name in every server's remote_servers, as
	// certfleet --clickhouse-cluster takes it.
	Name      string
	ZooKeeper *ZooKeeper
	// Servers are the replicas, in remote_servers' order; a test may Stop
	// and Start them.
	Servers []*ClickHouseServer
	// Database is the database the DSN names (created by schema.Open).
	Database string
	// DSN names every server, as --clickhouse-dsn takes it with
	// --clickhouse-cluster: a client fails over from one to the next.
	DSN string
}

// StartClickHouseCluster starts ZooKeeper and replicas clickhouse-servers
// defining the cluster name, for the test alone, and waits until all
// serve. The servers are Debian's 18.16, configured as ClickHouseConfig
// does plus a config.d/cluster.xml; ZooKeeper and the servers start at
// once (a server connects to ZooKeeper when a replicated table needs it).
// ZooKeeper sessions time out after 2 s, not 30: a server killed and
// started again takes its replicas back only once its old session expired.
func StartClickHouseCluster(t testing.TB, name string, replicas int) *ClickHouseCluster {
	t.Helper()
	c := &ClickHouseCluster{Name: name, Database: "certfleet"}
	c.ZooKeeper = launchZooKeeper(t, FreePort(t))
	type ports struct{ tcp, http int }
	ps := make([]ports, replicas)
	for i := range ps {
		ps[i] = ports{FreePort(t), FreePort(t)}
	}
	var shard strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&shard, "<replica><host>127.0.0.1</host><port>%d</port></replica>", p.tcp)
	}
	zhost, zport, _ := net.SplitHostPort(c.ZooKeeper.Addr)
	var addrs []string
	for i, p := range ps {
		s := newClickHouseServer(t, p.tcp)
		conf := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>%d</interserver_http_port>
  <zookeeper>
    <node><host>%s</host><port>%s</port></node>
    <session_timeout_ms>2000</session_timeout_ms>
  </zookeeper>
  <remote_servers>
    <%s><shard><internal_replication>true</internal_replication>%s</shard></%s>
  </remote_servers>
  <macros><shard>01</shard><replica>replica%d</replica></macros>
</yandex>
`, p.http, zhost, zport, name, shard.String(), name, i+1)
		if err := os.MkdirAll(filepath.Join(s.dir, "config.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.dir, "config.d", "cluster.xml"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Database = c.Database
		s.DSN = "clickhouse://" + s.Addr + "/" + c.Database
		c.Servers = append(c.Servers, s)
		addrs = append(addrs, s.Addr)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.Servers))
	for i, s := range c.Servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.cmd, errs[i] = startClickHouse(t, s.bin, s.dir, s.Addr)
		}()
	}
	c.ZooKeeper.wait(t)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(c.Servers[i].dir, "clickhouse-server.err.log"))
			t.Fatalf("clickhouse-server %s did not start: %v\n%s", c.Servers[i].Addr, err, log)
		}
	}
	c.DSN = "clickhouse://" + strings.Join(addrs, ",") + "/" + c.Database
	return c
}
