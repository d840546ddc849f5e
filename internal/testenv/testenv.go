// Package testenv starts the real services that certfleet's integration
// tests talk to: a Redis server per test and one ClickHouse server per test
// binary (a fresh database per test), each on free loopback ports under a
// temporary directory. Both come from Debian's packages, which
// `go tool task test` installs when they are missing; a missing binary fails
// the test rather than skipping it.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certfleet/certfleet/internal/replicated"
)

// Main runs the tests of a package and stops the shared ClickHouse server
// afterwards. Call it from TestMain: os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	stopClickHouse()
	return code
}

// Logger returns a zap logger that writes into the test's log.
func Logger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func lookBinary(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/usr/bin/", "/usr/local/bin/"} {
		if dir == "" {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
			continue
		}
		if _, err := os.Stat(dir + name); err == nil {
			return dir + name
		}
	}
	t.Fatalf("%s not found: run the tests with `go tool task test`, which installs it", name)
	return ""
}

func start(t testing.TB, dir, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	// Redis compares strings in Lua by its locale (docs/operations.md,
	// "Redis settings"): the C locale, whatever the machine's.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatalf("create log: %v", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// The server dies with the test binary even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return cmd
}

func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
}

// RedisServer is a running redis-server.
type RedisServer struct {
	Addr string
	URL  string
	cmd  *exec.Cmd
	bin  string
	dir  string
	args []string
}

// Client opens a new client to the server, closed when the test ends.
func (s *RedisServer) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 64})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ClusterEnv is the environment variable that makes Redis start every
// server in cluster mode (CERTFLEET_TEST_REDIS_CLUSTER=1).
const ClusterEnv = "CERTFLEET_TEST_REDIS_CLUSTER"

// Redis starts a fresh, empty redis-server for this test: a plain server,
// or a single-node Redis Cluster when ClusterEnv is set (see RedisCluster).
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, envMode(), "--save", "", "--appendonly", "no")
}

// RedisAOF starts a fresh redis-server that writes every command to its
// append-only file before answering, so that Restart keeps every write.
func RedisAOF(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, envMode(), "--save", "", "--appendonly", "yes", "--appendfsync", "always")
}

// Restart kills the server (SIGKILL) and starts it again on the same port
// with the same data directory.
func (s *RedisServer) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.Start(t)
}

// Stop kills the server (SIGKILL), as a crash would; Start brings it back.
func (s *RedisServer) Stop() {
	stop(s.cmd)
	s.cmd = nil
}

// Start starts the server Stop killed, on the same port and data
// directory, and waits until it serves (its slots, in cluster mode).
func (s *RedisServer) Start(t testing.TB) {
	t.Helper()
	s.cmd = start(t, s.dir, s.bin, s.args...)
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := waitFor(10*time.Second, func() error { return c.Ping(context.Background()).Err() }); err != nil {
		t.Fatalf("redis-server did not restart: %v", err)
	}
	if slices.Contains(s.args, "--cluster-enabled") {
		if err := clusterReady(c); err != nil {
			t.Fatalf("redis cluster did not come back: %v", err)
		}
	}
}

// RedisCluster starts a fresh single-node Redis Cluster for this test: one
// node owning all 16384 slots. A plain client works against it (no slot is
// ever MOVED), but the server refuses every command and script that
// touches keys of two slots (CROSSSLOT), as a real cluster does, and has
// only database 0. Tests of code that must run on Redis Cluster use it to
// prove that.
func RedisCluster(t testing.TB) *RedisServer {
	t.Helper()
	return startRedis(t, oneNodeCluster, "--save", "", "--appendonly", "no")
}

// Cluster is a Redis Cluster of several masters on loopback.
type Cluster struct {
	Nodes []*RedisServer
	// URL names every node, as certfleet --redis-cluster takes it
	// (redis://first?addr=second&addr=third).
	URL string
}

// Client opens a cluster client, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64})
	replicated.FollowFailover(cc)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// RedisClusterOf starts a fresh Redis Cluster of masters nodes for this
