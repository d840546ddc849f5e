package apiserver

// The audit log (issue 5): every operation of the client certificate API,
// and every request refused for its key, becomes an audit.recorded.v1
// event on the events stream; the sink stores it in ClickHouse (events and
// audit_log), and GET /api/audit reads audit_log.
//
// How a route is audited (clientcerts.go, revocation.go):
//
//	g.POST("/client-certs/create", s.audited("create", "certificate"), <auth>, <limit>, s.createClientCert)
//
// audited goes first, before authentication, so that a refused key is
// recorded too (as operation "failed_auth"). The handler adds what only it
// knows with auditResource(c, id) (the id of a certificate it created),
// auditDetail(c, key, value) (common_name, usage, batch counts; never key
// material) and, when the answer's "error" field is not the error to
// record, auditError(c, msg). An authentication wrapper that refuses a key
// may call s.auditFailedAuth(c, code, principal, reason): on an audited
// route it names the tenant of a key that lacked the scope (403); on a
// route without audited it records the refusal at once. Reads put
// s.auditRefusals(operation, resourceType) first instead: only refused
// keys are recorded. What certfleet does by itself (an auto-renewal) is
// recorded with s.auditSystem.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

var (
	auditRecords = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_audit_records_total",
		Help: "Audit records appended to the events stream, by operation and status.",
	}, []string{"operation", "status"})
	auditErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_audit_errors_total",
		Help: "Audit records that could not be appended to the events stream (logged with their content).",
	})
)

// AuditConfig configures the audit log.
type AuditConfig struct {
	// Conn is the ClickHouse connection GET /api/audit reads audit_log
	// through; nil answers that route 503 (recording needs only Redis).
	Conn driver.Conn
	// QueryTimeout bounds one GET /api/audit query. Default 10s.
	QueryTimeout time.Duration
	// DefaultLimit is how many records GET /api/audit returns without a
	// limit parameter. Default 100.
	DefaultLimit int
	// MaxLimit is the largest limit GET /api/audit accepts. Default 1000.
	MaxLimit int
	// RecordTimeout bounds the XADD of one record; the request's own
	// context is not used, so a client that hangs up is still recorded.
	// Default 2s.
	RecordTimeout time.Duration
}

func (c *AuditConfig) setDefaults() {
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 10 * time.Second
	}
	if c.DefaultLimit == 0 {
		c.DefaultLimit = 100
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = 1000
	}
	if c.RecordTimeout == 0 {
		c.RecordTimeout = 2 * time.Second
	}
}

func (c *AuditConfig) validate() []error {
	var errs []error
	if c.QueryTimeout < 0 {
		errs = append(errs, errors.New("audit query timeout must not be negative, got "+c.QueryTimeout.String()))
	}
	if c.RecordTimeout < 0 {
		errs = append(errs, errors.New("audit record timeout must not be negative, got "+c.RecordTimeout.String()))
	}
	if c.MaxLimit < 1 || c.DefaultLimit < 1 || c.DefaultLimit > c.MaxLimit {
		errs = append(errs, errors.New("audit limits must satisfy 1 <= default limit <= max limit"))
	}
	return errs
}

// auditArea is the audit log's state.
type auditArea struct {
	conn driver.Conn
	// emails caches tenant id -> account email: a tenant id is derived
	// from its email (events.TenantID), so the pair never changes.
	emails sync.Map
}

func (s *Server) initAudit() error {
	s.audit.conn = s.cfg.Audit.Conn
	return nil
}

// auditKey holds the request's *auditState in the gin context.
const auditKey = "certfleet.audit"

// auditState is what audited collects while the request runs.
type auditState struct {
	start        time.Time
	operation    string
	resourceType string
	resourceID   string
	details      map[string]any
	errMsg       string
	// refused is set by auditFailedAuth on an audited route.
	refused       bool
	refusedReason string
	refusedBy     *accounts.Principal
	// recorded: the record was appended already (auditFailedAuth on a
	// route without audited).
	recorded bool
}

// audited records the request as an audit record of operation on
// resourceType once the rest of the chain has run. Put it before the
// authentication middleware. The resource id defaults to the route's :id
// parameter. A request answered 401 or 403 without a principal is recorded
// as "failed_auth" with the attempted operation in its details.
func (s *Server) audited(operation, resourceType string) gin.HandlerFunc {
	return s.auditor(operation, resourceType, false)
}

