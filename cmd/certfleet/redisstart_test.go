package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// syncBuffer is a bytes.Buffer a role's logger writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// get answers the status and body of GET u, 0 when nothing answers.
func get(u string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRoleWaitsForRedis starts an agent while nothing listens on its
// Redis port: it stays up, its metrics listener answers /healthz 200 and
// /readyz 503 naming Redis as not connected yet, and it logs that it
// waits; once Redis starts on that port it connects by itself, turns
// ready and joins its consumer group; cancelling it then stops it as
// usual.
// startAndAwaitReady starts rs and waits, at most within, for the role
// serving base to answer /readyz 200; logs is its log, shown on failure.
func startAndAwaitReady(t *testing.T, rs *testenv.RedisServer, base string, within time.Duration, logs fmt.Stringer) {
	t.Helper()
	rs.Start(t)
	back := time.Now()
	for {
		code, body := get(base + "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Since(back) > within {
			t.Fatalf("/readyz %d %s %s after redis started:\n%s", code, body, within, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready %s after redis started", time.Since(back).Round(time.Millisecond))
}

func TestRoleWaitsForRedis(t *testing.T) {
	t.Run("server", func(t *testing.T) {
		rs := testenv.Redis(t)
		roleWaitsForRedis(t, rs, "--redis-url", rs.URL)
	})
	// A cluster's node answers PING before the cluster serves its slots:
	// the role waits for that too, or its first command fails CLUSTERDOWN.
	t.Run("cluster", func(t *testing.T) {
		rs := testenv.RedisCluster(t)
		roleWaitsForRedis(t, rs, "--redis-url", "redis://"+rs.Addr, "--redis-cluster")
	})
}

// roleWaitsForRedis is TestRoleWaitsForRedis on rs, given to the agent
// by redisFlags.
func roleWaitsForRedis(t *testing.T, rs *testenv.RedisServer, redisFlags ...string) {
	rs.Stop()
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, append([]string{"agent", "--metrics-listen", metrics, "--region", "wait-test",
			"--registration-lookups=false", "--shards", "2", "--log-level", "info"}, redisFlags...), io.Discard, &logs)
	}()
	base := "http://" + metrics
	start := time.Now()
	for {
		if code, _ := get(base + "/healthz"); code == http.StatusOK {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("agent exited with %d while redis was away, want it to wait:\n%s", code, logs.String())
		default:
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("no /healthz 200 within 10s while redis was away:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := get(base + "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "redis: ping: not connected yet") ||
		!strings.Contains(body, "start: the role is still starting") {
		t.Errorf("/readyz while waiting for redis: got %d %s, want 503 naming redis as not connected yet and the role as starting", code, body)
	}
	if code, _ := get(base + "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics while waiting for redis: got %d, want 200", code)
	}
	for time.Since(start) < 2*time.Second { // a few retries, one warning
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "redis not answering at start"); n != 1 {
		t.Errorf("got %d warnings that redis does not answer, want 1:\n%s", n, logs.String())
	}
	// go-redis's pool logs each failed dial; through zap (internal/redislog)
	// that is one entry of logger redis, not one a retry.
	if n := strings.Count(logs.String(), `"line":"connection pool: failed to dial`); n != 1 {
		t.Errorf("got %d entries of go-redis's failed dials in 2 s, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"addr":"`+rs.Addr+`"`) {
		t.Errorf("the warning does not name the address %s:\n%s", rs.Addr, logs.String())
	}

	startAndAwaitReady(t, rs, base, 15*time.Second, &logs)
	rdb := rs.Client(t)
	back := time.Now()
	for {
		groups, err := rdb.XInfoGroups(ctx, events.JobStream(0)).Result()
		if err == nil && len(groups) == 1 && groups[0].Name == agent.Group("wait-test") {
			break
		}
		if time.Since(back) > 15*time.Second {
			t.Fatalf("groups of %s: %v (%v), want the agent's", events.JobStream(0), groups, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("agent: exit %d after cancel, want 0:\n%s", code, logs.String())
	}
}

// TestRoleWaitStops: a role stopped while it waits for Redis exits at
// once with status 0, as a running role does: an agent, and the API
// server, whose --listen then serves already.
func TestRoleWaitStops(t *testing.T) {
	for _, role := range []string{"agent", "apiserver"} {
		t.Run(role, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			args := []string{role, "--redis-url", "redis://" + addr + "/0", "--log-level", "info"}
			if role == "agent" {
				args = append(args, "--registration-lookups=false", "--metrics-listen", "")
			} else {
				args = append(args, "--listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
			}
			ctx, cancel := context.WithCancel(context.Background())
			var logs syncBuffer
			done := make(chan int, 1)
			go func() { done <- runMain(ctx, args, io.Discard, &logs) }()
			for !strings.Contains(logs.String(), "redis not answering at start") {
				select {
				case code := <-done:
					t.Fatalf("%s exited with %d while redis was away, want it to wait:\n%s", role, code, logs.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			cancel()
			stopped := time.Now()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("got exit %d, want 0:\n%s", code, logs.String())
				}
				t.Logf("stopped %s after cancel", time.Since(stopped).Round(time.Millisecond))
			case <-time.After(5 * time.Second):
				t.Fatalf("%s still waiting for redis 5s after cancel:\n%s", role, logs.String())
			}
		})
	}
}

// TestRoleRedisMisconfigured: what no wait fixes (a URL that does not
// parse, a missing or wrong password, a database the server does not
// have) still fails the start at once, saying what is wrong.
func TestRoleRedisMisconfigured(t *testing.T) {
	rs := testenv.Redis(t)
	if err := rs.Client(t).ConfigSet(context.Background(), "requirepass", "right").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, want string
	}{
		{"bad url", "http://" + rs.Addr, "certfleet agent: redis url: "},
		{"bad port", "redis://127.0.0.1:notaport/0", "certfleet agent: redis url: "},
		{"no password", rs.URL, "certfleet agent: redis " + rs.Addr + ": NOAUTH"},
		{"wrong password", "redis://:wrong@" + rs.Addr + "/0", "certfleet agent: redis " + rs.Addr + ": WRONGPASS"},
		{"no such database", "redis://:right@" + rs.Addr + "/99", "certfleet agent: redis " + rs.Addr + ": ERR DB index is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			start := time.Now()
			// No metrics listener: the default port may be another agent's.
			code := runMain(t.Context(), []string{"agent", "--redis-url", tc.url, "--registration-lookups=false",
				"--metrics-listen", "", "--log-level", "warn"}, io.Discard, &out)
			took := time.Since(start)
			if code != 1 || !strings.Contains(out.String(), tc.want) {
				t.Errorf("got exit %d, output %q; want exit 1 and %q", code, out.String(), tc.want)
			}
			if took > 2*time.Second {
				t.Errorf("took %s to fail, want at once", took)
			}
			if strings.Contains(out.String(), "waiting for it") {
				t.Errorf("waited for a misconfigured redis:\n%s", out.String())
			}
		})
	}
}

// TestAPIWaitsForRedis starts the API server, and all, while nothing
// listens on their Redis port: --listen answers at once, /healthz 200,
// /readyz 503 naming Redis as not connected yet and the role as
// starting, the API's routes 503 with Retry-After, so that an
// orchestrator's liveness probe finds the process alive; once Redis
// starts on that port the same listener (never closed and bound again)
// turns ready and serves the API: an account claimed through it adds a
// domain.
func TestAPIWaitsForRedis(t *testing.T) {
	for _, role := range []string{"apiserver", "all"} {
		t.Run(role, func(t *testing.T) {
			rs := testenv.Redis(t)
			rs.Stop()
			ch := testenv.ClickHouse(t)
			args := []string{role, "--redis-url", rs.URL, "--clickhouse-dsn", ch.DSN, "--log-level", "info"}
			if role == "all" {
				args = append(args, "--region", "wait-test", "--registration-lookups=false", "--shards", "2")
			}
			apiWaitsForRedis(t, rs, args)
		})
	}
}

// apiWaitsForRedis is TestAPIWaitsForRedis of the role of args on rs.
func apiWaitsForRedis(t *testing.T, rs *testenv.RedisServer, args []string) {
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan int, 1)
	launched := time.Now()
	go func() { done <- runMain(ctx, append(args, "--listen", listen), io.Discard, &logs) }()
	base := "http://" + listen
	for {
		if code, _ := get(base + "/healthz"); code == http.StatusOK {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("%s exited with %d while redis was away, want it to wait:\n%s", args[0], code, logs.String())
		default:
		}
		if time.Since(launched) > 10*time.Second {
			t.Fatalf("no /healthz 200 on --listen within 10s while redis was away:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("/healthz 200 %s after the start with redis away", time.Since(launched).Round(time.Millisecond))
	code, body := get(base + "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "redis: ping: not connected yet") ||
		!strings.Contains(body, "start: the role is still starting") {
		t.Errorf("/readyz while waiting for redis: got %d %s, want 503 naming redis as not connected yet and the role as starting", code, body)
	}
	resp, err := http.Get(base + "/api/v1.0/access/claim/early@example.com")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("an API route while waiting for redis: got %d (Retry-After %q), want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	startAndAwaitReady(t, rs, base, 30*time.Second, &logs)
	key := claim(t, base+"/api/v1.0", "early@example.com")
	var added struct{ Status, ID string }
	postJSON(t, base+"/api/v1.0/servers/add", map[string]string{"api_key": key, "domain": "early.example.com"}, http.StatusOK, &added)
	if added.Status != "success" || added.ID == "" {
		t.Errorf("add a domain with the claimed key: got %+v, want status success and an id", added)
	}
	if n := strings.Count(logs.String(), `"msg":"listening","role":"`+args[0]+`","addr":"`+listen+`"`); n != 1 {
		t.Errorf("got %d listening lines for %s, want 1: the listener is bound once:\n%s", n, listen, logs.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("%s: exit %d after cancel, want 0:\n%s", args[0], code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s still running 20s after cancel:\n%s", args[0], logs.String())
	}
}
