package apiserver

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/clientcerts"
)

// TestOversizedBodiesAre413: a body over the limit is a 413 "request body
// too large: at most N bytes" on every route that takes a body, whichever
// API style answers it; never a 400.
func TestOversizedBodiesAre413(t *testing.T) {
	const limit, bulkLimit = 1024, 4096
	e := newKeyEnv(t, Config{MaxBodyBytes: limit, MaxBulkBodyBytes: bulkLimit, RateLimitAPIKeys: 1000,
		CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	id := e.createDomain(0, key, map[string]any{"hostname": "shop.example"})
	const claimed = "key-of-ops-0123456789"
	if r := e.call(0, http.MethodPost, "/api/v1.0/access/claim", "", `{"email":"ops@example.com","api_key":"`+claimed+`"}`); r.code != http.StatusOK {
		t.Fatalf("claim: got %d %v, want 200", r.code, r.body)
	}
	// big is a JSON object over both limits, so that every route reads
	// past its own.
	big := `{"hostname":"a.example","notes":"` + strings.Repeat("n", 2*bulkLimit) + `"}`
	send := func(method, path string) v1Response {
		t.Helper()
		return e.call(0, method, path, key, big)
	}
	want := func(t *testing.T, r v1Response, limit int) {
		t.Helper()
		msg, _ := r.body["error"].(string)
		if r.code != http.StatusRequestEntityTooLarge || !strings.HasPrefix(msg, fmt.Sprintf("request body too large: at most %d bytes", limit)) {
			t.Errorf("got %d %v, want 413 request body too large: at most %d bytes", r.code, r.body, limit)
		}
	}
	for _, tc := range []struct {
		method, path string
		limit        int
	}{
		{http.MethodPost, "/api/v1/domains", limit},
		{http.MethodPut, "/api/v1/domains/" + id, limit},
		{http.MethodPost, "/api/v1/channels", limit},
		{http.MethodPost, "/api/v1/api-keys", limit},
		{http.MethodPut, "/api/v1/alert-settings", limit},
		{http.MethodPost, "/api/client-certs/create", limit},
		{http.MethodPost, "/api/v1/domains/bulk", bulkLimit},
		{http.MethodPost, "/api/v1.0/servers/add?api_key=" + claimed, limit},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) { want(t, send(tc.method, tc.path), tc.limit) })
	}

	// Every other route that takes a body: whatever it answers (a 404 for
	// an id that does not exist, a 401 for a key of the other API), a body
	// over the limit is never a 400.
	for _, rt := range e.srv[0].engine.Routes() {
		if rt.Method != http.MethodPost && rt.Method != http.MethodPut && rt.Method != http.MethodPatch {
			continue
		}
		path := rt.Path
		for _, p := range strings.Split(path, "/") {
			if strings.HasPrefix(p, ":") || strings.HasPrefix(p, "*") {
				path = strings.Replace(path, p, uuid.NewString(), 1)
			}
		}
		t.Run("any "+rt.Method+" "+rt.Path, func(t *testing.T) {
			req, err := http.NewRequest(rt.Method, e.urls[0]+path, strings.NewReader(big))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusBadRequest {
				t.Errorf("got 400, want 413 or an answer that does not depend on the body")
			}
		})
	}
}
