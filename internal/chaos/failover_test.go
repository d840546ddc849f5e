package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestRedisMasterKilled runs the fleet on a Redis Cluster of three
// masters and three replicas with --redis-wait-replicas 1, kills
// (SIGKILL) the master of the results stream while agents publish scans
// and a client adds domains, lets its replica take over, and brings the
// dead node back as the new master's replica. Then nothing acknowledged is
// lost: every domain add the API answered is there, every job the agents
// acknowledged has its result, and ClickHouse holds every scan and event
// once. The roles follow the failover without a restart (the cluster
// client learns the new layout; the consumer groups were replicated with
// the streams). A second client creates notification channels with an
// Idempotency-Key, retrying each creation (503s, lost answers) with its
// key until answered: every channel answered is there, and no creation
// made two (a retry without the key would make a second channel of a
// creation the master applied before its 503).
//
// Without the wait, the same kill may lose what the master acknowledged
// and had not yet sent to its replica; internal/replicated's
// TestFailoverKeepsWaitedWrites shows such a write lost, deterministically.
//
// It takes about 47 s here, most of it starting the fleet and letting
// ClickHouse catch up: only the long form (go tool task chaos) runs it;
// the default suite covers the failover in internal/replicated (15 s).
func TestRedisMasterKilled(t *testing.T) {
	s := suite(t)
	if !s.full {
		t.Skip("Redis failover on real processes: long form only (go tool task chaos, CERTFLEET_CHAOS=full)")
	}
	c := testenv.RedisClusterWithReplicas(t, 3)
	f := newFleetOn(t, s, 0, c, "--redis-wait-replicas", "1", "--redis-wait-timeout", "1s")
	ctx := context.Background()
	f.load()

	// A client adds domains all along, to tenants spread over the
	// partitions (and so the masters); an add counts as acknowledged only
	// when the API answered success.
	tenants := make([]tenant, 12)
	for i := range tenants {
		tenants[i] = f.newTenant()
	}
	var mu sync.Mutex
	acked := map[string]string{} // domain id -> host
	var refused int
	stop := make(chan struct{})
	adding := make(chan struct{})
	go func() {
		defer close(adding)
		client := http.Client{Timeout: 10 * time.Second}
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			tn := tenants[n%len(tenants)]
			host := fmt.Sprintf("fo-%d.%s", n, strings.TrimSuffix(lab.DefaultZone, "."))
			b, _ := json.Marshal(map[string]string{"api_key": tn.key, "domain": host})
			resp, err := client.Post(f.api+"/api/v1.0/servers/add", "application/json", bytes.NewReader(b))
			if err != nil {
				mu.Lock()
				refused++
				mu.Unlock()
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			var r struct {
				Status string `json:"status"`
				ID     string `json:"id"`
			}
			mu.Lock()
			if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &r) == nil && r.Status == "success" && r.ID != "" {
				acked[r.ID] = host
			} else {
				refused++
			}
			mu.Unlock()
		}
	}()
	channelsDone := createChannels(t, f, c, stop)
	time.Sleep(s.load)

	victim, took := c.KillMaster(t, events.StreamResults)
	promoted := c.MasterOf(t, events.StreamResults)
	t.Logf("killed master %s of the results stream: %s promoted after %s", victim.Addr, promoted.Addr, took.Round(time.Millisecond))
	// The promoted master has no replica: writes to its slots are not
	// acknowledged (retried) until the dead node is back as its replica.
	time.Sleep(2 * time.Second)
	start := time.Now()
	c.Rejoin(t, victim)
	t.Logf("dead master back as a replica after %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(s.load)
	close(stop)
	<-adding
	channelsDone()
	f.alive()
	if ready := f.waitReady(time.Minute); ready > 0 {
		t.Logf("roles ready %s after the load stopped", ready.Round(time.Millisecond))
	}

	// Every acknowledged add is there, on whichever master now holds it.
	added, err := events.ReadEventsNamed(ctx, f.rdb, events.DomainAdded)
	if err != nil {
		t.Fatalf("read domain events: %v", err)
	}
	have := map[string]string{} // domain id -> tenant
	for _, e := range added {
		have[e.AggregateID] = e.TenantID
	}
	mu.Lock()
	onVictim := 0
	for id, host := range acked {
		tenantID, ok := have[id]
		if !ok {
			t.Errorf("domain %s (%s) added with 200 success, lost in the failover", id, host)
			continue
		}
		if c.MasterOf(t, events.EventStream(tenantID)) == promoted {
			onVictim++
		}
	}
	t.Logf("%d adds acknowledged (%d on the killed master's slots), %d refused or failed and retried", len(acked), onVictim, refused)
	if len(acked) == 0 {
		t.Error("no add was acknowledged")
	}
	mu.Unlock()
	// Every job acknowledged has its result; ClickHouse has it all once.
	f.landed("after the failover")
	// The consumer groups of the results stream came over with it.
	groups, err := f.rdb.XInfoGroups(ctx, events.StreamResults).Result()
	if err != nil || len(groups) == 0 {
		t.Errorf("consumer groups of %s on the promoted master: %v (%v), want the sink's and the projector's", events.StreamResults, groups, err)
	}
	waited := f.metric("certfleet_redis_wait_total", map[string]string{"outcome": "ok"})
	short := f.metric("certfleet_redis_wait_total", map[string]string{"outcome": "short"})
	failed := f.metric("certfleet_redis_wait_total", map[string]string{"outcome": "error"})
	t.Logf("writes waited on: %.0f confirmed by a replica, %.0f not in time, %.0f failed (both retried)", waited, short, failed)
	if waited == 0 {
		t.Error("no write waited for a replica: --redis-wait-replicas did not reach the roles")
	}
	f.alive()
}

