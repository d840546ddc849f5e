// Package audit keeps the audit log: every operation of the client
// certificate API, and every request refused for its key, becomes an
// audit.recorded.v1 event on the events stream (the sink stores it in
// ClickHouse's audit_log), and GET /api/audit reads it back.
//
// How a route is audited (apiserver/clientcerts):
//
//	g.POST("/client-certs/create", log.Audited("create", "certificate"), <renderer>, <auth>, <limit>, handler)
//
// Audited goes first, before the route's error renderer and its
// authentication, so that a refused key is recorded too (as operation
// "failed_auth"), and the record's outcome is the error the renderer
// answered (httpapi.Outcome), never a parse of the body. The handler adds
// what only it knows with Resource(c, id) (the id of a certificate it
// created), Detail(c, key, value) (common_name, usage, batch counts; never
// key material) and, when the answered message is not the error to
// record, SetError(c, msg). An authentication wrapper that refuses a key
// may call FailedAuth(c, code, principal, reason): on an audited route it
// names the tenant of a key that lacked the scope (403); on a route
// without Audited it records the refusal at once. Reads put
// Refusals(operation, resourceType) first instead: only refused keys are
// recorded. What certfleet does by itself (an auto-renewal) is recorded
// with System.
package audit

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
	"github.com/certfleet/certfleet/apiserver/httpapi"
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

// Config configures the audit log.
type Config struct {
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

// SetDefaults fills the fields left zero.
func (c *Config) SetDefaults() {
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

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
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
	return errors.Join(errs...)
}

// Log records audit records and serves GET /api/audit.
type Log struct {
	cfg      Config
	rdb      redis.UniversalClient
	accounts *accounts.Store
	logger   *zap.Logger
	// emails caches tenant id -> account email: a tenant id is derived
	// from its email (events.TenantID), so the pair never changes.
	emails sync.Map
	// operations are the operations records are made of: those of the
	// routes (Audited, Refusals, registered as the server builds its
	// routes), failed_auth, and SystemOperations; GET /api/audit refuses
	// a filter on another (CheckOperation).
	operations vocabulary
	// resourceTypes are the resource types records are made of: those of
	// the routes, registered with their operations, and
	// SystemResourceTypes; GET /api/audit refuses a filter on another.
	resourceTypes vocabulary
}

// OperationAutoRenew is the operation of an automatic renewal of a client
// certificate (System).
const OperationAutoRenew = "auto_renew"

// SystemOperations are the operations certfleet records by itself
// (System): known before the first such record is made.
var SystemOperations = []string{OperationAutoRenew}

// ResourceCertificate is the resource type of a client certificate's
// records: its routes' (apiserver/clientcerts, the dashboard's pages) and
// its automatic renewals' (System).
const ResourceCertificate = "certificate"

// SystemResourceTypes are the resource types of SystemOperations' records.
var SystemResourceTypes = []string{ResourceCertificate}

// New returns the audit log of cfg (defaults filled in), appending records
// through rdb and naming their users from store.
func New(cfg Config, rdb redis.UniversalClient, store *accounts.Store, logger *zap.Logger) (*Log, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, rdb: rdb, accounts: store, logger: logger.Named("audit"),
		operations: vocabulary{param: "operation"}, resourceTypes: vocabulary{param: "resource_type"}}
	l.known(events.AuditOperationFailedAuth)
	l.known(SystemOperations...)
	l.resourceTypes.add(SystemResourceTypes...)
	return l, nil
}

// known adds operations to those CheckOperation accepts.
func (l *Log) known(operations ...string) { l.operations.add(operations...) }

// Operations returns the known operations, sorted.
func (l *Log) Operations() []string { return l.operations.list() }

// CheckOperation refuses op as a filter when no record can have it: it
// is not one of Operations. A filter that can only find nothing is a
// mistyped one, answered 400 like any other unknown value rather than an
// empty list. "" (no filter) passes.
func (l *Log) CheckOperation(op string) error { return l.operations.check(op) }

// vocabulary is the values records can have in one field, which a filter
// on it must be one of.
type vocabulary struct {
	param  string // the filter's query parameter, for messages
	values sync.Map
}

func (v *vocabulary) add(values ...string) {
	for _, s := range values {
		if s != "" { // a record without one; "" is no filter
			v.values.Store(s, struct{}{})
		}
	}
}

// list returns the values, sorted.
func (v *vocabulary) list() []string {
	var out []string
	v.values.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	slices.Sort(out)
	return out
}