// auditRefusals records only the requests refused for their key, as
// audited does, and nothing of the others: for the reads of an audited
// API (list, get, stats), so that failed authentication is recorded on
// every route. Put it before the authentication middleware.
func (s *Server) auditRefusals(operation, resourceType string) gin.HandlerFunc {
	return s.auditor(operation, resourceType, true)
}

func (s *Server) auditor(operation, resourceType string, refusalsOnly bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		st := &auditState{start: time.Now(), operation: operation, resourceType: resourceType}
		c.Set(auditKey, st)
		w := &auditWriter{ResponseWriter: c.Writer}
		c.Writer = w
		panicked := true
		defer func() {
			if !panicked {
				return
			}
			// The handler panicked: the recovery middleware answers 500
			// once the panic passes; record that, and let it pass.
			r := recover()
			if r == nil {
				return // runtime.Goexit, not a panic
			}
			if r != http.ErrAbortHandler && !st.recorded && !refusalsOnly {
				st.errMsg = "internal error"
				s.finishAudit(c, st, w, http.StatusInternalServerError, false)
			}
			panic(r)
		}()
		c.Next()
		panicked = false
		if st.recorded {
			return
		}
		s.finishAudit(c, st, w, c.Writer.Status(), refusalsOnly)
	}
}

// finishAudit records the request audited collected, answered code.
func (s *Server) finishAudit(c *gin.Context, st *auditState, w *auditWriter, code int, refusalsOnly bool) {
	operation, resourceType := st.operation, st.resourceType
	rec := events.AuditRecordedV1{
		Operation:    operation,
		ResourceType: resourceType,
		ResourceID:   st.resourceID,
		HTTPStatus:   code,
		Error:        st.errMsg,
	}
	if rec.ResourceID == "" {
		rec.ResourceID = c.Param("id")
	}
	p, authed := c.Get(principalKey)
	var principal *accounts.Principal
	if pp, ok := p.(accounts.Principal); authed && ok {
		principal = &pp
	}
	refused := st.refused || (principal == nil && (code == http.StatusUnauthorized || code == http.StatusForbidden))
	if refusalsOnly && !refused {
		return
	}
	if refused {
		rec.Operation = events.AuditOperationFailedAuth
		st.detail("attempted_operation", operation)
		if st.refusedReason != "" {
			st.detail("reason", st.refusedReason)
		}
		switch {
		case st.refusedBy != nil:
			principal = st.refusedBy
		case principal == nil && code == http.StatusForbidden:
			// requireKey refuses a valid key that lacks the scope
			// before naming its principal; the account it belongs to
			// is whom the record is for.
			principal = s.auditPrincipal(c)
		}
	}
	if rec.Error == "" && code >= http.StatusBadRequest {
		rec.Error = errorOfBody(w.body)
	}
	s.recordAudit(c, st, principal, rec)
}

// auditPrincipal returns the principal of the request's bearer key, nil
// when it has no valid one.
func (s *Server) auditPrincipal(c *gin.Context) *accounts.Principal {
	token, ok := bearerToken(c.GetHeader("Authorization"))
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), s.cfg.Audit.RecordTimeout)
	defer cancel()
	p, err := s.accounts.AuthenticateBearer(ctx, token)
	if err != nil {
		return nil
	}
	return &p
}

// auditFailedAuth records a request refused for its key: an
// authentication wrapper calls it when it answers code (401 or 403). p is
// the key's principal when the key was valid but lacked the scope, else
// nil; reason says why (never the key). On a route with audited the record
// is written once the answer is out; on any other route at once.
func (s *Server) auditFailedAuth(c *gin.Context, code int, p *accounts.Principal, reason string) {
	if st := auditStateOf(c); st != nil {
		st.refused, st.refusedReason, st.refusedBy = true, reason, p
		return
	}
	st := &auditState{start: time.Now(), recorded: true}
	st.detail("reason", reason)
	if p == nil && code == http.StatusForbidden {
		p = s.auditPrincipal(c)
	}
	s.recordAudit(c, st, p, events.AuditRecordedV1{
		Operation:  events.AuditOperationFailedAuth,
		HTTPStatus: code,
		Error:      reason,
	})
}

