package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// keyClock is a clock the tests move; both replicas read it.
type keyClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *keyClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *keyClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// keyEnv is two apiserver replicas on one Redis.
type keyEnv struct {
	t     *testing.T
	rdb   *redis.Client
	clock *keyClock
	srv   [2]*Server
	urls  [2]string
}

func newKeyEnv(t *testing.T, cfg Config) *keyEnv {
	t.Helper()
	redisSrv := testenv.Redis(t)
	e := &keyEnv{t: t, rdb: redisSrv.Client(t), clock: &keyClock{t: now}}
	cfg.Now = e.clock.Now
	for i := range e.srv {
		srv, err := New(cfg, redisSrv.Client(t), testenv.Logger(t))
		if err != nil {
			t.Fatalf("new server: %v", err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		e.srv[i], e.urls[i] = srv, hs.URL
	}
	return e
}

// bootstrapKey creates the account of email and a key for it as the CLI
// does, and returns the key.
func (e *keyEnv) bootstrapKey(email string, scopes ...string) string {
	e.t.Helper()
	ctx := context.Background()
	st := e.srv[0].accounts
	tenant, err := st.EnsureAccount(ctx, email)
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := st.CreateKey(ctx, tenant, "bootstrap", scopes, nil, accounts.SourceCLI)
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Key
}

// v1Response is an answer of the API.
type v1Response struct {
	code   int
	header http.Header
	body   map[string]any
}

// call sends a request to replica i with the bearer key (none when "")
// and decodes the JSON answer.
func (e *keyEnv) call(i int, method, path, key, body string) v1Response {
	e.t.Helper()
	return e.callWith(i, method, path, key, body, nil)
}

// callWith is call with more request headers.
func (e *keyEnv) callWith(i int, method, path, key, body string, header http.Header) v1Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.urls[i]+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := v1Response{code: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		e.t.Fatalf("%s %s: got non-JSON body %q (HTTP %d)", method, path, raw, resp.StatusCode)
	}
	return out
}

// wantV1Error checks an error answer: the status and exactly {"error": msg}
// where msg contains wantMsg.
func wantV1Error(t *testing.T, r v1Response, wantCode int, wantMsg string) {
	t.Helper()
	if r.code != wantCode {
		t.Errorf("status: got %d %v, want %d", r.code, r.body, wantCode)
	}
	msg, _ := r.body["error"].(string)
	if len(r.body) != 1 || !strings.Contains(msg, wantMsg) {
		t.Errorf("body: got %v, want only an error mentioning %q", r.body, wantMsg)
	}
}

func TestAPIKeysLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newKeyEnv(t, Config{})
	admin := e.bootstrapKey("ops@example.com", "read", "write")

	r := e.call(0, http.MethodPost, "/api/v1/api-keys", admin,
		`{"label":"ci","permissions":["write","read"],"expires_at":"2031-01-02T03:04:05+02:00"}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create: got %d %v, want 201", r.code, r.body)
	}
	key, _ := r.body["key"].(string)
	id, _ := r.body["id"].(string)
	if !strings.HasPrefix(key, "ssa_") || len(key) != 36 || strings.Trim(key[4:], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
		t.Errorf("key: got %q, want ssa_ and 32 base62 characters", key)
	}
	wantCreated := map[string]any{"id": id, "label": "ci", "key": key, "permissions": []any{"read", "write"},
		"expires_at": "2031-01-02T01:04:05Z", "last_used_at": nil, "created_at": now.Format(time.RFC3339),
		"kind": "api", "approved": true}
	if !reflect.DeepEqual(r.body, wantCreated) {
		t.Errorf("create:\n got %v\nwant %v", r.body, wantCreated)
	}

	// The other replica lists it without the secret, and accepts it.
	r = e.call(1, http.MethodGet, "/api/v1/api-keys", key, "")
	if r.code != http.StatusOK {
		t.Fatalf("list: got %d %v, want 200", r.code, r.body)
	}
	data, _ := r.body["data"].([]any)
	if len(data) != 2 {
		t.Fatalf("list: got %v, want the bootstrap key and ci", r.body)
	}
	if data[0].(map[string]any)["id"] == id {
		data[0], data[1] = data[1], data[0] // same created_at: ordered by id
	}
	wantListed := map[string]any{"id": id, "label": "ci", "prefix": key[:8], "permissions": []any{"read", "write"},
		"expires_at": "2031-01-02T01:04:05Z", "last_used_at": now.Format(time.RFC3339), "created_at": now.Format(time.RFC3339),
		"kind": "api", "approved": true}
	if !reflect.DeepEqual(data[1], wantListed) {
		t.Errorf("listed key:\n got %v\nwant %v", data[1], wantListed)
	}

	// Only the hash is stored; the event carries hash, prefix and scopes.
	keys, _ := e.rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if strings.Contains(k, key[4:]) {
			t.Errorf("redis key %q contains the api key", k)
		}
		if typ, _ := e.rdb.Type(ctx, k).Result(); typ == "hash" {
			vals, _ := e.rdb.HGetAll(ctx, k).Result()
			for f, v := range vals {
				if strings.Contains(v, key[4:]) {
					t.Errorf("redis %s field %s contains the api key", k, f)
				}
			}
		}
	}
	evs := keyEvents(t, e.rdb)
	created, ok := evs[events.APIKeyCreated]
	if !ok || len(created) != 2 {
		t.Fatalf("events: got %v, want two %s", evs, events.APIKeyCreated)
	}
	var payload events.APIKeyCreatedV1
	if err := json.Unmarshal(created[1].Payload, &payload); err != nil {
		t.Fatal(err)
	}
	wantExp := time.Date(2031, 1, 2, 1, 4, 5, 0, time.UTC)
	if payload.KeyID != id || payload.Hash != accounts.HashKey(key) || payload.Prefix != key[:8] ||
		!reflect.DeepEqual(payload.Scopes, []string{"read", "write"}) || payload.Source != "api" ||
		payload.ExpiresAt == nil || !payload.ExpiresAt.Equal(wantExp) {
		t.Errorf("created event: got %+v, want key %s, its hash, prefix, scopes, source api, expiry %s", payload, id, wantExp)
	}

	// Revoke on one replica: refused at once on the other.
	r = e.call(1, http.MethodDelete, "/api/v1/api-keys/"+id, admin, "")
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, map[string]any{"message": "API key revoked"}) {
		t.Errorf("revoke: got %d %v, want 200 API key revoked", r.code, r.body)
	}
	wantV1Error(t, e.call(0, http.MethodGet, "/api/v1/api-keys", key, ""), http.StatusUnauthorized, "Missing or invalid API key")
	wantV1Error(t, e.call(0, http.MethodDelete, "/api/v1/api-keys/"+id, admin, ""), http.StatusNotFound, "API key not found")
	r = e.call(0, http.MethodGet, "/api/v1/api-keys", admin, "")
	if data, _ := r.body["data"].([]any); len(data) != 1 {
		t.Errorf("list after revoke: got %v, want only the bootstrap key", r.body)
	}
	if revoked := keyEvents(t, e.rdb)[events.APIKeyRevoked]; len(revoked) != 1 || revoked[0].AggregateID != id {
		t.Errorf("revoked events: got %v, want one for %s", revoked, id)
	}
}

func keyEvents(t *testing.T, rdb *redis.Client) map[string][]events.Envelope {
	t.Helper()
	evs, err := events.ReadAllEvents(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]events.Envelope)
	for _, ev := range evs {
		out[ev.Name] = append(out[ev.Name], ev)
	}
	return out
}

func TestAPIKeyScopes(t *testing.T) {
	e := newKeyEnv(t, Config{})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	r := e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"dashboard"}`)
	if r.code != http.StatusCreated || !reflect.DeepEqual(r.body["permissions"], []any{"read"}) {
		t.Fatalf("create with default permissions: got %d %v, want 201 [read]", r.code, r.body)
	}
	reader, readerID := r.body["key"].(string), r.body["id"].(string)
	writer := e.bootstrapKey("ops@example.com", "write")

	tests := []struct {
		name, method, path, key, body string
		wantCode                      int
		wantMsg                       string
	}{
		{"read key lists", http.MethodGet, "/api/v1/api-keys", reader, "", 200, ""},
		{"read key cannot create", http.MethodPost, "/api/v1/api-keys", reader, `{"label":"x"}`, 403, "This API key lacks the write permission"},
		{"read key cannot revoke", http.MethodDelete, "/api/v1/api-keys/" + readerID, reader, "", 403, "This API key lacks the write permission"},
		{"write-only key cannot list", http.MethodGet, "/api/v1/api-keys", writer, "", 403, "This API key lacks the read permission"},
		{"write-only key creates", http.MethodPost, "/api/v1/api-keys", writer, `{"label":"x"}`, 201, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call(1, tc.method, tc.path, tc.key, tc.body)
			if tc.wantMsg != "" {
				wantV1Error(t, r, tc.wantCode, tc.wantMsg)
			} else if r.code != tc.wantCode {
				t.Errorf("got %d %v, want %d", r.code, r.body, tc.wantCode)
			}
		})
	}
}

