package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// auditTestRoutes adds routes shaped like the client certificate API's to
// both replicas: audited first, then authentication, then a handler that
// fills the record.
func auditTestRoutes(e *keyEnv) {
	for _, s := range e.srv {
		s.engine.POST("/api/test-audit/create", s.audit.Audited("create", "certificate"), testRender, s.auth.RequireKey(accounts.ScopeWrite),
			func(c *gin.Context) {
				audit.Resource(c, "cert-1")
				audit.Detail(c, "common_name", "user@example.com")
				c.JSON(http.StatusCreated, gin.H{"identifier": "cert-1"})
			})
		s.engine.POST("/api/test-audit/:id/revoke", s.audit.Audited("revoke", "certificate"), testRender, s.auth.RequireKey(accounts.ScopeWrite),
			func(c *gin.Context) {
				httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, "Certificate not found: "+c.Param("id")))
			})
		// An auth wrapper that uses the hook, as the CertMate routes do.
		hooked := func(c *gin.Context) {
			p, err := s.accounts.AuthenticateBearer(c.Request.Context(), mustBearer(c))
			if err != nil {
				s.audit.FailedAuth(c, http.StatusUnauthorized, nil, "invalid token")
				httpapi.Fail(c, httpapi.Errorf(http.StatusUnauthorized, "Unauthorized"))
				return
			}
			if !p.Can(accounts.ScopeWrite) {
				s.audit.FailedAuth(c, http.StatusForbidden, &p, "missing write scope")
				httpapi.Fail(c, httpapi.Errorf(http.StatusForbidden, "Forbidden"))
				return
			}
			httpapi.SetPrincipal(c, p)
			c.Next()
		}
		s.engine.POST("/api/test-audit/:id/renew", s.audit.Audited("renew", "certificate"), testRender, hooked,
			func(c *gin.Context) { c.JSON(http.StatusCreated, gin.H{}) })
		s.engine.POST("/api/test-audit/:id/panic", s.audit.Audited("revoke", "certificate"), testRender, s.auth.RequireKey(accounts.ScopeWrite),
			func(c *gin.Context) { panic("boom") })
		s.engine.GET("/api/test-audit/unaudited", testRender, hooked, func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{}) })
		// A wrapper that names no principal on a 403.
		s.engine.GET("/api/test-audit/unaudited-read", testRender, func(c *gin.Context) {
			s.audit.FailedAuth(c, http.StatusForbidden, nil, "missing read scope")
			httpapi.Fail(c, httpapi.Errorf(http.StatusForbidden, "Forbidden"))
		})
	}
}

// testRender answers the test routes' errors as {"error": msg}: the
// contract of every API style's renderer (errors travel as values, the
// audit record takes its error from the answer rendered).
var testRender = httpapi.Render(zap.NewNop(), httpapi.Style{
	Answer: httpapi.AsError,
	Body:   func(e *httpapi.Error) any { return gin.H{"error": e.Msg} },
})

func mustBearer(c *gin.Context) string {
	tok, _ := httpapi.BearerToken(c.GetHeader("Authorization"))
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
			want{"", "failed_auth", "certificate", "", "failure", "", "", "/api/test-audit/create", httpapi.MsgUnauthorized, 401,
				map[string]any{"attempted_operation": "create"}}},
		{"unknown key", http.MethodPost, "/api/test-audit/x/revoke", "ssa_00000000000000000000000000000000", 401,
			want{"", "failed_auth", "certificate", "x", "failure", "", "", "/api/test-audit/:id/revoke", httpapi.MsgUnauthorized, 401,
				map[string]any{"attempted_operation": "revoke"}}},
		{"key without the scope", http.MethodPost, "/api/test-audit/create", reader, 403,
			want{tenant, "failed_auth", "certificate", "", "failure", "ops@example.com", readerP.KeyID, "/api/test-audit/create", "This API key lacks the write permission", 403,
				map[string]any{"attempted_operation": "create"}}},
		{"hook: key without the scope names its tenant", http.MethodPost, "/api/test-audit/c9/renew", reader, 403,
			want{tenant, "failed_auth", "certificate", "c9", "failure", "ops@example.com", readerP.KeyID, "/api/test-audit/:id/renew", "Forbidden", 403,
				map[string]any{"attempted_operation": "renew", "reason": "missing write scope"}}},
		{"hook on a route without audited", http.MethodGet, "/api/test-audit/unaudited", "", 401,
			want{"", "failed_auth", "", "", "failure", "", "", "/api/test-audit/unaudited", "invalid token", 401,
				map[string]any{"reason": "invalid token"}}},
		{"hook on a route without audited, 403 without a principal", http.MethodGet, "/api/test-audit/unaudited-read", reader, 403,
			want{tenant, "failed_auth", "", "", "failure", "ops@example.com", readerP.KeyID, "/api/test-audit/unaudited-read", "missing read scope", 403,
				map[string]any{"reason": "missing read scope"}}},
		{"handler panics", http.MethodPost, "/api/test-audit/c5/panic", writer, 500,
			want{tenant, "revoke", "certificate", "c5", "failure", "ops@example.com", writerP.KeyID, "/api/test-audit/:id/panic", "internal error", 500,
				map[string]any{}}},
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

