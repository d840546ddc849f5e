package apiserver

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
)

// auditTestRoutes adds routes shaped like the client certificate API's to
// both replicas: audited first, then authentication, then a handler that
// fills the record.
func auditTestRoutes(e *keyEnv) {
	for _, s := range e.srv {
		s.engine.POST("/api/test-audit/create", s.audited("create", "certificate"), s.requireKey(accounts.ScopeWrite),
			func(c *gin.Context) {
				auditResource(c, "cert-1")
				auditDetail(c, "common_name", "user@example.com")
				c.JSON(http.StatusCreated, gin.H{"identifier": "cert-1"})
			})
		s.engine.POST("/api/test-audit/:id/revoke", s.audited("revoke", "certificate"), s.requireKey(accounts.ScopeWrite),
			func(c *gin.Context) {
				c.JSON(http.StatusNotFound, gin.H{"error": "Certificate not found: " + c.Param("id"), "code": 404, "status": 404})
			})
		// An auth wrapper that uses the hook, as the CertMate routes do.
		hooked := func(c *gin.Context) {
			p, err := s.accounts.AuthenticateBearer(c.Request.Context(), mustBearer(c))
			if err != nil {
				s.auditFailedAuth(c, http.StatusUnauthorized, nil, "invalid token")
				c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "Unauthorized", "code": 401, "status": 401})
				return
			}
			if !p.Can(accounts.ScopeWrite) {
				s.auditFailedAuth(c, http.StatusForbidden, &p, "missing write scope")
				c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"error": "Forbidden", "code": 403, "status": 403})
				return
			}
			c.Set(principalKey, p)
			c.Next()
		}
		s.engine.POST("/api/test-audit/:id/renew", s.audited("renew", "certificate"), hooked,
			func(c *gin.Context) { c.JSON(http.StatusCreated, gin.H{}) })
		s.engine.GET("/api/test-audit/unaudited", hooked, func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{}) })
	}
}

func mustBearer(c *gin.Context) string {
	tok, _ := bearerToken(c.GetHeader("Authorization"))
	return tok
}

// auditEvents returns the audit records on the events stream, in order,
// with their envelopes.
func auditEvents(t *testing.T, rdb *redis.Client) ([]events.Envelope, []events.AuditRecordedV1) {
	t.Helper()
	envs := keyEvents(t, rdb)[events.AuditRecorded]
	recs := make([]events.AuditRecordedV1, len(envs))
	for i, ev := range envs {
		if err := ev.Decode(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return envs, recs
}

func TestAuditedRecords(t *testing.T) {
	e := newKeyEnv(t, Config{})
	auditTestRoutes(e)
	writer := e.bootstrapKey("ops@example.com", "read", "write")
	reader := e.bootstrapKey("ops@example.com", "read")
	tenant := events.TenantID("ops@example.com")
	writerP, err := e.srv[0].accounts.AuthenticateBearer(t.Context(), writer)
	if err != nil {
		t.Fatal(err)
	}
	readerP, err := e.srv[0].accounts.AuthenticateBearer(t.Context(), reader)
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		tenant, op, resourceType, resourceID, status, user, keyID, route, errMsg string
		code                                                                     int
		details                                                                  map[string]any
	}
	tests := []struct {
		name, method, path, key string
		wantCode                int
		want                    want
	}{
		{"create succeeds", http.MethodPost, "/api/test-audit/create", writer, 201,
			want{tenant, "create", "certificate", "cert-1", "success", "ops@example.com", writerP.KeyID, "/api/test-audit/create", "", 201,
				map[string]any{"common_name": "user@example.com"}}},
		{"revoke of an unknown id fails", http.MethodPost, "/api/test-audit/nope/revoke", writer, 404,
			want{tenant, "revoke", "certificate", "nope", "failure", "ops@example.com", writerP.KeyID, "/api/test-audit/:id/revoke",
				"Certificate not found: nope", 404, map[string]any{}}},
		{"no key", http.MethodPost, "/api/test-audit/create", "", 401,
			want{"", "failed_auth", "certificate", "", "failure", "", "", "/api/test-audit/create", msgUnauthorized, 401,
				map[string]any{"attempted_operation": "create"}}},
		{"unknown key", http.MethodPost, "/api/test-audit/x/revoke", "ssa_00000000000000000000000000000000", 401,
			want{"", "failed_auth", "certificate", "x", "failure", "", "", "/api/test-audit/:id/revoke", msgUnauthorized, 401,
				map[string]any{"attempted_operation": "revoke"}}},
		{"key without the scope", http.MethodPost, "/api/test-audit/create", reader, 403,
			want{"", "failed_auth", "certificate", "", "failure", "", "", "/api/test-audit/create", "This API key lacks the write permission", 403,
				map[string]any{"attempted_operation": "create"}}},
		{"hook: key without the scope names its tenant", http.MethodPost, "/api/test-audit/c9/renew", reader, 403,
			want{tenant, "failed_auth", "certificate", "c9", "failure", "ops@example.com", readerP.KeyID, "/api/test-audit/:id/renew", "Forbidden", 403,
				map[string]any{"attempted_operation": "renew", "reason": "missing write scope"}}},
		{"hook on a route without audited", http.MethodGet, "/api/test-audit/unaudited", "", 401,
			want{"", "failed_auth", "", "", "failure", "", "", "/api/test-audit/unaudited", "invalid token", 401,
				map[string]any{"reason": "invalid token"}}},
		{"hook: success", http.MethodPost, "/api/test-audit/c9/renew", writer, 201,
			want{tenant, "renew", "certificate", "c9", "success", "ops@example.com", writerP.KeyID, "/api/test-audit/:id/renew", "", 201,
				map[string]any{}}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := auditEvents(t, e.rdb)
			r := e.call(i%2, tc.method, tc.path, tc.key, "")
			if r.code != tc.wantCode {
				t.Fatalf("status: got %d %v, want %d", r.code, r.body, tc.wantCode)
			}
			envs, recs := auditEvents(t, e.rdb)
			if got := len(envs) - len(before); got != 1 {
				t.Fatalf("audit records: got %d new, want 1", got)
			}
			env, rec := envs[len(envs)-1], recs[len(recs)-1]
			w := tc.want
			var details map[string]any
			if err := json.Unmarshal(rec.Details, &details); err != nil {
				t.Fatalf("details %s: %v", rec.Details, err)
			}
			got := want{env.TenantID, rec.Operation, rec.ResourceType, rec.ResourceID, rec.Status, rec.User, rec.KeyID,
				rec.Route, rec.Error, rec.HTTPStatus, details}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("record:\n got %+v\nwant %+v", got, w)
			}
			if rec.IP != "127.0.0.1" || rec.Method != tc.method {
				t.Errorf("ip, method: got %q %q, want 127.0.0.1 %s", rec.IP, rec.Method, tc.method)
			}
			if rec.ResponseTimeMS <= 0 || rec.ResponseTimeMS > 5000 {
				t.Errorf("response time: got %v ms, want more than 0 and at most 5s", rec.ResponseTimeMS)
			}
			if rec.Timestamp.IsZero() || !rec.Timestamp.Equal(rec.Timestamp.Truncate(1e6)) {
				t.Errorf("timestamp: got %v, want a millisecond time", rec.Timestamp)
			}
		})
	}
}