func TestAPIKeyRefused(t *testing.T) {
	e := newKeyEnv(t, Config{})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	r := e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"short","expires_at":"2030-06-01T13:00:00Z"}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create: got %d %v", r.code, r.body)
	}
	expiring := r.body["key"].(string)
	r = e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"gone"}`)
	revoked := r.body["key"].(string)
	if r := e.call(0, http.MethodDelete, "/api/v1/api-keys/"+r.body["id"].(string), admin, ""); r.code != http.StatusOK {
		t.Fatalf("revoke: got %d %v", r.code, r.body)
	}
	const keychestKey = "key-of-ops-0123456789"
	if _, err := e.srv[0].accounts.Claim(context.Background(), "ops@example.com", keychestKey); err != nil {
		t.Fatal(err)
	}
	// Valid until the clock passes its expiry.
	if r := e.call(1, http.MethodGet, "/api/v1/api-keys", expiring, ""); r.code != http.StatusOK {
		t.Fatalf("key before expiry: got %d %v, want 200", r.code, r.body)
	}
	e.clock.Add(time.Hour)

	tests := []struct {
		name, header string
	}{
		{"no header", ""},
		{"other scheme", "Basic " + admin},
		{"empty bearer", "Bearer "},
		{"bearer without space", "Bearer" + admin},
		{"unknown key", "Bearer ssa_" + strings.Repeat("A", 32)},
		{"key without prefix", "Bearer " + admin[4:]},
		{"keychest key", "Bearer " + keychestKey},
		{"expired key", "Bearer " + expiring},
		{"revoked key", "Bearer " + revoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.urls[1]+"/api/v1/api-keys", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusUnauthorized || string(raw) != `{"error":"Missing or invalid API key"}` {
				t.Errorf("got %d %s, want 401 {\"error\":\"Missing or invalid API key\"}", resp.StatusCode, raw)
			}
		})
	}
	// The scheme ignores case.
	req, _ := http.NewRequest(http.MethodGet, e.urls[1]+"/api/v1/api-keys", nil)
	req.Header.Set("Authorization", "bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case scheme: got %v %v, want 200", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
}

func TestAPIKeyTenancy(t *testing.T) {
	e := newKeyEnv(t, Config{})
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	r := e.call(0, http.MethodPost, "/api/v1/api-keys", alice, `{"label":"alice ci"}`)
	aliceID := r.body["id"].(string)

	wantV1Error(t, e.call(1, http.MethodDelete, "/api/v1/api-keys/"+aliceID, bob, ""), http.StatusNotFound, "API key not found")
	wantV1Error(t, e.call(1, http.MethodDelete, "/api/v1/api-keys/not-a-uuid", bob, ""), http.StatusNotFound, "API key not found")
	r = e.call(1, http.MethodGet, "/api/v1/api-keys", bob, "")
	data, _ := r.body["data"].([]any)
	if len(data) != 1 || data[0].(map[string]any)["label"] != "bootstrap" {
		t.Errorf("bob's list: got %v, want only his bootstrap key", r.body)
	}
	// Alice's key still works after bob's attempt.
	if r := e.call(0, http.MethodGet, "/api/v1/api-keys", alice, ""); r.code != http.StatusOK || len(r.body["data"].([]any)) != 2 {
		t.Errorf("alice's list: got %d %v, want her two keys", r.code, r.body)
	}
}

func TestCreateKeyValidation(t *testing.T) {
	e := newKeyEnv(t, Config{MaxBodyBytes: 512, RateLimitAPIKeys: 1000})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	tests := []struct {
		name, body string
		wantMsg    string
	}{
		{"unknown field", `{"label":"x","scopes":["read"]}`, `unknown field "scopes"`},
		{"field in other case", `{"Label":"x"}`, `unknown field "Label"`},
		{"label not a string", `{"label":5}`, `field "label" must be a string`},
		{"permissions not an array", `{"label":"x","permissions":"read"}`, `field "permissions" must be an array of strings`},
		{"permission not a string", `{"label":"x","permissions":[1]}`, `field "permissions" must be an array of strings`},
		{"missing label", `{"permissions":["read"]}`, "label must be 1 to 100 characters"},
		{"blank label", `{"label":"   "}`, "label must be 1 to 100 characters"},
		{"long label", `{"label":"` + strings.Repeat("é", 101) + `"}`, "label must be 1 to 100 characters"},
		{"label with escape sequences", `{"label":"x\u001b]0;pwned\u0007\u001b[2J\nfake: row"}`, "label must not contain control characters"},
		{"label with NUL", `{"label":"a\u0000b"}`, "label must not contain control characters"},
		{"label with C1 CSI", `{"label":"a\u009b2J"}`, "label must not contain control characters"},
		{"unknown permission", `{"label":"x","permissions":["admin"]}`, "permissions must be"},
		{"no permissions", `{"label":"x","permissions":[]}`, "permissions must be"},
		{"expiry not ISO 8601", `{"label":"x","expires_at":"tomorrow"}`, `expires_at: want an ISO 8601 time such as "2030-01-02T15:04:05Z", or a date`},
		{"expiry a date in the past", `{"label":"x","expires_at":"2030-06-01"}`, "expires_at must be in the future"},
		{"expiry in the past", `{"label":"x","expires_at":"2030-06-01T11:59:59Z"}`, "expires_at must be in the future"},
		{"expiry now", `{"label":"x","expires_at":"2030-06-01T12:00:00Z"}`, "expires_at must be in the future"},
		{"empty body", ``, "request body is empty"},
		{"not json", `label=x`, "not valid JSON"},
		{"broken json", `{"label":`, "not valid JSON"},
		{"trailing data", `{"label":"x"} {}`, "not valid JSON"},
		{"array", `[{"label":"x"}]`, "must be a JSON object"},
		{"null", `null`, "must be a JSON object"},
	}
	before := keyEnvState(t, e.rdb)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantV1Error(t, e.call(0, http.MethodPost, "/api/v1/api-keys", admin, tc.body), http.StatusBadRequest, tc.wantMsg)
		})
	}
	// A body over the limit is a 413 (TestOversizedBodiesAre413 for every route).
	wantV1Error(t, e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"`+strings.Repeat("x", 600)+`"}`),
		http.StatusRequestEntityTooLarge, "request body too large: at most 512 bytes")
	if after := keyEnvState(t, e.rdb); after != before {
		t.Errorf("state after rejected creates: got %s, want %s", after, before)
	}
	// Label at the limit, counted in characters; permissions deduplicated.
	r := e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"`+strings.Repeat("é", 100)+`","permissions":["read","read"],"expires_at":null}`)
	if r.code != http.StatusCreated || !reflect.DeepEqual(r.body["permissions"], []any{"read"}) || r.body["expires_at"] != nil {
		t.Errorf("label of 100 characters: got %d %v, want 201 [read] no expiry", r.code, r.body)
	}
	// A date alone is ISO 8601 too (SSLTrackr's expires_at): its start, UTC.
	r = e.call(0, http.MethodPost, "/api/v1/api-keys", admin, `{"label":"dated","expires_at":"2031-01-02"}`)
	if r.code != http.StatusCreated || r.body["expires_at"] != "2031-01-02T00:00:00Z" {
		t.Errorf("expiry as a date: got %d %v, want 201 expiring 2031-01-02T00:00:00Z", r.code, r.body)
	}
}

// keyEnvState is what a rejected request must leave untouched: the events
// and the keys of every account (rate-limit counters aside).
func keyEnvState(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	evs, err := events.ReadAllEvents(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	n := len(evs)
	keys, _ := rdb.Keys(ctx, "apikey:*").Result()
	return fmt.Sprintf("events=%d apikeys=%d", n, len(keys))
}

func TestAPIKeyLastUsed(t *testing.T) {
	e := newKeyEnv(t, Config{})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	lastUsed := func(i int) any {
		t.Helper()
		r := e.call(i, http.MethodGet, "/api/v1/api-keys", admin, "")
		return r.body["data"].([]any)[0].(map[string]any)["last_used_at"]
	}
	first := now.Format(time.RFC3339)
	if got := lastUsed(0); got != first {
		t.Errorf("after first use: got %v, want %s", got, first)
	}
	// Within a minute nobody writes again: not replica 0, which wrote, and
	// not replica 1 either, which has not written yet and so does once.
	e.clock.Add(30 * time.Second)
	if got := lastUsed(0); got != first {
		t.Errorf("30s later on the same replica: got %v, want %s (no write)", got, first)
	}
	if got := lastUsed(1); got != now.Add(30*time.Second).Format(time.RFC3339) {
		t.Errorf("30s later on the other replica: got %v, want its first write", got)
	}
	e.clock.Add(31 * time.Second)
	if got := lastUsed(0); got != now.Add(61*time.Second).Format(time.RFC3339) {
		t.Errorf("61s later: got %v, want a new write", got)
	}
}

// TestV1RedisDown: Redis not answering is a 503 with Retry-After, its
// cause logged, never sent, so that clients retry rather than give up.
func TestV1RedisDown(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	srv, err := New(Config{}, dead, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e := &keyEnv{t: t, urls: [2]string{hs.URL, hs.URL}}
	r := e.call(0, http.MethodGet, "/api/v1/api-keys", "ssa_"+strings.Repeat("A", 32), "")
	wantV1Error(t, r, http.StatusServiceUnavailable, "temporarily unavailable")
	if msg, _ := r.body["error"].(string); strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "refused") {
		t.Errorf("error: got %q, want no cause", msg)
	}
	if r.header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After: got %q, want 5", r.header.Get("Retry-After"))
	}
}

// approveClaimed approves, with the v1 key of the account, every claimed
// key it has not approved yet.
func (e *keyEnv) approveClaimed(key string) {
	e.t.Helper()
	r := e.call(0, http.MethodGet, "/api/v1/api-keys", key, "")
	data, _ := r.body["data"].([]any)
	for _, d := range data {
		k := d.(map[string]any)
		if k["kind"] == "claimed" && k["approved"] == false {
			if r := e.call(0, http.MethodPost, "/api/v1/api-keys/"+k["id"].(string)+"/approve", key, ""); r.code != http.StatusOK || r.body["approved"] != true {
				e.t.Fatalf("approve %s: got %d %v", k["id"], r.code, r.body)
			}
		}
	}
}