// check refuses s as a filter unless it is one of the values or "" (no
// filter), naming s and the values.
func (v *vocabulary) check(s string) error {
	if s == "" {
		return nil
	}
	if _, ok := v.values.Load(s); ok {
		return nil
	}
	if len(s) > maxAuditFilterLen {
		return fmt.Errorf("parameter %q is longer than %d characters", v.param, maxAuditFilterLen)
	}
	return fmt.Errorf("%s must be one of %s; got %q", v.param, strings.Join(v.list(), ", "), s)
}

// auditKey holds the request's *auditState in the gin context.
const auditKey = "certfleet.audit"

// auditState is what Audited collects while the request runs.
type auditState struct {
	start        time.Time
	operation    string
	resourceType string
	resourceID   string
	details      map[string]any
	errMsg       string
	// refused is set by FailedAuth on an audited route.
	refused       bool
	refusedReason string
	refusedBy     *accounts.Principal
	// recorded: the record was appended already (FailedAuth on a route
	// without Audited).
	recorded bool
}

// Audited records the request as an audit record of operation on
// resourceType once the rest of the chain has run. Put it before the
// authentication middleware. The resource id defaults to the route's :id
// parameter. A request answered 401 or 403 without a principal is recorded
// as "failed_auth" with the attempted operation in its details.
func (l *Log) Audited(operation, resourceType string) gin.HandlerFunc {
	return l.auditor(operation, resourceType, false)
}

// Refusals records only the requests refused for their key, as
// Audited does, and nothing of the others: for the reads of an audited
// API (list, get, stats), so that failed authentication is recorded on
// every route. Put it before the authentication middleware.
func (l *Log) Refusals(operation, resourceType string) gin.HandlerFunc {
	return l.auditor(operation, resourceType, true)
}

func (l *Log) auditor(operation, resourceType string, refusalsOnly bool) gin.HandlerFunc {
	l.known(operation)
	l.resourceTypes.add(resourceType)
	return func(c *gin.Context) {
		st := &auditState{start: time.Now(), operation: operation, resourceType: resourceType}
		c.Set(auditKey, st)
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
				l.finish(c, st, http.StatusInternalServerError, false)
			}
			panic(r)
		}()
		c.Next()
		panicked = false
		if st.recorded {
			return
		}
		l.finish(c, st, c.Writer.Status(), refusalsOnly)
	}
}

// finish records the request Audited collected, answered code.
func (l *Log) finish(c *gin.Context, st *auditState, code int, refusalsOnly bool) {
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
	var principal *accounts.Principal
	if p, ok := httpapi.PrincipalOf(c); ok {
		principal = &p
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
			// RequireKey refuses a valid key that lacks the scope
			// before naming its principal; the account it belongs to
			// is whom the record is for.
			principal = l.principal(c)
		}
	}
	if e := httpapi.Outcome(c); rec.Error == "" && code >= http.StatusBadRequest && e != nil {
		rec.Error = e.Msg
	}
	l.record(c, st, principal, rec)
}

// principal returns the principal of the request's bearer key, nil
// when it has no valid one.
func (l *Log) principal(c *gin.Context) *accounts.Principal {
	token, ok := httpapi.BearerToken(c.GetHeader("Authorization"))
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), l.cfg.RecordTimeout)
	defer cancel()
	p, err := l.accounts.AuthenticateBearer(ctx, token)
	if err != nil {
		return nil
	}
	return &p
}

// FailedAuth records a request refused for its key: an
// authentication wrapper calls it when it answers code (401 or 403). p is
// the key's principal when the key was valid but lacked the scope, else
// nil; reason says why (never the key). On a route with audited the record
// is written once the answer is out; on any other route at once.
func (l *Log) FailedAuth(c *gin.Context, code int, p *accounts.Principal, reason string) {
	if st := auditStateOf(c); st != nil {
		st.refused, st.refusedReason, st.refusedBy = true, reason, p
		return
	}
	st := &auditState{start: time.Now(), recorded: true}
	st.detail("reason", reason)
	if p == nil && code == http.StatusForbidden {
		p = l.principal(c)
	}
	l.record(c, st, p, events.AuditRecordedV1{
		Operation:  events.AuditOperationFailedAuth,
		HTTPStatus: code,
		Error:      reason,
	})
}

// Resource sets the id of the resource the audited request acted on,
// when the route has no :id (a create).
func Resource(c *gin.Context, id string) {
	if st := auditStateOf(c); st != nil {
		st.resourceID = id
	}
}