// test, the 16384 slots split evenly between them: keys of different hash
// tags live on different processes, so a command, script or transaction
// that spans slots fails (CROSSSLOT), and clients must follow MOVED.
func RedisClusterOf(t testing.TB, masters int) *Cluster {
	t.Helper()
	c := &Cluster{}
	for range masters {
		c.Nodes = append(c.Nodes, startRedis(t, clusterNode, "--save", "", "--appendonly", "no"))
	}
	ctx := context.Background()
	var q []string
	for i, n := range c.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		from, to := i*16384/masters, (i+1)*16384/masters-1
		err := nc.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", from, to).Err()
		if err == nil && i > 0 {
			host, port, _ := net.SplitHostPort(c.Nodes[0].Addr)
			err = nc.ClusterMeet(ctx, host, port).Err()
			q = append(q, "addr="+n.Addr)
		}
		_ = nc.Close()
		if err != nil {
			t.Fatalf("redis cluster node %s: %v", n.Addr, err)
		}
	}
	for _, n := range c.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		err := waitFor(30*time.Second, func() error {
			if err := clusterOK(nc); err != nil {
				return err
			}
			info, err := nc.ClusterInfo(ctx).Result()
			if err == nil && !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", masters)) {
				err = fmt.Errorf("cluster not ready: %s", info)
			}
			return err
		})
		_ = nc.Close()
		if err != nil {
			t.Fatalf("redis cluster of %d did not form: %v", masters, err)
		}
	}
	c.URL = "redis://" + c.Nodes[0].Addr + "?" + strings.Join(q, "&")
	return c
}

// redisMode is how startRedis runs a server.
type redisMode int

const (
	plainRedis redisMode = iota
	// oneNodeCluster: cluster mode, the node owning every slot.
	oneNodeCluster
	// clusterNode: cluster mode, no slots yet (RedisClusterOf gives them).
	clusterNode
)

// envMode is oneNodeCluster when ClusterEnv is set, plainRedis otherwise.
func envMode() redisMode {
	if os.Getenv(ClusterEnv) == "1" {
		return oneNodeCluster
	}
	return plainRedis
}

func startRedis(t testing.TB, mode redisMode, extra ...string) *RedisServer {
	t.Helper()
	cluster := mode != plainRedis
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--protected-mode", "no"}, extra...)
		if cluster {
			args = append(args, "--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)))
		}
		cmd := start(t, dir, bin, args...)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := waitFor(10*time.Second, func() error { return c.Ping(context.Background()).Err() })
		if err == nil && mode == oneNodeCluster {
			err = ownAllSlots(c)
		}
		_ = c.Close()
		if err == nil {
			s := &RedisServer{Addr: addr, URL: "redis://" + addr + "/0", cmd: cmd, bin: bin, dir: dir, args: args}
			t.Cleanup(func() { stop(s.cmd) })
			return s
		}
		stop(cmd)
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			t.Fatalf("redis-server did not start: %v\n%s", err, log)
		}
	}
}

// ownAllSlots gives the one node of a fresh cluster every slot and waits
// until the cluster reports itself ok.
func ownAllSlots(c *redis.Client) error {
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		return fmt.Errorf("cluster addslotsrange: %w", err)
	}
	return clusterReady(c)
}

// clusterReady waits until the node serves its slots (cluster_state:ok):
// a restarted node answers PING before it does, and CLUSTERDOWN until then.
func clusterReady(c *redis.Client) error {
	return waitFor(10*time.Second, func() error { return clusterOK(c) })
}

// clusterOK is nil when the node reports cluster_state:ok.
func clusterOK(c *redis.Client) error {
	info, err := c.ClusterInfo(context.Background()).Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("cluster not ready: %s", info)
	}
	return nil
}