// auditResource sets the id of the resource the audited request acted on,
// when the route has no :id (a create).
func auditResource(c *gin.Context, id string) {
	if st := auditStateOf(c); st != nil {
		st.resourceID = id
	}
}

// auditDetail adds key to the audit record's details. Never pass key
// material or secrets.
func auditDetail(c *gin.Context, key string, value any) {
	if st := auditStateOf(c); st != nil {
		st.detail(key, value)
	}
}

// auditError sets the error of the audit record, when the answer's
// "error" field is not the one to record. The tenant reads it back
// through GET /api/audit: give a summary, never an internal error's text
// (addresses, Redis or ClickHouse messages), which belongs in the log.
func auditError(c *gin.Context, msg string) {
	if st := auditStateOf(c); st != nil {
		st.errMsg = msg
	}
}

func auditStateOf(c *gin.Context) *auditState {
	v, ok := c.Get(auditKey)
	if !ok {
		return nil
	}
	st, _ := v.(*auditState)
	return st
}

func (st *auditState) detail(key string, value any) {
	if st.details == nil {
		st.details = make(map[string]any)
	}
	st.details[key] = value
}

// recordAudit completes rec from the request and appends it to the events
// stream. A failure is logged and counted: the answer is out already, and
// refusing the operation for its audit record would be worse than a gap
// the metric shows.
func (s *Server) recordAudit(c *gin.Context, st *auditState, p *accounts.Principal, rec events.AuditRecordedV1) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), s.cfg.Audit.RecordTimeout)
	defer cancel()
	rec.Timestamp = st.start.UTC().Truncate(time.Millisecond)
	rec.ResponseTimeMS = float64(time.Since(st.start).Microseconds()) / 1000
	rec.IP = c.RemoteIP()
	rec.Method = c.Request.Method
	rec.Route = c.FullPath()
	rec.Status = events.AuditSuccess
	if rec.HTTPStatus >= http.StatusBadRequest || rec.Operation == events.AuditOperationFailedAuth {
		rec.Status = events.AuditFailure
	}
	var tenant string
	if p != nil {
		tenant, rec.KeyID = p.TenantID, p.KeyID
		rec.User = s.auditUser(ctx, tenant)
	}
	if st.details == nil {
		rec.Details = json.RawMessage("{}")
	} else if d, err := json.Marshal(st.details); err == nil {
		rec.Details = d
	} else {
		rec.Details = json.RawMessage("{}")
		s.logger.Warn("audit details not marshalable", zap.String("operation", rec.Operation), zap.Error(err))
	}
	aggregate := rec.ResourceID
	if aggregate == "" {
		aggregate = rec.Operation
	}
	err := s.appendAudit(ctx, tenant, aggregate, rec)
	if err != nil {
		auditErrors.Inc()
		// The record goes to the log instead, so that it is not lost.
		s.logger.Error("audit record not stored", zap.String("operation", rec.Operation),
			zap.String("resource_type", rec.ResourceType), zap.String("resource_id", rec.ResourceID),
			zap.String("status", rec.Status), zap.String("tenant_id", tenant), zap.String("key_id", rec.KeyID),
			zap.String("ip", rec.IP), zap.Int("http_status", rec.HTTPStatus), zap.Error(err))
		return
	}
	auditRecords.WithLabelValues(rec.Operation, rec.Status).Inc()
}

// auditSystemUser is the user of records of what certfleet did by itself.
const auditSystemUser = "system"

