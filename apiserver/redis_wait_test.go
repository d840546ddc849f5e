package apiserver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/testenv"
)

// With --redis-wait-replicas 1 on a Redis with one replica, an add the
// API answers is on the replica already; with the replica gone, the add
// is answered 503 with Retry-After (never 200), and the client's retry,
// once a replica is back, answers the same domain: the add is idempotent.
func TestAddWaitsForReplica(t *testing.T) {
	master := testenv.RedisPrimary(t)
	replica := master.Replica(t)
	rdb := master.Client(t)
	srv, err := New(Config{RenewalWindow: 28 * 24 * time.Hour, Now: func() time.Time { return now },
		RedisWait: replicated.Config{Replicas: 1, Timeout: 200 * time.Millisecond}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e := &env{t: t, rdb: rdb, srv: srv, http: hs}
	const key = "key-of-ops-0123456789"
	e.claim("ops@example.com", key)
	ctx := context.Background()

	code, body := e.add(key, "one.example")
	if code != http.StatusOK {
		t.Fatalf("add with the replica up: got %d %v, want 200", code, body)
	}
	added, err := events.ReadEventsNamed(ctx, replica.Client(t), events.DomainAdded)
	if err != nil || len(added) != 1 || added[0].AggregateID != body["id"] {
		t.Errorf("domain.added on the replica right after the answer: got %v (%v), want the one of %v", added, err, body["id"])
	}

	replica.Stop()
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/v1.0/servers/add",
		strings.NewReader(`{"api_key":"`+key+`","domain":"two.example"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("add with no replica: got %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	replica = master.Replica(t)
	code, body = e.add(key, "two.example")
	if code != http.StatusOK || body["status"] != "success" {
		t.Fatalf("retried add with a replica again: got %d %v, want 200 success", code, body)
	}
	added, _ = events.ReadEventsNamed(ctx, replica.Client(t), events.DomainAdded)
	if len(added) != 2 {
		t.Errorf("domain.added events on the new replica: got %d, want 2 (one per domain, the retry added none)", len(added))
	}
}