func waitFor(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var ch struct {
	sync.Mutex
	addr string
	cmd  *exec.Cmd
	dir  string
	err  error
}

func stopClickHouse() {
	ch.Lock()
	defer ch.Unlock()
	stop(ch.cmd)
	if ch.dir != "" {
		_ = os.RemoveAll(ch.dir)
	}
	ch.cmd, ch.addr, ch.dir = nil, "", ""
}

// ClickHouseConfig writes the repository's ClickHouse configuration
// (scripts/clickhouse) into dir for a server on port.
func ClickHouseConfig(dir string, port int) error {
	for _, name := range []string{"config.xml", "users.xml"} {
		b, err := os.ReadFile(filepath.Join(RepoRoot(), "scripts", "clickhouse", name))
		if err != nil {
			return err
		}
		s := strings.NewReplacer("@DIR@", dir, "@PORT@", strconv.Itoa(port)).Replace(string(b))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func clickhouseAddr(t testing.TB) string {
	t.Helper()
	ch.Lock()
	defer ch.Unlock()
	if ch.addr != "" {
		return ch.addr
	}
	bin := lookBinary(t, "clickhouse-server")
	dir, err := os.MkdirTemp("", "certfleet-clickhouse-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		port := FreePort(t)
		if err := ClickHouseConfig(dir, port); err != nil {
			t.Fatalf("clickhouse config: %v", err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd, err := startClickHouse(t, bin, dir, addr)
		if err == nil {
			ch.addr, ch.cmd, ch.dir = addr, cmd, dir
			return addr
		}
		ch.err = err
	}
	log, _ := os.ReadFile(filepath.Join(dir, "clickhouse-server.err.log"))
	t.Fatalf("clickhouse-server did not start: %v\n%s", ch.err, log)
	return ""
}

// startClickHouse starts clickhouse-server with the configuration in dir
// and waits until it answers at addr; on failure the server is stopped.
func startClickHouse(t testing.TB, bin, dir, addr string) (*exec.Cmd, error) {
	cmd := start(t, dir, bin, "--config-file="+filepath.Join(dir, "config.xml"))
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err == nil {
		err = waitFor(60*time.Second, func() error { return conn.Ping(context.Background()) })
		_ = conn.Close()
	}
	if err != nil {
		stop(cmd)
		return nil, err
	}
	return cmd, nil
}

// ClickHouseServer is a clickhouse-server of one test's own, for tests
// that stop and start it; the shared server of ClickHouse must stay up.
type ClickHouseServer struct {
	ClickHouseDB
	bin, dir string
	cmd      *exec.Cmd
}

// OwnClickHouse starts a clickhouse-server for the test alone, stopped
// and removed when the test ends, and returns it with an empty database.
func OwnClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	s := newClickHouseServer(t, FreePort(t))
	s.Start(t)
	return s
}

// newClickHouseServer writes the configuration of a server on port into a
// directory of the test's and returns the server, not started yet.
func newClickHouseServer(t testing.TB, port int) *ClickHouseServer {
	t.Helper()
	s := &ClickHouseServer{bin: lookBinary(t, "clickhouse-server"), dir: t.TempDir()}
	if err := ClickHouseConfig(s.dir, port); err != nil {
		t.Fatalf("clickhouse config: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	t.Cleanup(func() { stop(s.cmd) })
	s.ClickHouseDB = ClickHouseDB{Addr: addr, Database: "default", DSN: "clickhouse://" + addr + "/default"}
	return s
}

// Stop kills the server (SIGKILL, as a crash or a lost host would).
func (s *ClickHouseServer) Stop(t testing.TB) {
	t.Helper()
	stop(s.cmd)
	s.cmd = nil
}

// Start starts the stopped server again on the same port and data, and
// waits until it answers.
func (s *ClickHouseServer) Start(t testing.TB) {
	t.Helper()
	cmd, err := startClickHouse(t, s.bin, s.dir, s.Addr)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "clickhouse-server.err.log"))
		t.Fatalf("clickhouse-server did not start: %v\n%s", err, log)
	}
	s.cmd = cmd
}

// Pause freezes the server (SIGSTOP): it keeps its connections and
// accepts new ones but answers nothing, as a hung server or a frozen host
// does. Resume lets it go on.
func (s *ClickHouseServer) Pause() { _ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume continues a server Pause froze.
func (s *ClickHouseServer) Resume() { _ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) }

// ClickHouseDB is a fresh database on the shared test server.
type ClickHouseDB struct {
	Addr     string
	Database string
	// DSN is a clickhouse:// DSN naming the database, as --clickhouse-dsn takes.
	DSN string
}

// Conn opens a connection to the database, closed when the test ends.
func (d ClickHouseDB) Conn(t testing.TB) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{d.Addr}, Auth: clickhouse.Auth{Database: d.Database}})
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// ClickHouse returns a new, empty database on the test binary's ClickHouse
// server, starting the server on first use. Call testenv.Main from TestMain
// so the server stops when the tests end.
func ClickHouse(t testing.TB) ClickHouseDB {
	t.Helper()
	addr := clickhouseAddr(t)
	db := "t_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	defer conn.Close()
	if err := conn.Exec(context.Background(), "CREATE DATABASE "+db); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
		if err == nil {
			_ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
			_ = c.Close()
		}
	})
	return ClickHouseDB{Addr: addr, Database: db, DSN: "clickhouse://" + addr + "/" + db}
}
