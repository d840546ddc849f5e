package apiserver

import (
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
)

// TestCertMateErrors: the CertMate wrappers answer v1's refusals (no key,
// a key without the scope, over the limit, a server error) in CertMate's
// shapes, and leave successes and CertMate-shaped errors alone.
func TestCertMateErrors(t *testing.T) {
	e := newKeyEnv(t, Config{})
	for _, srv := range e.srv {
		srv.engine.GET("/test/cm/read", append(srv.certMate(accounts.ScopeRead, classCMBatch), func(c *gin.Context) {
			c.JSON(http.StatusOK, gin.H{"ok": true})
		})...)
		srv.engine.POST("/test/cm/write", append(srv.certMate(accounts.ScopeWrite), func(c *gin.Context) {
			failCM(c, http.StatusNotFound, "Certificate not found: x")
		})...)
		srv.engine.GET("/test/cm/broken", append(srv.certMate(accounts.ScopeRead), func(c *gin.Context) {
			srv.replyV1(c, errors.New("redis: connection refused"))
		})...)
		srv.engine.GET("/test/cm/public", append(srv.certMatePublic(), func(c *gin.Context) {
			c.String(http.StatusOK, "public")
		})...)
	}
	reader := e.bootstrapKey("ops@example.com", accounts.ScopeRead)
	writer := e.bootstrapKey("ops@example.com", accounts.ScopeWrite)

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
			r := e.call(1, tc.method, tc.path, tc.key, "")
			if r.code != tc.wantCode || !reflect.DeepEqual(r.body, tc.wantBody) {
				t.Errorf("got %d %v, want %d %v", r.code, r.body, tc.wantCode, tc.wantBody)
			}
		})
	}

	// cm-batch allows 10 a minute per key, across both replicas (the read
	// above counted one).
	for i := range cmRateBatch - 1 {
		if r := e.call(i%2, http.MethodGet, "/test/cm/read", reader, ""); r.code != http.StatusOK {
			t.Fatalf("request %d: got %d %v, want 200", i+2, r.code, r.body)
		}
	}
	r := e.call(0, http.MethodGet, "/test/cm/read", reader, "")
	retry, _ := strconv.Atoi(r.header.Get("Retry-After"))
	want := map[string]any{"error": "Rate limit exceeded", "message": "Too many requests. Please try again later.",
		"retry_after": float64(retry)}
	if r.code != http.StatusTooManyRequests || retry < 1 || !reflect.DeepEqual(r.body, want) {
		t.Errorf("over the limit: got %d %v (Retry-After %q), want 429 %v", r.code, r.body, r.header.Get("Retry-After"), want)
	}
	if got := r.header.Get("X-RateLimit-Limit"); got != strconv.Itoa(cmRateBatch) {
		t.Errorf("X-RateLimit-Limit: got %q, want %d", got, cmRateBatch)
	}
}

func TestCMTranslate(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		body, want string
	}{
		{"v1 error", 404, "", `{"error":"nope"}`, `{"error":"nope","code":"NOT_FOUND","status":404}`},
		{"unknown status", 418, "", `{"error":"tea"}`, `{"error":"tea","code":"ERROR","status":418}`},
		{"rate limited", 429, "7", `{"error":"Rate limit exceeded. Try again in 7 seconds."}`,
			`{"error":"Rate limit exceeded","message":"Too many requests. Please try again later.","retry_after":7}`},
		{"rate limited without header", 429, "", `{"error":"x"}`,
			`{"error":"Rate limit exceeded","message":"Too many requests. Please try again later.","retry_after":1}`},
		{"already CertMate's", 404, "", `{"error":"x","code":"NOT_FOUND","status":404}`, `{"error":"x","code":"NOT_FOUND","status":404}`},
		{"KeyChest's", 500, "", `{"status":"error","error":"x"}`, `{"status":"error","error":"x"}`},
		{"not JSON", 400, "", `oops`, `oops`},
		{"error not a string", 400, "", `{"error":1}`, `{"error":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(cmTranslate(tc.status, tc.retryAfter, []byte(tc.body))); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}
