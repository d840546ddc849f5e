// Package v1 serves the v1 REST API under /api/v1, modelled on
// SSLTrackr's: API keys, domains, SSL checks and manual checks, alerts and
// their settings, notification channels. Bearer keys with scopes, per-key
// rate limits shared by every replica, strict JSON bodies, and errors as
// {"error": "..."}.
package v1

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// Config configures the v1 API. The server fills every field.
type Config struct {
	// Now is the clock grades and statuses are computed against.
	Now func() time.Time
	// WarningDays and CriticalDays: a certificate expiring within this
	// many days has status warning or critical (and critical caps the
	// grade at B).
	WarningDays, CriticalDays int
	// CheckTimeout is how long POST /check waits for every active
	// region's scan before answering 504.
	CheckTimeout time.Duration
	// RateLimitGeneral, RateLimitCheck and RateLimitAPIKeys are requests
	// a minute per API key: general counts every request, check POST
	// /check, apikeys POST /api-keys.
	RateLimitGeneral, RateLimitCheck, RateLimitAPIKeys int
	// RateLimitChannelTests is test messages a minute per tenant (POST
	// /channels/{id}/test and the dashboard's Send test).
	RateLimitChannelTests int
	// Stopping is closed when the server begins to shut down, so that
	// requests that wait (a manual check) answer at once instead of
	// holding the shutdown up.
	Stopping <-chan struct{}
	// Quotas are the operator's default limits per tenant, shown by GET
	// /quotas with the tenant's overrides over them.
	Quotas quota.Limits
	// ManagedCerts keeps the DNS provider accounts (/dns-accounts) and
	// counts managed certificates and orders for /quotas.
	ManagedCerts *managedcert.Store
	// ClientCA counts the active client certificates for /quotas.
	ClientCA *clientca.Store
	// ClickHouse is where GET /domains/{id}/whois/history reads the
	// registration lookups and GET /domains/{id}/history,
	// /domains/{id}/certificates and /stats the scan results; nil answers
	// those routes 503.
	ClickHouse driver.Conn
	// RegionStaleAfter: a region none of whose agents was seen for this
	// long is shown stale by GET /regions. Default 10m.
	RegionStaleAfter time.Duration
	// Links opens the recipient confirmation links the notifier mails
	// (nil without a secrets passphrase: the confirmation page answers
	// 404).
	Links *claimlink.Links
}

// ChannelStore is what the channels API needs of the channel store: the
// tenant's channels, their delivery attempts and test messages. Every
// method is scoped to tenant; another tenant's id is not found.
type ChannelStore interface {
	List(ctx context.Context, tenant string) ([]channels.Channel, error)
	Create(ctx context.Context, tenant string, in channels.ChannelInput) (channels.Channel, error)
	Get(ctx context.Context, tenant, id string) (channels.Channel, error)
	Update(ctx context.Context, tenant, id string, in channels.ChannelInput) (channels.Channel, error)
	Delete(ctx context.Context, tenant, id string) error
	Attempts(ctx context.Context, tenant, id string, limit int) ([]channels.Attempt, error)
	EnqueueTest(ctx context.Context, tenant, id string) (string, error)
	Pending(ctx context.Context, tenant string, chs ...channels.Channel) ([][]string, error)
	RequestConfirmation(ctx context.Context, tenant, id, address string) error
	ConfirmRecipient(ctx context.Context, tenant, address string) error
}

// Handler serves the v1 API.
type Handler struct {
	cfg      Config
	rdb      redis.UniversalClient // views, region presence
	accounts *accounts.Store
	auth     *httpapi.Auth
	limits   *httpapi.Limiter
	alerts   *alerts.Engine
	channels ChannelStore
	render   gin.HandlerFunc
	logger   *zap.Logger
	// attention builds and sweeps the tenants' attention indexes when a
	// list finds one due (RunAttention).
	attention *domainindex.Sweeper
	// views keeps the decoded views the list's pages read, records the
	// decoded domains.
	views   *projector.ViewCache
	records *accounts.RecordCache
}

// New returns the v1 API of cfg.
func New(cfg Config, rdb redis.UniversalClient, store *accounts.Store, auth *httpapi.Auth, limits *httpapi.Limiter,
	engine *alerts.Engine, chans ChannelStore, logger *zap.Logger) *Handler {
	h := &Handler{cfg: cfg, rdb: rdb, accounts: store, auth: auth, limits: limits, alerts: engine, channels: chans,
		render: httpapi.Render(logger, style), logger: logger, views: projector.NewViewCache(0),
		records: accounts.NewRecordCache(0)}
	h.attention = domainindex.NewSweeper(rdb, accounts.DomainKeyPrefix, func() time.Time { return h.cfg.Now() },
		h.thresholds().Warning, h.thresholds().Critical, logger)
	return h
}

// RunAttention sweeps the tenants' attention indexes that lists found
// due, until ctx is done (domainindex.Sweeper).
func (h *Handler) RunAttention(ctx context.Context) error { return h.attention.Run(ctx) }

// Routes serves /api/v1/... . Each route group adds its own routes; each
// route states its scope and rate-limit classes.
func (h *Handler) Routes(r *gin.Engine) {
	g := r.Group("/api/v1", h.render)
	h.keyRoutes(g)
	h.quotaRoutes(g)
	h.regionRoutes(g)
	h.domainRoutes(g)
	h.checkRoutes(g)
	h.alertRoutes(g)
	h.channelRoutes(g)
	h.dnsAccountRoutes(g)
	h.historyRoutes(g)
}