// auditCHEnv is keyEnv with ClickHouse migrated, a sink storing the events
// stream and both replicas reading audit_log.
func newAuditCHEnv(t *testing.T, cfg Config) *keyEnv {
	t.Helper()
	db := testenv.ClickHouse(t)
	conn := db.Conn(t)
	if err := schema.Migrate(context.Background(), conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	cfg.Audit.Conn = conn
	e := newKeyEnv(t, cfg)
	sk, err := sink.New(sink.Config{Consumer: "test", FlushInterval: 20 * time.Millisecond}, e.rdb, conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sk.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return e
}

// auditList calls GET /api/audit?query on replica i and returns the
// entries' operation:resource_id pairs.
func (e *keyEnv) auditOps(i int, key, query string) ([]string, v1Response) {
	e.t.Helper()
	r := e.call(i, http.MethodGet, "/api/audit?"+query, key, "")
	if r.code != http.StatusOK {
		return nil, r
	}
	entries, _ := r.body["entries"].([]any)
	out := []string{}
	for _, x := range entries {
		m := x.(map[string]any)
		out = append(out, fmt.Sprint(m["operation"], ":", m["resource_id"]))
	}
	return out, r
}

// waitAudit polls until GET /api/audit?query lists want.
func (e *keyEnv) waitAudit(key, query string, want []string) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, r := e.auditOps(0, key, query)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("GET /api/audit?%s: got %v (HTTP %d %v), want %v", query, got, r.code, r.body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAuditAPI(t *testing.T) {
	e := newAuditCHEnv(t, Config{})
	auditTestRoutes(e)
	writer := e.bootstrapKey("ops@example.com", "read", "write")
	reader := e.bootstrapKey("ops@example.com", "read")
	other := e.bootstrapKey("other@example.com", "read", "write")
	writeOnly := e.bootstrapKey("ops@example.com", "write")
	start := time.Now().UTC()

	calls := []struct {
		i               int
		method, path    string
		key             string
		wantCode        int
		pauseAfterwards bool
	}{
		{0, http.MethodPost, "/api/test-audit/create", writer, 201, true},
		{1, http.MethodPost, "/api/test-audit/c7/revoke", writer, 404, true},
		{0, http.MethodPost, "/api/test-audit/create", "", 401, false},
		{1, http.MethodPost, "/api/test-audit/create", reader, 403, true},
		{0, http.MethodPost, "/api/test-audit/c8/renew", writer, 201, false},
		{1, http.MethodPost, "/api/test-audit/create", other, 201, false},
	}
	var marks []time.Time // the time after each call
	for _, c := range calls {
		if r := e.call(c.i, c.method, c.path, c.key, ""); r.code != c.wantCode {
			t.Fatalf("%s %s: got %d %v, want %d", c.method, c.path, r.code, r.body, c.wantCode)
		}
		if c.pauseAfterwards {
			time.Sleep(5 * time.Millisecond) // distinct milliseconds for since/until
		}
		marks = append(marks, time.Now().UTC())
	}
	all := []string{"renew:c8", "failed_auth:", "revoke:c7", "create:cert-1"}
	e.waitAudit(reader, "resource_type=certificate", all)

	t.Run("entry", func(t *testing.T) {
		_, r := e.auditOps(1, reader, "operation=revoke")
		entries := r.body["entries"].([]any)
		if len(entries) != 1 {
			t.Fatalf("entries: got %v, want one", entries)
		}
		got := entries[0].(map[string]any)
		ts, err := time.Parse(time.RFC3339Nano, got["timestamp"].(string))
		if err != nil || ts.Before(start.Truncate(time.Millisecond)) || ts.After(marks[1]) {
			t.Errorf("timestamp: got %v, want between %v and %v", got["timestamp"], start, marks[1])
		}
		if ms, _ := got["response_time_ms"].(float64); ms <= 0 {
			t.Errorf("response_time_ms: got %v, want more than 0", got["response_time_ms"])
		}
		if _, err := uuid.Parse(got["id"].(string)); err != nil {
			t.Errorf("id: got %v, want a uuid", got["id"])
		}
		delete(got, "timestamp")
		delete(got, "response_time_ms")
		delete(got, "id")
		want := map[string]any{"operation": "revoke", "resource_type": "certificate", "resource_id": "c7", "status": "failure",
			"user": "ops@example.com", "key_id": keyIDOf(t, e, writer), "ip_address": "127.0.0.1", "method": "POST",
			"route": "/api/test-audit/:id/revoke", "http_status": float64(404), "details": map[string]any{},
			"error": "Certificate not found: c7"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("entry:\n got %v\nwant %v", got, want)
		}
		if r.body["count"] != float64(1) || r.body["limit"] != float64(100) {
			t.Errorf("count, limit: got %v %v, want 1 100", r.body["count"], r.body["limit"])
		}
	})

	tests := []struct {
		name, key, query string
		want             []string
	}{
		{"operation", reader, "operation=create", []string{"create:cert-1"}},
		{"failed auth names the attempted operation", reader, "operation=failed_auth", []string{"failed_auth:"}},
		{"resource id", reader, "resource_id=c8", []string{"renew:c8"}},
		{"status", reader, "resource_type=certificate&status=failure", []string{"failed_auth:", "revoke:c7"}},
		{"success", reader, "resource_type=certificate&status=success", []string{"renew:c8", "create:cert-1"}},
		{"limit", reader, "resource_type=certificate&limit=2", []string{"renew:c8", "failed_auth:"}},
		{"since", reader, "resource_type=certificate&since=" + marks[0].Format(time.RFC3339Nano), []string{"renew:c8", "failed_auth:", "revoke:c7"}},
		{"until", reader, "resource_type=certificate&until=" + marks[1].Format(time.RFC3339Nano), []string{"revoke:c7", "create:cert-1"}},
		{"since and until", reader, "resource_type=certificate&since=" + marks[0].Format(time.RFC3339Nano) + "&until=" + marks[3].Format(time.RFC3339Nano), []string{"failed_auth:", "revoke:c7"}},
		{"other tenant sees only its own", other, "resource_type=certificate", []string{"create:cert-1"}},
		{"no match", reader, "resource_id=c99", []string{}},
		{"an operation known but not recorded yet", reader, "operation=auto_renew", []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, r := e.auditOps(1, tc.key, tc.query)
			if r.code != http.StatusOK || !slices.Equal(got, tc.want) {
				t.Errorf("got %v (HTTP %d %v), want %v", got, r.code, r.body, tc.want)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, key, query string
			wantCode         int
			wantMsg          string
		}{
			{"no key", "", "", 401, "Missing or invalid API key"},
			{"write-only key", writeOnly, "", 403, "read permission"},
			{"limit 0", reader, "limit=0", 400, "limit must be a whole number from 1 to 1000"},
			{"limit over the cap", reader, "limit=1001", 400, "limit must be"},
			{"limit not a number", reader, "limit=ten", 400, "limit must be"},
			{"bad status", reader, "status=ok", 400, `status must be "success" or "failure"`},
			{"bad time", reader, "since=yesterday", 400, "since must be an RFC 3339 time"},
			{"since after until", reader, "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", 400, "since must be before until"},
			{"unknown parameter", reader, "tenant_id=x", 400, `unknown parameter "tenant_id"`},
			{"unknown operation", reader, "operation=drop", 400, `operation must be one of auto_renew, batch, create, delete, download, failed_auth, get, list, renew, revoke, stats; got "drop"`},
			{"operation in another case", reader, "operation=Create", 400, `; got "Create"`},
			{"long operation", reader, "operation=" + strings.Repeat("x", 201), 400, "longer than 200"},
			{"unknown resource type", reader, "resource_type=client_certificate", 400, `resource_type must be one of audit_log, certificate, managed_certificate; got "client_certificate"`},
			{"long resource type", reader, "resource_type=" + strings.Repeat("x", 201), 400, "longer than 200"},
			{"repeated parameter", reader, "status=success&status=failure", 400, `"status" given more than once`},
			{"long filter", reader, "resource_id=" + strings.Repeat("x", 201), 400, "longer than 200"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.call(0, http.MethodGet, "/api/audit?"+tc.query, tc.key, "")
				msg, _ := r.body["error"].(string)
				if r.code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) || r.body["status"] != float64(tc.wantCode) || r.body["code"] == "" {
					t.Errorf("got %d %v, want %d {error: ...%q..., code, status}", r.code, r.body, tc.wantCode, tc.wantMsg)
				}
			})
		}
	})

	t.Run("reads of the log are audited", func(t *testing.T) {
		got, _ := e.auditOps(0, reader, "resource_type=audit_log&status=success&limit=1")
		if len(got) != 1 || got[0] != "list:" {
			t.Errorf("got %v, want [list:]", got)
		}
		// The write-only key's 403, just answered (the sink lags); the
		// keyless 401 belongs to no tenant.
		e.waitAudit(reader, "resource_type=audit_log&operation=failed_auth", []string{"failed_auth:"})
	})
}

func keyIDOf(t *testing.T, e *keyEnv, key string) string {
	t.Helper()
	p, err := e.srv[0].accounts.AuthenticateBearer(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return p.KeyID
}

func TestAuditAPIWithoutClickHouse(t *testing.T) {
	e := newKeyEnv(t, Config{})
	reader := e.bootstrapKey("ops@example.com", "read")
	r := e.call(0, http.MethodGet, "/api/audit", reader, "")
	if r.code != http.StatusServiceUnavailable || r.body["code"] != "SERVICE_UNAVAILABLE" {
		t.Errorf("got %d %v, want 503 SERVICE_UNAVAILABLE", r.code, r.body)
	}
}

// TestAuditClientCerts follows every audited operation of the client
// certificate API from the request to GET /api/audit: the middleware, the
// events stream, the sink and ClickHouse.
func TestAuditClientCerts(t *testing.T) {
	e := newAuditCHEnv(t, Config{CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	reader := e.bootstrapKey("ops@example.com", "read")
	other := e.bootstrapKey("other@example.com", "read", "write")

	a := e.createCert(0, admin, `{"common_name":"svc-a","cert_usage":"vpn"}`)
	b := e.createCert(1, admin, `{"common_name":"svc-b","cert_usage":"api-mtls"}`)
	if code, _, _ := e.raw(1, http.MethodGet, "/api/client-certs/"+a+"/download/key", admin, ""); code != http.StatusOK {
		t.Fatalf("download: got %d, want 200", code)
	}
	r := e.call(0, http.MethodPost, "/api/client-certs/"+b+"/renew", admin, "")
	if r.code != http.StatusCreated {
		t.Fatalf("renew: got %d %v, want 201", r.code, r.body)
	}
	renewed := r.body["identifier"].(string)
	if r := e.call(1, http.MethodPost, "/api/client-certs/"+a+"/revoke", admin, `{"reason":"keyCompromise"}`); r.code != http.StatusOK {
		t.Fatalf("revoke: got %d %v, want 200", r.code, r.body)
	}
	if r := e.call(0, http.MethodPost, "/api/client-certs/"+a+"/renew", admin, ""); r.code != http.StatusConflict {
		t.Fatalf("renew of a revoked certificate: got %d %v, want 409", r.code, r.body)
	}
	if r := e.call(0, http.MethodPost, "/api/client-certs/batch", admin,
		`{"headers":["common_name"],"rows":[["svc-c"],[""]]}`); r.code != http.StatusCreated {
		t.Fatalf("batch: got %d %v, want 201", r.code, r.body)
	}
	e.call(1, http.MethodPost, "/api/client-certs/"+b+"/revoke", reader, "")                     // 403
	e.call(1, http.MethodGet, "/api/client-certs/"+b, "ssa_0000000000000000000000000000000", "") // 401, no tenant
	theirs := e.createCert(0, other, `{"common_name":"theirs"}`)

	want := []string{"failed_auth:" + b, "batch:", "renew:" + a, "revoke:" + a, "renew:" + b, "download:" + a, "create:" + b, "create:" + a}
	e.waitAudit(reader, "resource_type=certificate", want)

	_, r = e.auditOps(0, reader, "resource_type=certificate")
	entries := r.body["entries"].([]any)
	byOp := map[string]map[string]any{}
	for _, x := range entries {
		m := x.(map[string]any)
		byOp[fmt.Sprint(m["operation"], ":", m["status"])] = m
	}
	for _, c := range []struct {
		key   string
		field string
		want  any
	}{
		{"create:success", "user", "ops@example.com"},
		{"create:success", "route", "/api/client-certs/create"},
		{"create:success", "http_status", float64(201)},
		{"create:success", "error", nil},
		{"download:success", "route", "/api/client-certs/:id/download/:type"},
		{"revoke:success", "method", "POST"},
		{"renew:failure", "http_status", float64(409)},
		{"batch:success", "resource_id", ""},
		{"failed_auth:failure", "http_status", float64(403)},
		{"failed_auth:failure", "user", "ops@example.com"},
	} {
		if got := byOp[c.key][c.field]; got != c.want {
			t.Errorf("%s %s: got %v, want %v", c.key, c.field, got, c.want)
		}
	}
	detail := func(key, field string) any {
		d, _ := byOp[key]["details"].(map[string]any)
		return d[field]
	}
	for _, c := range []struct {
		key, field string
		want       any
	}{
		{"create:success", "common_name", "svc-a"},
		{"create:success", "usage", "vpn"},
		{"download:success", "type", "key"},
		{"revoke:success", "reason", "keyCompromise"},
		{"batch:success", "successful", float64(1)},
		{"batch:success", "failed", float64(1)},
		{"failed_auth:failure", "attempted_operation", "revoke"},
	} {
		if got := detail(c.key, c.field); got != c.want {
			t.Errorf("%s details %s: got %v, want %v", c.key, c.field, got, c.want)
		}
	}
	if msg, _ := byOp["renew:failure"]["error"].(string); !strings.Contains(msg, "revoked") {
		t.Errorf("failed renew error: got %q, want the answer's error", msg)
	}
	// The renewal's record is of the certificate renewed, and names the
	// new one.
	got, _ := e.auditOps(1, reader, "operation=renew&status=success")
	if len(got) != 1 || got[0] != "renew:"+b || detailOf(t, e, reader, "operation=renew&status=success", "new_identifier") != renewed {
		t.Errorf("renew records: got %v, want one of %s naming %s", got, b, renewed)
	}
	// Tenancy: the other account sees its own create only.
	e.waitAudit(other, "resource_type=certificate", []string{"create:" + theirs})
	if got, _ := e.auditOps(1, other, "resource_id="+a); len(got) != 0 {
		t.Errorf("other tenant filtering on our id: got %v, want nothing", got)
	}
}

// detailOf returns a details field of the newest record query lists.
func detailOf(t *testing.T, e *keyEnv, key, query, field string) any {
	t.Helper()
	_, r := e.auditOps(0, key, query)
	entries, _ := r.body["entries"].([]any)
	if len(entries) == 0 {
		return nil
	}
	d, _ := entries[0].(map[string]any)["details"].(map[string]any)
	return d[field]
}

// A record that cannot be appended leaves the answer as it was, and is
// counted (and logged).
func TestAuditAppendFailure(t *testing.T) {
	e := newKeyEnv(t, Config{})
	s := e.srv[0]
	s.engine.GET("/api/test-audit/open", s.audit.Audited("list", "certificate"), func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	// The event streams are not streams: every XADD fails.
	for _, stream := range events.EventStreams() {
		if err := e.rdb.Set(t.Context(), stream, "not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	before := counterValue(t, "certfleet_audit_errors_total")
	if r := e.call(0, http.MethodGet, "/api/test-audit/open", "", ""); r.code != http.StatusOK || r.body["ok"] != true {
		t.Fatalf("answer: got %d %v, want 200 ok", r.code, r.body)
	}
	if got := counterValue(t, "certfleet_audit_errors_total") - before; got != 1 {
		t.Errorf("certfleet_audit_errors_total grew by %v, want 1", got)
	}
}

// counterValue reads the process's counter name (without labels).
func counterValue(t *testing.T, name string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("counter %s not registered", name)
	return 0
}

func TestAuditSystem(t *testing.T) {
	e := newKeyEnv(t, Config{})
	tenant := events.TenantID("ops@example.com")
	if err := e.srv[0].audit.System(t.Context(), tenant, "auto_renew", "certificate", "c1",
		map[string]any{"new_identifier": "c2"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.srv[1].audit.System(t.Context(), tenant, "auto_renew", "certificate", "c3", nil, "signing failed"); err != nil {
		t.Fatal(err)
	}
	envs, recs := auditEvents(t, e.rdb)
	if len(recs) != 2 {
		t.Fatalf("records: got %d, want 2", len(recs))
	}
	type summary struct{ tenant, op, id, status, user, keyID, ip, details, err string }
	var got []summary
	for i, r := range recs {
		got = append(got, summary{envs[i].TenantID, r.Operation, r.ResourceID, r.Status, r.User, r.KeyID, r.IP, string(r.Details), r.Error})
	}
	want := []summary{
		{tenant, "auto_renew", "c1", "success", "system", "", "", `{"new_identifier":"c2"}`, ""},
		{tenant, "auto_renew", "c3", "failure", "system", "", "", `{}`, "signing failed"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records:\n got %+v\nwant %+v", got, want)
	}
}
