package clientcerts

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

// guardEnv is two replicas of the client certificate API's guards on one
// Redis, each behind its own HTTP server, with the routes a test adds.
type guardEnv struct {
	t     *testing.T
	store *accounts.Store
	urls  [2]string
}

func newGuardEnv(t *testing.T, routes func(*Handler, *gin.Engine)) *guardEnv {
	t.Helper()
	redisSrv := testenv.Redis(t)
	logger := testenv.Logger(t)
	e := &guardEnv{t: t}
	gin.SetMode(gin.ReleaseMode)
	for i := range e.urls {
		rdb := redisSrv.Client(t)
		store, err := accounts.New(accounts.Config{}, rdb, logger)
		if err != nil {
			t.Fatal(err)
		}
		limiter, err := ratelimit.New(rdb, ratelimit.KeyPrefix)
		if err != nil {
			t.Fatal(err)
		}
		log, err := audit.New(audit.Config{}, rdb, store, logger)
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(Config{PublicURL: "http://127.0.0.1"}, nil, rdb, httpapi.NewAuth(store, quota.NewGate(rdb, nil)), httpapi.NewLimiter(limiter), log, logger)
		if err != nil {
			t.Fatal(err)
		}
		r := gin.New()
		routes(h, r)
		hs := httptest.NewServer(r)
		t.Cleanup(hs.Close)
		e.store, e.urls[i] = store, hs.URL
	}
	return e
}

// key creates a key with scopes for an account, as the CLI does.
func (e *guardEnv) key(scopes ...string) string {
	e.t.Helper()
	ctx := e.t.Context()
	tenant, err := e.store.EnsureAccount(ctx, "ops@example.com")
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := e.store.CreateKey(ctx, tenant, "test", scopes, nil, accounts.SourceCLI)
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Key
}

// raw sends a request to replica i with key as bearer (none when empty).
func (e *guardEnv) raw(i int, method, path, key string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.urls[i]+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type answer struct {
	code   int
	header http.Header
	body   map[string]any
}

// call is raw with the body decoded as a JSON object.
func (e *guardEnv) call(i int, method, path, key string) answer {
	e.t.Helper()
	code, h, b := e.raw(i, method, path, key)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		e.t.Fatalf("%s %s: got non-JSON body %q (HTTP %d)", method, path, b, code)
	}
	return answer{code: code, header: h, body: body}
}

// TestCertMateErrors: the CertMate wrappers answer v1's refusals (no key,
// a key without the scope, over the limit, a server error) in CertMate's
// shapes, and leave successes and CertMate-shaped errors alone.
func TestCertMateErrors(t *testing.T) {
	e := newGuardEnv(t, func(h *Handler, r *gin.Engine) {
		r.GET("/test/cm/read", append(h.Guard(accounts.ScopeRead, ClassBatch), func(c *gin.Context) {
			c.JSON(http.StatusOK, gin.H{"ok": true})
		})...)
		r.POST("/test/cm/write", append(h.Guard(accounts.ScopeWrite), func(c *gin.Context) {
			httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, "Certificate not found: x"))
		})...)
		r.GET("/test/cm/broken", append(h.Guard(accounts.ScopeRead), func(c *gin.Context) {
			httpapi.Fail(c, errors.New("redis: connection refused"))
		})...)
		r.GET("/test/cm/public", append(h.PublicGuard(ClassBatch), func(c *gin.Context) {
			c.String(http.StatusOK, "public")
		})...)
	})
	reader := e.key(accounts.ScopeRead)
	writer := e.key(accounts.ScopeWrite)

	tests := []struct {
		name, method, path, key string
		wantCode                int
		wantBody                map[string]any
	}{
		{"no key", http.MethodGet, "/test/cm/read", "", 401,
			map[string]any{"error": "Missing or invalid API key", "code": "UNAUTHORIZED", "status": 401.0}},
		{"unknown key", http.MethodGet, "/test/cm/read", "ssa_nope", 401,
			map[string]any{"error": "Missing or invalid API key", "code": "UNAUTHORIZED", "status": 401.0}},
		{"read key on a write route", http.MethodPost, "/test/cm/write", reader, 403,
			map[string]any{"error": "This API key lacks the write permission", "code": "FORBIDDEN", "status": 403.0}},
		{"success", http.MethodGet, "/test/cm/read", reader, 200, map[string]any{"ok": true}},
		{"handler's own error", http.MethodPost, "/test/cm/write", writer, 404,
			map[string]any{"error": "Certificate not found: x", "code": "NOT_FOUND", "status": 404.0}},
		{"server error", http.MethodGet, "/test/cm/broken", reader, 500,
			map[string]any{"error": "internal error", "code": "INTERNAL_ERROR", "status": 500.0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.call(1, tc.method, tc.path, tc.key)
			if r.code != tc.wantCode || !reflect.DeepEqual(r.body, tc.wantBody) {
				t.Errorf("got %d %v, want %d %v", r.code, r.body, tc.wantCode, tc.wantBody)
			}
		})
	}

	// cm-batch allows 10 a minute per key, across both replicas (the read
	// above counted one).
	for i := range RateBatch - 1 {
		if r := e.call(i%2, http.MethodGet, "/test/cm/read", reader); r.code != http.StatusOK {
			t.Fatalf("request %d: got %d %v, want 200", i+2, r.code, r.body)
		}
	}
	r := e.call(0, http.MethodGet, "/test/cm/read", reader)
	retry, _ := strconv.Atoi(r.header.Get("Retry-After"))
	want := map[string]any{"error": "Rate limit exceeded", "message": "Too many requests. Please try again later.",
		"retry_after": float64(retry)}
	if r.code != http.StatusTooManyRequests || retry < 1 || !reflect.DeepEqual(r.body, want) {
		t.Errorf("over the limit: got %d %v (Retry-After %q), want 429 %v", r.code, r.body, r.header.Get("Retry-After"), want)
	}
	if got := r.header.Get("X-RateLimit-Limit"); got != strconv.Itoa(RateBatch) {
		t.Errorf("X-RateLimit-Limit: got %q, want %d", got, RateBatch)
	}

	// A public route is limited per client address, keys or not.
	for i := range RateBatch {
		if code, _, body := e.raw(i%2, http.MethodGet, "/test/cm/public", ""); code != http.StatusOK || string(body) != "public" {
			t.Fatalf("public request %d: got %d %q, want 200", i+1, code, body)
		}
	}
	r = e.call(0, http.MethodGet, "/test/cm/public", reader)
	if r.code != http.StatusTooManyRequests || r.body["error"] != "Rate limit exceeded" {
		t.Errorf("public route over the limit: got %d %v, want 429", r.code, r.body)
	}
}