// Rate limit classes beside httpapi.ClassGeneral, which every route counts
// against. ClassCheck is the manual checks' (POST /check here, Check now
// on the dashboard): each makes every region scan the domain at once.
// ClassChannelTests is the test messages' (POST /channels/{id}/test, Send
// test): each sends mail or a POST to an address the tenant chose, so it
// is counted per tenant, not per key (a tenant has up to 100 keys).
const (
	ClassCheck        = "check"
	ClassChannelTests = "channel_tests"
	classAPIKeys      = "apikeys"
)

// perTenant are the classes counted per tenant rather than per key.
var perTenant = map[string]bool{ClassChannelTests: true}

// guard returns the handlers a route starts with: its key holding scope,
// then the general limit and each class given, per key (Limits).
func (h *Handler) guard(scope string, classes ...string) []gin.HandlerFunc {
	return append([]gin.HandlerFunc{h.auth.RequireKey(scope)}, h.Limits(classes...)...)
}

// Limits returns the rate limits of a request whose key was accepted
// (its principal is set): the general limit, then each class given, per
// key (per tenant for ClassChannelTests). The dashboard's actions count against them as the API's routes
// do, so that signing in does not lift the API's limits.
func (h *Handler) Limits(classes ...string) []gin.HandlerFunc {
	rates := map[string]int{
		httpapi.ClassGeneral: h.cfg.RateLimitGeneral,
		ClassCheck:           h.cfg.RateLimitCheck,
		ClassChannelTests:    h.cfg.RateLimitChannelTests,
		classAPIKeys:         h.cfg.RateLimitAPIKeys,
	}
	var hs []gin.HandlerFunc
	for _, class := range append([]string{httpapi.ClassGeneral}, classes...) {
		lim := ratelimit.PerMinute(rates[class])
		if perTenant[class] {
			hs = append(hs, h.limits.PerTenant(class, lim))
		} else {
			hs = append(hs, h.limits.PerKey(class, lim))
		}
	}
	return hs
}

// existingBody is a 409 naming what the request found: SSLTrackr's error
// plus the id of the domain the caller already has under that name (POST
// /domains), or of the API key an earlier attempt of the same
// Idempotency-Key request created (POST /api-keys).
type existingBody struct {
	Error string `json:"error"`
	ID    string `json:"id"`
}

// errorBody is every v1 error answer, as SSLTrackr sends it.
type errorBody struct {
	Error string `json:"error"`
}

// Messages of the v1 API that clients may match on (SSLTrackr's wording).
const (
	msgNoDomain    = "Domain not found"
	msgDomainTaken = "This domain is already being monitored"
	msgNoChannel   = "Channel not found"
	msgNoSecrets   = "webhook secrets are disabled on this server (the operator has not set --secrets-passphrase): create the channel without a secret or ask the operator"
)

// style answers errors in the v1 shape.
var style = httpapi.Style{Answer: answer, Body: func(e *httpapi.Error) any { return errorBody{Error: e.Msg} }}

// answer gives each kind of error the stores return its status and
// message; httpapi's errors answer as they are.
func answer(err error) *httpapi.Error {
	var (
		fe *accounts.FieldError
		se *alerts.SettingsError
		ie *channels.InvalidError
	)
	status, msg := 0, err.Error()
	switch {
	// The store's own message, without what wrapped it.
	case errors.As(err, &fe):
		status, msg = http.StatusBadRequest, fe.Error()
	case errors.As(err, &se):
		status, msg = http.StatusBadRequest, se.Error()
	case errors.As(err, &ie):
		status, msg = http.StatusBadRequest, ie.Error()
	case domainname.IsInvalid(err),
		errors.Is(err, accounts.ErrBadLabel), errors.Is(err, accounts.ErrLabelControl), errors.Is(err, accounts.ErrBadScopes),
		errors.Is(err, accounts.ErrBadExpiry), errors.Is(err, accounts.ErrBadEmail):
		status = http.StatusBadRequest
	case errors.Is(err, accounts.ErrUnknownKey):
		status, msg = http.StatusUnauthorized, httpapi.MsgUnauthorized
	case errors.Is(err, accounts.ErrUnknownKeyID):
		status = http.StatusNotFound
	case errors.Is(err, accounts.ErrUnknownDomain):
		status, msg = http.StatusNotFound, msgNoDomain
	case errors.Is(err, accounts.ErrDomainExists):
		status, msg = http.StatusConflict, msgDomainTaken
	case errors.Is(err, channels.ErrNotFound):
		status, msg = http.StatusNotFound, msgNoChannel
	case errors.Is(err, claimlink.ErrRecipientInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, claimlink.ErrRecipientExpired):
		status = http.StatusGone
	case errors.Is(err, channels.ErrNoPassphrase):
		// The request can succeed at once without a secret; the server
		// is not failing, it lacks a setting: 400, saying which.
		status, msg = http.StatusBadRequest, msgNoSecrets
	default:
		return httpapi.AsError(err)
	}
	return &httpapi.Error{Status: status, Msg: msg}
}
