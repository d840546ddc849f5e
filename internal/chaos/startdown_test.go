package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestClickHouseDownAtStart restarts the apiserver and the coordinator
// while ClickHouse is down: they start and serve what needs only Redis (a
// domain added then is scheduled, scanned and in its view), answer
// /healthz 200 and /readyz 503 instead of exiting, and once ClickHouse is
// back they connect by themselves and store everything accepted once.
func TestClickHouseDownAtStart(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	tn := f.newTenant()
	key := f.bearer(tn.email)
	before := f.probe(time.Minute)
	f.load()
	time.Sleep(s.load)

	f.chServer.Stop(t)
	for _, role := range []string{"apiserver", "coordinator"} {
		p := f.procs[role]
		p.stop()
		p.run(t, f.bin)
	}
	started := time.Now()
	// Up and alive, not ready: the same as a running role in an outage.
	for _, role := range []string{"apiserver", "coordinator"} {
		healthz := strings.TrimSuffix(f.readyURL(role), "/readyz") + "/healthz"
		for status(healthz) != http.StatusOK {
			if !f.procs[role].running() || time.Since(started) > 30*time.Second {
				t.Fatalf("%s restarted with clickhouse down: running %v, /healthz not 200 after %s\n%s", role,
					f.procs[role].running(), time.Since(started).Round(time.Millisecond), tail(f.procs[role].log, 5))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code := status(f.readyURL(role)); code != http.StatusServiceUnavailable {
			t.Errorf("%s with clickhouse down: /readyz %d, want 503", role, code)
		}
	}
	t.Logf("apiserver and coordinator restarted with clickhouse down: alive after %s", time.Since(started).Round(time.Millisecond))
	// What needs only Redis works: a domain added now is scanned and its
	// view shows the certificate.
	added := time.Now()
	id := f.add(tn, f.lab.Targets()[0].Domain)
	var view struct {
		SSLDaysRemaining *int `json:"ssl_days_remaining"`
	}
	for {
		code, _, body := f.send(key, "GET", "/api/v1/domains/"+id, nil)
		if code == http.StatusOK && json.Unmarshal([]byte(body), &view) == nil && view.SSLDaysRemaining != nil {
			break
		}
		if time.Since(added) > time.Minute {
			t.Fatalf("domain added with clickhouse down: no scan in its view after 1m (last %d %s)", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	scanned := time.Since(added)
	if code, retry, body := f.send(key, "GET", "/api/v1/domains/"+id+"/history", nil); code != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("history with clickhouse down since start: %d (Retry-After %q) %s, want 503 with Retry-After", code, retry, body)
	}

	f.chServer.Start(t)
	back := time.Now()
	ready := f.waitReady(2 * time.Minute)
	for {
		var n uint64
		err := f.conn.QueryRow(ctx, "SELECT count() FROM scan_results WHERE domain_id = ?", id).Scan(&n)
		if err == nil && n > 0 {
			break
		}
		if time.Since(back) > time.Minute {
			t.Fatalf("domain scanned while clickhouse was down: not stored 1m after it came back (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stored := time.Since(back)
	f.alive()
	t.Logf("clickhouse down at start: a domain added then scanned into its view in %s; after clickhouse came back roles ready in %s, its scan stored %s after (a new domain took %s before the fault)",
		scanned.Round(time.Millisecond), ready.Round(time.Millisecond), stored.Round(time.Millisecond), before.Round(time.Millisecond))
	time.Sleep(s.load)
	f.landed("after clickhouse down at start")
}

// TestRoleStartsBeforeRedis starts an agent process, and an API server,
// while nothing listens on their Redis port, as after a node reboot
// where the role's pod comes up before Redis's: each stays up instead of
// exiting into a crash loop, its HTTP listener (the agent's metrics
// listener, the API server's --listen) answers /healthz 200 and /readyz
// 503 naming Redis, and it logs one warning, go-redis's failed dials one
// zap entry instead of a raw stderr line each; once Redis starts on that
// port it connects by itself and turns ready: the agent joins its
// consumer group, the API server serves its API on the same port.
// SIGTERM while a role waits stops it at once with status 0, as it stops
// a running role.
func TestRoleStartsBeforeRedis(t *testing.T) {
	suite(t)
	bin := binary(t)
	dir := t.TempDir()
	// startOn runs name with args (a role on a Redis that is not running)
	// and waits until base, its HTTP listener, answers /healthz.
	startOn := func(t *testing.T, name, base string, args []string) *proc {
		t.Helper()
		p := &proc{name: name, log: filepath.Join(dir, name+".log"), args: append(args, "--name", name, "--log-level", "info")}
		p.run(t, bin)
		t.Cleanup(p.stop)
		started := time.Now()
		for status(base+"/healthz") != http.StatusOK {
			if !p.running() || time.Since(started) > 30*time.Second {
				t.Fatalf("%s started with redis away: running %v, /healthz not 200 after %s\n%s", name,
					p.running(), time.Since(started).Round(time.Millisecond), tail(p.log, 10))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s alive %s after its start with redis away", name, time.Since(started).Round(time.Millisecond))
		return p
	}
	// agentOn runs an agent of region on rs with a metrics listener; it
	// returns the process and the listener's base URL.
	agentOn := func(t *testing.T, rs *testenv.RedisServer, name string) (*proc, string) {
		t.Helper()
		base := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
		return startOn(t, name, base, []string{"agent", "--region", region, "--redis-url", rs.URL,
			"--metrics-listen", strings.TrimPrefix(base, "http://"), "--shards", strconv.Itoa(shards),
			"--registration-lookups=false"}), base
	}
	// apiOn runs an API server on rs and ch; it returns the process and
	// the API's base URL.
	apiOn := func(t *testing.T, rs *testenv.RedisServer, ch testenv.ClickHouseDB, name string) (*proc, string) {
		t.Helper()
		base := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
		return startOn(t, name, base, []string{"apiserver", "--redis-url", rs.URL, "--clickhouse-dsn", ch.DSN,
			"--listen", strings.TrimPrefix(base, "http://")}), base
	}
	// waiting checks what p, waiting 3 s for Redis, answers on base and
	// logs.
	waiting := func(t *testing.T, p *proc, base string) {
		t.Helper()
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "redis: ping: not connected yet") {
			t.Errorf("/readyz while redis is away: got %d %s, want 503 naming redis as not connected yet", resp.StatusCode, body)
		}
		// Long enough for several pings and back-offs: still up, one
		// warning, one entry of go-redis's failed dials and none of its
		// raw lines.
		time.Sleep(3 * time.Second)
		if !p.running() {
			t.Fatalf("%s exited while redis was away: %v\n%s", p.name, p.err, tail(p.log, 10))
		}
		b, _ := os.ReadFile(p.log)
		if n := strings.Count(string(b), "redis not answering at start"); n != 1 {
			t.Errorf("got %d warnings that redis does not answer in 3 s, want 1\n%s", n, tail(p.log, 10))
		}
		if n := strings.Count(string(b), `"line":"connection pool: failed to dial`); n != 1 {
			t.Errorf("got %d zap entries of go-redis's failed dials in 3 s, want 1\n%s", n, tail(p.log, 10))
		}
		if n := strings.Count(string(b), "pool.go:"); n != 0 {
			t.Errorf("got %d raw go-redis lines, want them through zap\n%s", n, tail(p.log, 10))
		}
	}
	// ready waits until base's /readyz answers 200 after Redis was
	// launched at back.
	ready := func(t *testing.T, p *proc, base string, back time.Time) time.Duration {
		t.Helper()
		for status(base+"/readyz") != http.StatusOK {
			if !p.running() || time.Since(back) > 30*time.Second {
				t.Fatalf("%s not ready 30 s after redis started (running %v)\n%s", p.name, p.running(), tail(p.log, 10))
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(back)
	}

	t.Run("redis comes", func(t *testing.T) {
		rs := testenv.Redis(t)
		rs.Stop()
		p, base := agentOn(t, rs, "agent-early")
		waiting(t, p, base)
		back := time.Now() // from the launch: Start returns once Redis answers
		rs.Start(t)
		took := ready(t, p, base, back)
		rdb := rs.Client(t)
		for {
			groups, err := rdb.XInfoGroups(context.Background(), events.JobStream(0)).Result()
			if err == nil && len(groups) == 1 && groups[0].Name == agent.Group(region) {
				break
			}
			if time.Since(back) > 30*time.Second {
				t.Fatalf("groups of %s 30 s after redis started: %v (%v), want the agent's\n%s", events.JobStream(0), groups, err, tail(p.log, 10))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("agent ready %s after redis was launched, in its consumer group %s after", took.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
		p.stop()
		if p.err != nil {
			t.Errorf("agent stopped with %v, want status 0\n%s", p.err, tail(p.log, 10))
		}
	})

	t.Run("redis comes to the api server", func(t *testing.T) {
		rs := testenv.Redis(t)
		rs.Stop()
		p, base := apiOn(t, rs, testenv.ClickHouse(t), "apiserver-early")
		claim := base + "/api/v1.0/access/claim/early@example.com"
		if code := status(claim); code != http.StatusServiceUnavailable {
			t.Errorf("an API route while redis is away: %d, want 503", code)
		}
		waiting(t, p, base)
		back := time.Now()
		rs.Start(t)
		took := ready(t, p, base, back)
		if code := status(claim); code != http.StatusOK {
			t.Errorf("claim an account once ready: %d, want 200\n%s", code, tail(p.log, 10))
		}
		t.Logf("api server ready %s after redis was launched", took.Round(time.Millisecond))
		b, _ := os.ReadFile(p.log)
		if n := strings.Count(string(b), `"msg":"listening"`); n != 1 {
			t.Errorf("got %d listening lines, want 1: --listen is bound once\n%s", n, tail(p.log, 10))
		}
		p.stop()
		if p.err != nil {
			t.Errorf("api server stopped with %v, want status 0\n%s", p.err, tail(p.log, 10))
		}
	})

	t.Run("sigterm while waiting", func(t *testing.T) {
		rs := testenv.Redis(t)
		rs.Stop()
		a, _ := agentOn(t, rs, "agent-stopped")
		api, _ := apiOn(t, rs, testenv.ClickHouseDB{DSN: "clickhouse://127.0.0.1:1/unused"}, "apiserver-stopped")
		for _, p := range []*proc{a, api} {
			for {
				b, _ := os.ReadFile(p.log)
				if strings.Contains(string(b), "redis not answering at start") {
					break
				}
				if !p.running() {
					t.Fatalf("%s exited while redis was away: %v\n%s", p.name, p.err, tail(p.log, 10))
				}
				time.Sleep(50 * time.Millisecond)
			}
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			start := time.Now()
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s still running 5 s after SIGTERM while waiting for redis\n%s", p.name, tail(p.log, 10))
			}
			t.Logf("%s waiting for redis exited %s after SIGTERM: %v", p.name, time.Since(start).Round(time.Millisecond), p.err)
			if p.err != nil {
				t.Errorf("%s stopped by SIGTERM while waiting for redis: %v, want status 0\n%s", p.name, p.err, tail(p.log, 10))
			}
		}
	})
}