// auditSystem records an operation certfleet did by itself, outside any
// request (an auto-renewal): user "system", no key, IP or route. errMsg
// is empty on success; like auditError's, the tenant reads it. A failure
// to append is logged and counted, and returned.
func (s *Server) auditSystem(ctx context.Context, tenantID, operation, resourceType, resourceID string,
	details map[string]any, errMsg string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Audit.RecordTimeout)
	defer cancel()
	rec := events.AuditRecordedV1{
		Timestamp: time.Now().UTC().Truncate(time.Millisecond), Operation: operation, ResourceType: resourceType,
		ResourceID: resourceID, Status: events.AuditSuccess, User: auditSystemUser, Details: json.RawMessage("{}"),
		Error: errMsg,
	}
	if errMsg != "" {
		rec.Status = events.AuditFailure
	}
	if len(details) > 0 {
		d, err := json.Marshal(details)
		if err != nil {
			return fmt.Errorf("marshal audit details: %w", err)
		}
		rec.Details = d
	}
	aggregate := resourceID
	if aggregate == "" {
		aggregate = operation
	}
	if err := s.appendAudit(ctx, tenantID, aggregate, rec); err != nil {
		auditErrors.Inc()
		s.logger.Error("audit record not stored", zap.String("operation", operation), zap.String("resource_type", resourceType),
			zap.String("resource_id", resourceID), zap.String("status", rec.Status), zap.String("tenant_id", tenantID),
			zap.String("user", auditSystemUser), zap.Error(err))
		return fmt.Errorf("append audit record: %w", err)
	}
	auditRecords.WithLabelValues(operation, rec.Status).Inc()
	return nil
}

func (s *Server) appendAudit(ctx context.Context, tenant, aggregate string, rec events.AuditRecordedV1) error {
	ev, err := events.New(events.AuditRecorded, tenant, aggregate, rec)
	if err != nil {
		return err
	}
	values, err := ev.StreamValues()
	if err != nil {
		return err
	}
	return s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: events.EventStream(tenant), MaxLen: events.DefaultMaxLen, Approx: true, Values: values,
	}).Err()
}

// auditUser names the tenant's account by its email; the tenant id is the
// fallback when it cannot be read.
func (s *Server) auditUser(ctx context.Context, tenant string) string {
	if v, ok := s.audit.emails.Load(tenant); ok {
		return v.(string)
	}
	email, err := s.accounts.Email(ctx, tenant)
	if err != nil || email == "" {
		if err != nil {
			s.logger.Warn("audit: read account email", zap.String("tenant_id", tenant), zap.Error(err))
		}
		return tenant
	}
	s.audit.emails.Store(tenant, email)
	return email
}

// auditWriter keeps the start of an error answer's body, whose "error"
// field becomes the record's error.
type auditWriter struct {
	gin.ResponseWriter
	body []byte
}

const auditBodyCap = 4 << 10

func (w *auditWriter) Write(b []byte) (int, error) {
	w.keep(b)
	return w.ResponseWriter.Write(b)
}

func (w *auditWriter) WriteString(str string) (int, error) {
	w.keep([]byte(str))
	return w.ResponseWriter.WriteString(str)
}

func (w *auditWriter) keep(b []byte) {
	if w.Status() < http.StatusBadRequest || len(w.body) >= auditBodyCap {
		return
	}
	w.body = append(w.body, b[:min(len(b), auditBodyCap-len(w.body))]...)
}

