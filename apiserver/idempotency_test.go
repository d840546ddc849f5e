package apiserver

import (
	"net/http"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/apiserver/clientcerts"
)

// A creation sent again with the same Idempotency-Key (its answer lost)
// finds what the first attempt created: the channel and the certificate
// are answered again, marked Idempotent-Replayed, and the API key, whose
// secret went with the first answer, is a 409 naming it. The same key
// with another request is a 422 and creates nothing; another account's
// same key is its own; a malformed key is a 400; without a key every
// request creates.
func TestIdempotencyKey(t *testing.T) {
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: channelPassphrase},
		CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
	a := e.bootstrapKey("ops@example.com", "read", "write")
	b := e.bootstrapKey("other@example.com", "read", "write")
	idem := func(k string) http.Header { return http.Header{"Idempotency-Key": {k}} }
	count := func(key, path string) int {
		t.Helper()
		r := e.call(0, http.MethodGet, path, key, "")
		if r.code != http.StatusOK {
			t.Fatalf("list %s: got %d %v", path, r.code, r.body)
		}
		data, _ := r.body["data"].([]any)
		return len(data)
	}

	// Channels: the retry may spell the request differently (field
	// order), and its secret is not part of it.
	const hook = `{"type":"webhook","url":"https://hooks.example.com/in","secret":"whsec-0123456789"}`
	first := e.callWith(0, http.MethodPost, "/api/v1/channels", a, hook, idem("ch-1"))
	if first.code != http.StatusCreated || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("create channel: got %d %v (replayed %q), want 201, not replayed", first.code, first.body, first.header.Get("Idempotent-Replayed"))
	}
	again := e.callWith(1, http.MethodPost, "/api/v1/channels", a,
		`{"secret":"whsec-9876543210","url":"https://hooks.example.com/in","type":"webhook"}`, idem("ch-1"))
	if again.code != http.StatusCreated || again.header.Get("Idempotent-Replayed") != "true" || again.body["id"] != first.body["id"] ||
		again.body["created_at"] != first.body["created_at"] {
		t.Errorf("channel creation retried: got %d %v (replayed %q), want 201 replayed, the first's %v", again.code, again.body,
			again.header.Get("Idempotent-Replayed"), first.body)
	}
	if r := e.callWith(0, http.MethodPost, "/api/v1/channels", a, `{"type":"webhook","url":"https://hooks.example.com/other"}`, idem("ch-1")); r.code != http.StatusUnprocessableEntity ||
		!strings.Contains(r.body["error"].(string), "Idempotency-Key") {
		t.Errorf("another channel under a used key: got %d %v, want 422 naming the Idempotency-Key", r.code, r.body)
	}
	if n := count(a, "/api/v1/channels"); n != 1 {
		t.Errorf("channels after one creation sent three times: got %d, want 1", n)
	}
	r := e.callWith(0, http.MethodPost, "/api/v1/channels", b, hook, idem("ch-1"))
	if r.code != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "" || r.body["id"] == first.body["id"] {
		t.Errorf("another account's channel under the same key: got %d %v (replayed %q), want 201, its own", r.code, r.body, r.header.Get("Idempotent-Replayed"))
	}
	for _, bad := range []string{"has space", strings.Repeat("k", 256), "caf\u00e9"} {
		if r := e.callWith(0, http.MethodPost, "/api/v1/channels", a, hook, idem(bad)); r.code != http.StatusBadRequest {
			t.Errorf("Idempotency-Key %q: got %d %v, want 400", bad, r.code, r.body)
		}
	}
	for range 2 {
		if r := e.call(0, http.MethodPost, "/api/v1/channels", a, hook); r.code != http.StatusCreated {
			t.Fatalf("create channel without a key: got %d %v", r.code, r.body)
		}
	}
	if n := count(a, "/api/v1/channels"); n != 3 {
		t.Errorf("channels after two creations without a key: got %d, want 3", n)
	}

	// API keys: the secret is not kept, so the retry names the key.
	const ci = `{"label":"ci","permissions":["read"]}`
	k := e.callWith(0, http.MethodPost, "/api/v1/api-keys", a, ci, idem("key-1"))
	if k.code != http.StatusCreated {
		t.Fatalf("create key: got %d %v", k.code, k.body)
	}
	r = e.callWith(1, http.MethodPost, "/api/v1/api-keys", a, ci, idem("key-1"))
	if msg, _ := r.body["error"].(string); r.code != http.StatusConflict || r.body["id"] != k.body["id"] || r.body["key"] != nil ||
		!strings.Contains(msg, "revoke") {
		t.Errorf("key creation retried: got %d %v, want 409 naming %v, telling to revoke it, without a secret", r.code, r.body, k.body["id"])
	}
	if r := e.callWith(0, http.MethodPost, "/api/v1/api-keys", a, `{"label":"cd","permissions":["read"]}`, idem("key-1")); r.code != http.StatusUnprocessableEntity {
		t.Errorf("another key under a used Idempotency-Key: got %d %v, want 422", r.code, r.body)
	}
	if r := e.call(0, http.MethodGet, "/api/v1/api-keys", k.body["key"].(string), ""); r.code != http.StatusOK {
		t.Errorf("the key the first attempt created: got %d %v, want 200", r.code, r.body)
	}
	if n := count(a, "/api/v1/api-keys"); n != 2 {
		t.Errorf("keys: got %d, want 2 (the bootstrap key and ci)", n)
	}

	// Client certificates: answered again, the same certificate.
	const bob = `{"common_name":"bob","cert_usage":"vpn"}`
	c := e.callWith(0, http.MethodPost, "/api/client-certs/create", a, bob, idem("cert-1"))
	if c.code != http.StatusCreated {
		t.Fatalf("issue certificate: got %d %v", c.code, c.body)
	}
	r = e.callWith(1, http.MethodPost, "/api/client-certs/create", a, bob, idem("cert-1"))
	if r.code != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "true" || r.body["identifier"] != c.body["identifier"] ||
		r.body["serial_number"] != c.body["serial_number"] {
		t.Errorf("certificate issue retried: got %d %v, want 201 replayed, the first's %v", r.code, r.body, c.body)
	}
	if r := e.callWith(0, http.MethodPost, "/api/client-certs/create", a, `{"common_name":"eve","cert_usage":"vpn"}`, idem("cert-1")); r.code != http.StatusUnprocessableEntity {
		t.Errorf("another certificate under a used Idempotency-Key: got %d %v, want 422", r.code, r.body)
	}
	// A batch: each row under the request's key, so a retried batch
	// finds the rows its first attempt issued.
	const batch = `{"headers":["common_name","cert_usage"],"rows":[["carol","vpn"],["dave","vpn"]]}`
	ids := func(r v1Response) []string {
		var out []string
		list, _ := r.body["certificates"].([]any)
		for _, c := range list {
			out = append(out, c.(map[string]any)["identifier"].(string))
		}
		return out
	}
	b1 := e.callWith(0, http.MethodPost, "/api/client-certs/batch", a, batch, idem("batch-1"))
	b2 := e.callWith(1, http.MethodPost, "/api/client-certs/batch", a, batch, idem("batch-1"))
	if first, again := ids(b1), ids(b2); b1.code != http.StatusCreated || len(first) != 2 || strings.Join(first, ",") != strings.Join(again, ",") {
		t.Errorf("batch retried: got %d %v then %d %v, want the same two certificates", b1.code, first, b2.code, again)
	}
	if r := e.callWith(0, http.MethodPost, "/api/client-certs/batch", a, batch, idem("bad key")); r.code != http.StatusBadRequest {
		t.Errorf("batch with a malformed Idempotency-Key: got %d %v, want 400", r.code, r.body)
	}
	certs := e.call(0, http.MethodGet, "/api/client-certs", a, "")
	if list, _ := certs.body["certificates"].([]any); certs.code != http.StatusOK || len(list) != 3 {
		t.Errorf("certificates after one issue sent three times and a batch of two sent twice: got %d %v, want 3", certs.code, certs.body)
	}
}
