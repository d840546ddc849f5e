// Package operator is the operator's HTTP API: routes for the one who runs
// certfleet, not for tenants. It holds DELETE /api/operator/tenants/{email}
// (a tenant leaves, issue 16), the HTTP face of `certfleet tenant delete`:
// both run tenants.Deleter, so they remove the same things, append the
// same tenant.deleted.v1 record and report the same counts.
//
// The routes exist only when the operator sets a token
// (--operator-token-file). A request carries it as a bearer token; the
// server keeps only its SHA-256 and compares the request's hash with it
// in constant time. Requests are rate limited per client address before
// the token is checked, so guessing is as slow as the limit.
package operator

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/tenants"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/seal"
)

// MinTokenLen is the shortest operator token accepted: it guards every
// tenant's data.
const MinTokenLen = 32

// Source is tenant.deleted.v1's source for a deletion through this API
// (the CLI's is accounts.SourceCLI).
const Source = "operator-api"

// rateClass is the rate limit class of the operator routes.
const rateClass = "operator"

// Config configures the operator API.
type Config struct {
	// TokenHash is the SHA-256 of the operator token (HashToken).
	TokenHash [sha256.Size]byte
	// RateLimit is requests a minute per client address, shared by every
	// replica. Default 10.
	RateLimit int
}

// HashToken reads the operator token from path (its first line, as
// seal.ReadPassphraseFile reads a passphrase file), checks it is at least
// MinTokenLen characters and returns its SHA-256: the server keeps
// nothing else of it. The API server reads its other operator-set bearer
// tokens (the expiry metrics token) with it too; what names the token in
// errors.
func HashToken(what, path string) ([sha256.Size]byte, error) {
	tok, err := seal.ReadPassphraseFile(path)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("%s: %w", what, err)
	}
	if len(tok) < MinTokenLen {
		return [sha256.Size]byte{}, fmt.Errorf("%s in %s must be at least %d characters", what, path, MinTokenLen)
	}
	return sha256.Sum256([]byte(tok)), nil
}

// TokenMatches tells, in constant time, whether token's SHA-256 is hash.
func TokenMatches(token string, hash [sha256.Size]byte) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], hash[:]) == 1
}

// Handler serves the operator routes.
type Handler struct {
	cfg     Config
	deleter *tenants.Deleter
	limits  *httpapi.Limiter
	logger  *zap.Logger
}

// New returns the operator API deleting tenants with d (whose Source it
// sets to Source).
func New(cfg Config, d *tenants.Deleter, limits *httpapi.Limiter, logger *zap.Logger) (*Handler, error) {
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 10
	}
	if cfg.RateLimit < 0 {
		return nil, fmt.Errorf("operator rate limit must not be negative, got %d", cfg.RateLimit)
	}
	if cfg.TokenHash == ([sha256.Size]byte{}) {
		return nil, errors.New("operator api: no token hash")
	}
	dd := *d
	dd.Source = Source
	return &Handler{cfg: cfg, deleter: &dd, limits: limits, logger: logger.Named("operator")}, nil
}

type errorBody struct {
	Error string `json:"error"`
}

var style = httpapi.Style{Answer: answer, Body: func(e *httpapi.Error) any { return errorBody{Error: e.Msg} }}

// ErrorStyle is how the operator API answers errors; the server answers
// unknown paths and methods under /api/operator with it too.
func ErrorStyle() httpapi.Style { return style }

func answer(err error) *httpapi.Error {
	var he *httpapi.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, accounts.ErrBadEmail):
		return &httpapi.Error{Status: http.StatusBadRequest, Msg: err.Error()}
	case errors.Is(err, tenants.ErrUnknownAccount):
		return &httpapi.Error{Status: http.StatusNotFound, Msg: "no such account"}
	}
	return nil
}

// Routes adds the operator routes to r.
func (h *Handler) Routes(r *gin.Engine) {
	g := r.Group("/api/operator", httpapi.Render(h.logger, style),
		h.limits.PerAddress(rateClass, ratelimit.PerMinute(h.cfg.RateLimit)), h.requireToken)
	g.DELETE("/tenants/:email", h.deleteTenant)
}

// requireToken lets a request on only with the operator token.
func (h *Handler) requireToken(c *gin.Context) {
	tok, _ := httpapi.BearerToken(c.GetHeader("Authorization"))
	if !TokenMatches(tok, h.cfg.TokenHash) {
		httpapi.Fail(c, httpapi.Errorf(http.StatusUnauthorized, "operator token required"))
		return
	}
	c.Next()
}

// Report is the answer of DELETE /tenants/{email}: what was removed, as
// `certfleet tenant delete` prints it.
type Report struct {
	TenantID string `json:"tenant_id"`
	// Existed is false when the account was deleted before.
	Existed bool `json:"existed"`
	// Removed counts what was removed, by kind.
	Removed map[string]int64 `json:"removed"`
	// ClickHouseTables are the tables a DELETE mutation was issued on.
	ClickHouseTables []string `json:"clickhouse_tables"`
	// CaughtUp is false when the projector or the sink had not read the
	// deletion's events in time: delete again later.
	CaughtUp bool `json:"caught_up"`
	// EventID is the tenant.deleted.v1 record; null when nothing was
	// removed.
	EventID *string `json:"event_id"`
}

// deleteTenant is DELETE /tenants/{email}.
func (h *Handler) deleteTenant(c *gin.Context) {
	rep, err := h.deleter.Delete(c.Request.Context(), c.Param("email"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out := Report{TenantID: rep.TenantID, Existed: rep.Existed, Removed: rep.Removed, ClickHouseTables: rep.ClickHouseTables,
		CaughtUp: rep.CaughtUp, EventID: httpapi.NullIfEmpty(rep.EventID)}
	if out.ClickHouseTables == nil {
		out.ClickHouseTables = []string{}
	}
	h.logger.Info("tenant deleted through the operator api", zap.String("tenant_id", rep.TenantID),
		zap.Bool("existed", rep.Existed), zap.String("ip", c.RemoteIP()))
	c.JSON(http.StatusOK, out)
}