// createChannels creates email channels for three accounts, two of them
// on the master of the results stream (the one killed), until stop
// closes, each with its Idempotency-Key and retried with it until
// answered 201; the function it returns waits for the creator and checks
// every account's channels: each answered one is there, and there are no
// more than creations sent (one per key).
func createChannels(t *testing.T, f *fleet, c *testenv.Cluster, stop <-chan struct{}) func() {
	t.Helper()
	type account struct {
		bearer string
		sent   int
		acked  map[string]bool // channel id
	}
	var accounts []*account
	victim := c.MasterOf(t, events.StreamResults)
	for i, on, off := 0, 0, 0; on < 2 || off < 1; i++ {
		email := fmt.Sprintf("channels-%d@example.com", i)
		if c.MasterOf(t, events.EventStream(events.TenantID(email))) == victim {
			if on++; on > 2 {
				continue
			}
		} else if off++; off > 1 {
			continue
		}
		accounts = append(accounts, &account{bearer: f.bearer(email), acked: map[string]bool{}})
	}
	client := http.Client{Timeout: 10 * time.Second}
	retries := 0
	do := func(a *account, method, body, key string) (int, []byte) {
		req, _ := http.NewRequest(method, f.api+"/api/v1/channels", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.bearer)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The quota is 50 channels an account.
		for n := 0; n < 45*len(accounts); n++ {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			a := accounts[n%len(accounts)]
			a.sent++
			key := fmt.Sprintf("chaos-channel-%d", n)
			body := fmt.Sprintf(`{"type":"email","name":"c%d","to":["c%d@example.com"]}`, n, n)
			// Retried until answered, past stop too: a creation answered
			// 503 may have been applied.
			for deadline := time.Now().Add(time.Minute); ; retries++ {
				code, b := do(a, http.MethodPost, body, key)
				var ch struct{ ID string }
				if code == http.StatusCreated && json.Unmarshal(b, &ch) == nil && ch.ID != "" {
					a.acked[ch.ID] = true
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("channel creation %s: not answered 201 in a minute, last %d %s", key, code, b)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	return func() {
		t.Helper()
		<-done
		created := 0
		for i, a := range accounts {
			code, b := do(a, http.MethodGet, "", "")
			var list struct{ Data []struct{ ID string } }
			if code != http.StatusOK || json.Unmarshal(b, &list) != nil {
				t.Fatalf("list channels of account %d: %d %s", i, code, b)
			}
			have := map[string]bool{}
			for _, ch := range list.Data {
				have[ch.ID] = true
			}
			for id := range a.acked {
				if !have[id] {
					t.Errorf("channel %s of account %d answered 201, lost in the failover", id, i)
				}
			}
			if len(list.Data) > a.sent {
				t.Errorf("account %d has %d channels for %d creations: a retry created again", i, len(list.Data), a.sent)
			}
			created += len(a.acked)
		}
		t.Logf("%d channels created, %d retries (503 or no answer)", created, retries)
		if created == 0 {
			t.Error("no channel was created")
		}
	}
}
