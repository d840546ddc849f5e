package apiserver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/managedcert"
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

// newWaitEnv is an apiserver with --redis-wait-replicas 1 (200 ms) on
// master, a RedisPrimary, with channel secrets and a client CA created at
// start (which waits for master's replica too).
func newWaitEnv(t *testing.T, master *testenv.RedisServer) *keyEnv {
	t.Helper()
	rdb := master.Client(t)
	e := &keyEnv{t: t, rdb: rdb, clock: &keyClock{t: now}}
	srv, err := New(Config{Now: e.clock.Now, RedisWait: replicated.Config{Replicas: 1, Timeout: 200 * time.Millisecond},
		Notify: NotifyConfig{SecretsPassphrase: channelPassphrase, DNSTargets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		CA:     clientcerts.Config{Passphrase: caTestPassphrase, Init: true}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.srv = [2]*Server{srv, srv}
	e.urls = [2]string{hs.URL, hs.URL}
	return e
}

// replicaView reads what a replica holds, through the stores' own reads.
type replicaView struct {
	accounts *accounts.Store
	channels *channels.Store
	ca       *clientca.Store
}

func newReplicaView(t *testing.T, replica *testenv.RedisServer) replicaView {
	t.Helper()
	rdb := replica.Client(t)
	acc, err := accounts.New(accounts.Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	chs, err := channels.New(channels.Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := clientca.New(clientca.Config{PublicURL: "http://unused"}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return replicaView{accounts: acc, channels: chs, ca: ca}
}

// want503 checks a command refused because no replica confirmed it.
func want503(t *testing.T, what string, r v1Response) {
	t.Helper()
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("%s with no replica: got %d %v (Retry-After %q), want 503 with Retry-After", what, r.code, r.body, r.header.Get("Retry-After"))
	}
}

// With --redis-wait-replicas 1, the commands of the API keys, channels
// and client CA stores are on the replica when they are answered; with
// the replica gone they are answered 503 with Retry-After, never as done;
// once a replica is back the client's retry succeeds (or, for a
// revocation the master had applied, answers that it is done) and the
// replica holds the outcome. Without the waiting, the commands with the
// replica gone would be answered as done. The creations are sent with an
// Idempotency-Key: their retries find what the master had created (one
// channel, one certificate, and a 409 naming the key whose secret went
// with the lost answer), where a retry without one creates a second.
func TestKeyChannelClientCertWaitForReplica(t *testing.T) {
	ctx := context.Background()
	master := testenv.RedisPrimary(t)
	replica := master.Replica(t)
	e := newWaitEnv(t, master)
	const email = "ops@example.com"
	tenant := events.TenantID(email)
	admin := e.bootstrapKey(email, "read", "write")

	// The replica up: every command is on it when answered.
	view := newReplicaView(t, replica)
	r := e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"ci","permissions":["read"]}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create key: got %d %v, want 201", r.code, r.body)
	}
	ciKey, ciID := r.body["key"].(string), r.body["id"].(string)
	if p, err := view.accounts.AuthenticateBearer(ctx, ciKey); err != nil || p.KeyID != ciID {
		t.Errorf("created key on the replica right after the answer: got %v %v, want key %s", p, err, ciID)
	}
	r = e.call(0, http.MethodPost, "/api/v1/channels", admin, `{"type":"webhook","url":"https://hooks.example.com/in","secret":"whsec-0123456789"}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create channel: got %d %v, want 201", r.code, r.body)
	}
	if _, err := view.channels.Get(ctx, tenant, r.body["id"].(string)); err != nil {
		t.Errorf("channel on the replica right after the answer: %v", err)
	}
	certID := e.createCert(0, admin, `{"common_name":"alice","cert_usage":"vpn"}`)
	if _, err := view.ca.Get(ctx, tenant, certID); err != nil {
		t.Errorf("certificate on the replica right after the answer: %v", err)
	}

	// The replica gone: nothing is answered as done.
	replica.Stop()
	idem := func(k string) http.Header { return http.Header{"Idempotency-Key": {k}} }
	const keyBody, channelBody, certBody = `{"label":"ci2","permissions":["read"]}`, `{"type":"email","to":["a@example.com"]}`,
		`{"common_name":"bob","cert_usage":"vpn"}`
	want503(t, "create key", e.callWith(0, http.MethodPost, "/api/v1/api-keys", admin, keyBody, idem("k-1")))
	want503(t, "revoke key", e.call(0, http.MethodDelete, "/api/v1/api-keys/"+ciID, admin, ""))
	if r := e.call(0, http.MethodGet, "/api/v1/api-keys", ciKey, ""); r.code != http.StatusUnauthorized {
		t.Errorf("key whose revocation was not confirmed: got %d, want 401 (marked revoked first, it stops working at once)", r.code)
	}
	want503(t, "create channel", e.callWith(0, http.MethodPost, "/api/v1/channels", admin, channelBody, idem("ch-1")))
	want503(t, "issue certificate", e.callWith(0, http.MethodPost, "/api/client-certs/create", admin, certBody, idem("c-1")))
	// A retry that finds the creation is no proof that a replica has it:
	// it writes too, and waits.
	want503(t, "retried channel creation", e.callWith(0, http.MethodPost, "/api/v1/channels", admin, channelBody, idem("ch-1")))
	want503(t, "retried certificate issue", e.callWith(0, http.MethodPost, "/api/client-certs/create", admin, certBody, idem("c-1")))
	want503(t, "revoke certificate", e.call(0, http.MethodPost, "/api/client-certs/"+certID+"/revoke", admin, `{"reason":"compromised"}`))

	// A replica again: the retries succeed, and the replica holds them.
	replica = master.Replica(t)
	view = newReplicaView(t, replica)
	if r := e.call(0, http.MethodDelete, "/api/v1/api-keys/"+ciID, admin, ""); r.code != http.StatusOK {
		t.Errorf("retried revocation: got %d %v, want 200", r.code, r.body)
	}
	if _, err := view.accounts.AuthenticateBearer(ctx, ciKey); !errors.Is(err, accounts.ErrUnknownKey) {
		t.Errorf("revoked key on the replica: got %v, want ErrUnknownKey", err)
	}
	// The key: its creation's first write (the reservation of its hash)
	// fell short, so the retry creates it, once. Retried again (its
	// answer lost), the key is there but its secret went with that
	// answer: a 409 names it to revoke, and keeps doing so once it is
	// revoked (a key id is never created twice).
	r = e.callWith(0, http.MethodPost, "/api/v1/api-keys", admin, keyBody, idem("k-1"))
	if r.code != http.StatusCreated {
		t.Fatalf("retried key creation: got %d %v, want 201", r.code, r.body)
	}
	keyID := r.body["id"].(string)
	if _, err := view.accounts.AuthenticateBearer(ctx, r.body["key"].(string)); err != nil {
		t.Errorf("key created on retry, on the replica: %v", err)
	}
	r = e.callWith(0, http.MethodPost, "/api/v1/api-keys", admin, keyBody, idem("k-1"))
	if r.code != http.StatusConflict || r.body["id"] != keyID || r.body["key"] != nil {
		t.Errorf("key creation retried once more: got %d %v, want 409 naming %s, without a secret", r.code, r.body, keyID)
	}
	keys, err := view.accounts.ListKeys(ctx, tenant)
	if n := countKeys(keys, "ci2"); err != nil || n != 1 {
		t.Errorf("keys labelled ci2 on the replica: got %d (%v), want 1", n, err)
	}
	if r := e.call(0, http.MethodDelete, "/api/v1/api-keys/"+keyID, admin, ""); r.code != http.StatusOK {
		t.Errorf("revoke the key named by the 409: got %d %v, want 200", r.code, r.body)
	}
	if r := e.callWith(0, http.MethodPost, "/api/v1/api-keys", admin, keyBody, idem("k-1")); r.code != http.StatusConflict || r.body["id"] != keyID {
		t.Errorf("key creation retried after the revocation: got %d %v, want 409 naming %s", r.code, r.body, keyID)
	}
	// The channel and the certificate: the retry answers what the master
	// created, marked as a replay; another request under the same key is
	// refused.
	r = e.callWith(0, http.MethodPost, "/api/v1/channels", admin, channelBody, idem("ch-1"))
	if r.code != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retried channel creation: got %d %v (Idempotent-Replayed %q), want 201 replayed", r.code, r.body, r.header.Get("Idempotent-Replayed"))
	}
	if _, err := view.channels.Get(ctx, tenant, r.body["id"].(string)); err != nil {
		t.Errorf("channel created on retry, on the replica: %v", err)
	}
	chs, err := view.channels.List(ctx, tenant)
	if err != nil || len(chs) != 2 {
		t.Errorf("channels on the replica: got %d (%v), want 2 (the first, and the 503's once)", len(chs), err)
	}
	if r := e.callWith(0, http.MethodPost, "/api/v1/channels", admin, `{"type":"email","to":["b@example.com"]}`, idem("ch-1")); r.code != http.StatusUnprocessableEntity {
		t.Errorf("another channel under a used Idempotency-Key: got %d %v, want 422", r.code, r.body)
	}
	r = e.callWith(0, http.MethodPost, "/api/client-certs/create", admin, certBody, idem("c-1"))
	if r.code != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retried certificate issue: got %d %v, want 201 replayed", r.code, r.body)
	}
	bob := r.body["identifier"].(string)
	if _, err := view.ca.Get(ctx, tenant, bob); err != nil {
		t.Errorf("certificate issued on retry, on the replica: %v", err)
	}
	certs, err := view.ca.List(ctx, tenant, clientca.Filter{})
	if err != nil || len(certs) != 2 {
		t.Errorf("certificates on the replica: got %d (%v), want 2 (alice, and bob once)", len(certs), err)
	}
	// The master applied the revocation before the wait fell short: the
	// retry answers that it is done.
	r = e.call(0, http.MethodPost, "/api/client-certs/"+certID+"/revoke", admin, `{"reason":"compromised"}`)
	if r.code != http.StatusOK && r.code != http.StatusConflict {
		t.Errorf("retried certificate revocation: got %d %v, want 200 or 409 already revoked", r.code, r.body)
	}
	if c, err := view.ca.Get(ctx, tenant, certID); err != nil || !c.Revoked {
		t.Errorf("revoked certificate on the replica: got revoked %v (%v), want revoked", c.Revoked, err)
	}
}

// countKeys counts the keys labelled label.
func countKeys(keys []accounts.APIKey, label string) int {
	n := 0
	for _, k := range keys {
		if k.Label == label {
			n++
		}
	}
	return n
}

// With --redis-wait-replicas 1, a managed certificate's request and
// deletion and a DNS account's save are on the replica when answered, and
// answered 503 (never 202 or 201) with the replica gone; the request's
// retry once a replica is back answers 409 (the master had applied it)
// or 202, and the replica holds it.
func TestManagedWaitsForReplica(t *testing.T) {
	ctx := context.Background()
	master := testenv.RedisPrimary(t)
	replica := master.Replica(t)
	e := newWaitEnv(t, master)
	const email = "ops@example.com"
	tenant := events.TenantID(email)
	key := e.bootstrapKey(email, "read", "write")
	onReplica := func(r *testenv.RedisServer) *managedcert.Store {
		st, err := managedcert.New(managedcert.Config{}, r.Client(t), testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	view := onReplica(replica)
	if r := e.call(0, http.MethodPost, "/api/v1/dns-accounts", key, labAccount); r.code != http.StatusCreated {
		t.Fatalf("dns account: got %d %v, want 201", r.code, r.body)
	}
	if _, err := view.GetDNSAccount(ctx, tenant, "rfc2136", "lab"); err != nil {
		t.Errorf("dns account on the replica right after the answer: %v", err)
	}
	const shop = `{"domain":"shop.example.com","dns_provider":"rfc2136","account_id":"lab"}`
	if r := e.call(0, http.MethodPost, "/api/certificates/create", key, shop); r.code != http.StatusAccepted {
		t.Fatalf("request: got %d %v, want 202", r.code, r.body)
	}
	if _, err := view.Get(ctx, tenant, "shop.example.com"); err != nil {
		t.Errorf("certificate request on the replica right after the answer: %v", err)
	}

	replica.Stop()
	const blog = `{"domain":"blog.example.com","dns_provider":"rfc2136","account_id":"lab"}`
	want503(t, "request", e.call(0, http.MethodPost, "/api/certificates/create", key, blog))
	want503(t, "dns account", e.call(0, http.MethodPost, "/api/v1/dns-accounts", key, strings.Replace(labAccount, `"lab"`, `"lab2"`, 1)))
	want503(t, "delete", e.call(0, http.MethodDelete, "/api/certificates/shop.example.com", key, ""))

	replica = master.Replica(t)
	view = onReplica(replica)
	if r := e.call(0, http.MethodPost, "/api/certificates/create", key, blog); r.code != http.StatusAccepted && r.code != http.StatusConflict {
		t.Errorf("retried request: got %d %v, want 202, or 409 for the request the master had applied", r.code, r.body)
	}
	if _, err := view.Get(ctx, tenant, "blog.example.com"); err != nil {
		t.Errorf("retried request on the replica: %v", err)
	}
}