// Detail adds key to the audit record's details. Never pass key
// material or secrets.
func Detail(c *gin.Context, key string, value any) {
	if st := auditStateOf(c); st != nil {
		st.detail(key, value)
	}
}

// SetError sets the error of the audit record, when the message answered
// is not the one to record. The tenant reads it back
// through GET /api/audit: give a summary, never an internal error's text
// (addresses, Redis or ClickHouse messages), which belongs in the log.
func SetError(c *gin.Context, msg string) {
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

// record completes rec from the request and appends it to the events
// stream. A failure is logged and counted: the answer is out already, and
// refusing the operation for its audit record would be worse than a gap
// the metric shows.
func (l *Log) record(c *gin.Context, st *auditState, p *accounts.Principal, rec events.AuditRecordedV1) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), l.cfg.RecordTimeout)
	defer cancel()
	rec.Timestamp = st.start.UTC().Truncate(time.Millisecond)
	rec.ResponseTimeMS = float64(time.Since(st.start).Microseconds()) / 1000
	rec.IP = c.RemoteIP()
	rec.Method = c.Request.Method
	rec.Route = c.FullPath()
	rec.Status = events.AuditSuccess
	// An error set with SetError is a failure whatever the status (the
	// dashboard answers a refused action with a redirect).
	if rec.HTTPStatus >= http.StatusBadRequest || rec.Operation == events.AuditOperationFailedAuth || rec.Error != "" {
		rec.Status = events.AuditFailure
	}
	var tenant string
	if p != nil {
		tenant, rec.KeyID = p.TenantID, p.KeyID
		rec.User = l.user(ctx, tenant)
	}
	if st.details == nil {
		rec.Details = json.RawMessage("{}")
	} else if d, err := json.Marshal(st.details); err == nil {
		rec.Details = d
	} else {
		rec.Details = json.RawMessage("{}")
		l.logger.Warn("audit details not marshalable", zap.String("operation", rec.Operation), zap.Error(err))
	}
	aggregate := rec.ResourceID
	if aggregate == "" {
		aggregate = rec.Operation
	}
	err := l.append(ctx, tenant, aggregate, rec)
	if err != nil {
		auditErrors.Inc()
		// The record goes to the log instead, so that it is not lost.
		l.logger.Error("audit record not stored", zap.String("operation", rec.Operation),
			zap.String("resource_type", rec.ResourceType), zap.String("resource_id", rec.ResourceID),
			zap.String("status", rec.Status), zap.String("tenant_id", tenant), zap.String("key_id", rec.KeyID),
			zap.String("ip", rec.IP), zap.Int("http_status", rec.HTTPStatus), zap.Error(err))
		return
	}
	auditRecords.WithLabelValues(rec.Operation, rec.Status).Inc()
}

// systemUser is the user of records of what certfleet did by itself.
const systemUser = "system"

// System records an operation certfleet did by itself, outside any
// request (an auto-renewal; one of SystemOperations, so that the log can
// be filtered on it before it first happens): user "system", no key, IP
// or route. errMsg
// is empty on success; like SetError's, the tenant reads it. A failure
// to append is logged and counted, and returned.
func (l *Log) System(ctx context.Context, tenantID, operation, resourceType, resourceID string,
	details map[string]any, errMsg string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.RecordTimeout)
	defer cancel()
	rec := events.AuditRecordedV1{
		Timestamp: time.Now().UTC().Truncate(time.Millisecond), Operation: operation, ResourceType: resourceType,
		ResourceID: resourceID, Status: events.AuditSuccess, User: systemUser, Details: json.RawMessage("{}"),
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
	if err := l.append(ctx, tenantID, aggregate, rec); err != nil {
		auditErrors.Inc()
		l.logger.Error("audit record not stored", zap.String("operation", operation), zap.String("resource_type", resourceType),
			zap.String("resource_id", resourceID), zap.String("status", rec.Status), zap.String("tenant_id", tenantID),
			zap.String("user", systemUser), zap.Error(err))
		return fmt.Errorf("append audit record: %w", err)
	}
	auditRecords.WithLabelValues(operation, rec.Status).Inc()
	return nil
}

func (l *Log) append(ctx context.Context, tenant, aggregate string, rec events.AuditRecordedV1) error {
	ev, err := events.New(events.AuditRecorded, tenant, aggregate, rec)
	if err != nil {
		return err
	}
	values, err := ev.StreamValues()
	if err != nil {
		return err
	}
	return l.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: events.EventStream(tenant), MaxLen: events.DefaultMaxLen, Approx: true, Values: values,
	}).Err()
}