// errorOfBody returns the "error" (or "message") string of a JSON error
// answer, or the start of a text one.
func errorOfBody(body []byte) string {
	var e struct {
		Error   any    `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		if msg, ok := e.Error.(string); ok && msg != "" {
			return msg
		}
		if e.Message != "" {
			return e.Message
		}
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200]
	}
	return text
}

// auditRoutes serves /api/audit. Reading the audit log is itself audited.
func (s *Server) auditRoutes(r *gin.Engine) {
	hs := append([]gin.HandlerFunc{s.audited("list", "audit_log")}, s.certMate(accounts.ScopeRead)...)
	r.GET("/api/audit", append(hs, s.listAudit)...)
}

// auditEntry is one record as GET /api/audit answers it: CertMate's audit
// log entry plus the key, the route and the answer.
type auditEntry struct {
	ID             string          `json:"id"`
	Timestamp      time.Time       `json:"timestamp"`
	Operation      string          `json:"operation"`
	ResourceType   string          `json:"resource_type"`
	ResourceID     string          `json:"resource_id"`
	Status         string          `json:"status"`
	User           string          `json:"user"`
	KeyID          string          `json:"key_id"`
	IPAddress      string          `json:"ip_address"`
	Method         string          `json:"method"`
	Route          string          `json:"route"`
	HTTPStatus     int             `json:"http_status"`
	ResponseTimeMS float64         `json:"response_time_ms"`
	Details        json.RawMessage `json:"details"`
	Error          *string         `json:"error"`
}

// auditList is the answer of GET /api/audit.
type auditList struct {
	Entries []auditEntry `json:"entries"`
	// Count is len(Entries); a count equal to Limit means there may be
	// more: ask again with until set to the oldest timestamp.
	Count int `json:"count"`
	Limit int `json:"limit"`
}

// auditParams are the query parameters of GET /api/audit.
var auditParams = []string{"operation", "resource_type", "resource_id", "status", "since", "until", "limit"}

// maxAuditFilterLen caps a string filter: ids and names are far shorter.
const maxAuditFilterLen = 200

// listAudit answers the caller's tenant's audit records from ClickHouse,
// newest first. ClickHouse lags the stream by the sink's batching (about a
// second): a record of a request just answered may not be listed yet.
func (s *Server) listAudit(c *gin.Context) {
	if s.audit.conn == nil {
		failCM(c, http.StatusServiceUnavailable, "The audit log is not available: this server has no ClickHouse connection")
		return
	}
	f, err := s.auditFilter(c)
	if err != nil {
		failCM(c, http.StatusBadRequest, err.Error())
		return
	}
	f.TenantID = principalOf(c).TenantID
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.Audit.QueryTimeout)
	defer cancel()
	rows, err := schema.QueryAudit(ctx, s.audit.conn, f)
	if err != nil {
		auditError(c, "audit log query failed")
		s.replyV1(c, err)
		return
	}
	out := auditList{Entries: make([]auditEntry, 0, len(rows)), Count: len(rows), Limit: f.Limit}
	for _, r := range rows {
		e := auditEntry{
			ID: r.EventID.String(), Timestamp: r.Timestamp, Operation: r.Operation, ResourceType: r.ResourceType,
			ResourceID: r.ResourceID, Status: r.Status, User: r.User, KeyID: r.KeyID, IPAddress: r.IP,
			Method: r.Method, Route: r.Route, HTTPStatus: int(r.HTTPStatus), ResponseTimeMS: r.ResponseTimeMS,
			Details: json.RawMessage(r.Details),
		}
		if r.Error != "" {
			e.Error = &r.Error
		}
		out.Entries = append(out.Entries, e)
	}
	auditDetail(c, "count", len(rows))
	c.JSON(http.StatusOK, out)
}

// auditFilter reads the query parameters; an unknown or repeated
// parameter, or a bad value, is an error naming it.
func (s *Server) auditFilter(c *gin.Context) (schema.AuditFilter, error) {
	q := c.Request.URL.Query()
	for name, vals := range q {
		if !slices.Contains(auditParams, name) {
			return schema.AuditFilter{}, fmt.Errorf("unknown parameter %q; known: %s", name, strings.Join(auditParams, ", "))
		}
		if len(vals) > 1 {
			return schema.AuditFilter{}, fmt.Errorf("parameter %q given more than once", name)
		}
	}
	f := schema.AuditFilter{
		Operation: q.Get("operation"), ResourceType: q.Get("resource_type"), ResourceID: q.Get("resource_id"),
		Status: q.Get("status"), Limit: s.cfg.Audit.DefaultLimit,
	}
	for name, v := range map[string]string{"operation": f.Operation, "resource_type": f.ResourceType, "resource_id": f.ResourceID} {
		if len(v) > maxAuditFilterLen {
			return f, fmt.Errorf("parameter %q is longer than %d characters", name, maxAuditFilterLen)
		}
	}
	if f.Status != "" && f.Status != events.AuditSuccess && f.Status != events.AuditFailure {
		return f, fmt.Errorf("status must be %q or %q, got %q", events.AuditSuccess, events.AuditFailure, f.Status)
	}
	// An empty limit is no limit here, as for the other parameters.
	if q.Get("limit") != "" {
		n, err := pageParam(c, "limit", f.Limit, s.cfg.Audit.MaxLimit)
		if err != nil {
			return f, err
		}
		f.Limit = n
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil && strings.Contains(v, " ") {
			// An unescaped "+02:00" arrives as " 02:00".
			t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
		}
		if err != nil {
			return f, fmt.Errorf("%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z, got %q", p.name, v)
		}
		*p.dst = t.UTC()
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, fmt.Errorf("since must be before until")
	}
	return f, nil
}