// user names the tenant's account by its email; the tenant id is the
// fallback when it cannot be read.
func (l *Log) user(ctx context.Context, tenant string) string {
	if v, ok := l.emails.Load(tenant); ok {
		return v.(string)
	}
	email, err := l.accounts.Email(ctx, tenant)
	if err != nil || email == "" {
		if err != nil {
			l.logger.Warn("audit: read account email", zap.String("tenant_id", tenant), zap.Error(err))
		}
		return tenant
	}
	l.emails.Store(tenant, email)
	return email
}

// Routes serves GET /api/audit behind guard: the error renderer,
// authentication (a read key) and rate limits of the client certificate
// API, whose shapes the audit log API shares. Reading the audit log is
// itself audited.
func (l *Log) Routes(r *gin.Engine, guard ...gin.HandlerFunc) {
	hs := append([]gin.HandlerFunc{l.Audited("list", "audit_log")}, guard...)
	r.GET("/api/audit", append(hs, l.list)...)
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

// list answers the caller's tenant's audit records from ClickHouse,
// newest first. ClickHouse lags the stream by the sink's batching (about a
// second): a record of a request just answered may not be listed yet.
func (l *Log) list(c *gin.Context) {
	if !l.Queryable() {
		httpapi.Fail(c, errNoClickHouse)
		return
	}
	f, err := l.Filter(c)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	f.TenantID = httpapi.Principal(c).TenantID
	rows, err := l.Query(c.Request.Context(), f)
	if err != nil {
		SetError(c, "audit log query failed")
		httpapi.Fail(c, err)
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
	Detail(c, "count", len(rows))
	c.JSON(http.StatusOK, out)
}

var errNoClickHouse = httpapi.Errorf(http.StatusServiceUnavailable, "The audit log is not available: this server has no ClickHouse connection")

// Queryable tells whether the log can be read: the server has ClickHouse.
func (l *Log) Queryable() bool { return l.cfg.Conn != nil }

// Query returns the records f selects (f.TenantID's; f.Limit is capped
// to the configured maximum, and its zero is the default), newest first,
// within the configured query timeout; a 503 without ClickHouse.
func (l *Log) Query(ctx context.Context, f schema.AuditFilter) ([]schema.AuditRow, error) {
	if !l.Queryable() {
		return nil, errNoClickHouse
	}
	if f.Limit <= 0 {
		f.Limit = l.cfg.DefaultLimit
	}
	f.Limit = min(f.Limit, l.cfg.MaxLimit)
	ctx, cancel := context.WithTimeout(ctx, l.cfg.QueryTimeout)
	defer cancel()
	return schema.QueryAudit(ctx, l.cfg.Conn, f)
}

// Filter reads GET /api/audit's query parameters from c's request; an
// unknown or repeated parameter, or a bad value (an operation or a
// resource type no record has, CheckOperation), is a 400 naming it. The
// tenant is left for the caller to set. The dashboard's audit page reads
// its filter here too, so both refuse the same filters with the same
// words.
func (l *Log) Filter(c *gin.Context) (schema.AuditFilter, error) {
	f, err := l.filter(c)
	if err != nil {
		return f, httpapi.BadRequest(err.Error())
	}
	return f, nil
}

func (l *Log) filter(c *gin.Context) (schema.AuditFilter, error) {
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
		Status: q.Get("status"), Limit: l.cfg.DefaultLimit,
	}
	for name, v := range map[string]string{"operation": f.Operation, "resource_type": f.ResourceType, "resource_id": f.ResourceID} {
		if len(v) > maxAuditFilterLen {
			return f, fmt.Errorf("parameter %q is longer than %d characters", name, maxAuditFilterLen)
		}
	}
	if err := l.CheckOperation(f.Operation); err != nil {
		return f, err
	}
	if err := l.resourceTypes.check(f.ResourceType); err != nil {
		return f, err
	}
	if f.Status != "" && f.Status != events.AuditSuccess && f.Status != events.AuditFailure {
		return f, fmt.Errorf("status must be %q or %q, got %q", events.AuditSuccess, events.AuditFailure, f.Status)
	}
	// An empty limit is no limit here, as for the other parameters.
	if q.Get("limit") != "" {
		n, err := httpapi.PageParam(c, "limit", f.Limit, l.cfg.MaxLimit)
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
