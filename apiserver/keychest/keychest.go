// Package keychest serves the KeyChest-compatible API under /api/v1.0:
// claiming an API key for an email, adding servers and reading their
// certificates' expiration, with KeyChest's field names and its error
// shape ({"status": "error", "error": msg}).
package keychest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// Config configures the KeyChest API.
type Config struct {
	// RenewalWindow: a certificate expiring within it is renewal_due.
	RenewalWindow time.Duration
	// Now is the clock renewal_due and expired are computed against.
	Now func() time.Time
	// RateLimitGeneral is requests a minute per api_key (and per client
	// address for the claim calls), shared with the v1 API's general class.
	RateLimitGeneral int
	// RateLimitClaimAccounts is the accounts the claim calls may create
	// an hour per client address (an IPv6 /64), across replicas: anyone
	// may claim, and each new account brings room for held keys and the
	// servers they add, which the agents scan. Claims for an account that
	// exists do not count. Default 10.
	RateLimitClaimAccounts int
	// Claims is the policy of the claim calls: ClaimsApprove (the keys
	// they hand out are held until the account approves them, see
	// accounts/held.go; the accounts store must hold claims), ClaimsOpen
	// or ClaimsOff. Default ClaimsApprove.
	Claims string
}

// DefaultRateLimitClaimAccounts is Config.RateLimitClaimAccounts's default.
const DefaultRateLimitClaimAccounts = 10

// classClaimAccounts is the rate limit class of the accounts claims
// create, counted per client address.
const classClaimAccounts = "claimaccount"

// Claim policies (--keychest-claim).
const (
	ClaimsApprove = "approve"
	ClaimsOpen    = "open"
	ClaimsOff     = "off"
)

// Handler serves the KeyChest API.
type Handler struct {
	cfg      Config
	rdb      redis.UniversalClient // the projector's views
	accounts *accounts.Store
	auth     *httpapi.Auth // admits requests through their tenant's limit in flight
	limits   *httpapi.Limiter
	links    *claimlink.Links // opens mailed approval links; nil: none are mailed
	render   gin.HandlerFunc
}

// New returns the KeyChest API of cfg. links opens the approval links the
// notifier mails (nil when there is no secrets passphrase).
func New(cfg Config, rdb redis.UniversalClient, store *accounts.Store, auth *httpapi.Auth, limits *httpapi.Limiter,
	links *claimlink.Links, logger *zap.Logger) *Handler {
	if cfg.Claims == "" {
		cfg.Claims = ClaimsApprove
	}
	if cfg.RateLimitClaimAccounts == 0 {
		cfg.RateLimitClaimAccounts = DefaultRateLimitClaimAccounts
	}
	return &Handler{cfg: cfg, rdb: rdb, accounts: store, auth: auth, limits: limits, links: links, render: httpapi.Render(logger, Style)}
}

// Routes serves /api/v1.0/... .
func (h *Handler) Routes(r *gin.Engine) {
	g := r.Group("/api/v1.0", h.render)
	byAddress := h.limits.PerAddress(httpapi.ClassGeneral, ratelimit.PerMinute(h.cfg.RateLimitGeneral))
	g.GET("/access/claim/:email", byAddress, h.claimGenerated)
	g.POST("/access/claim", byAddress, h.claimOwn)
	g.GET("/access/confirm/:token", byAddress, h.confirmPage)
	g.POST("/access/confirm/:token", byAddress, h.confirm)
	g.POST("/servers/add", h.limitKey(), h.addServer)
	g.GET("/servers/expiration/:domain", h.limitKey(), h.expiration)
}

// errorBody is every KeyChest error answer: KeyChest's status field plus
// a message.
type errorBody struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

// Style answers errors in KeyChest's shape. The server's own answers (no
// such route, a panic) use it too for paths under no other API.
var Style = httpapi.Style{Answer: answer, Body: func(e *httpapi.Error) any { return errorBody{Status: "error", Error: e.Msg} }}

// answer gives each kind of error its status.
func answer(err error) *httpapi.Error {
	status := 0
	switch {
	case domainname.IsInvalid(err), errors.Is(err, accounts.ErrBadEmail), errors.Is(err, accounts.ErrBadKey):
		status = http.StatusBadRequest
	case errors.Is(err, accounts.ErrUnknownKey):
		status = http.StatusUnauthorized
	case errors.Is(err, accounts.ErrKeyTaken):
		status = http.StatusConflict
	case errors.Is(err, accounts.ErrUnknownDomain), errors.Is(err, accounts.ErrUnknownKeyID):
		status = http.StatusNotFound
	case errors.Is(err, claimlink.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, claimlink.ErrExpired):
		status = http.StatusGone
	default:
		return httpapi.AsError(err)
	}
	return &httpapi.Error{Status: status, Msg: err.Error()}
}

// readFields reads the named string fields of a JSON object body or of a
// form-encoded body. A body that starts with '{' is JSON whatever its
// Content-Type, since `curl -d '{...}'` without -H sends JSON labelled as a
// form.
func readFields(c *gin.Context, names ...string) (map[string]string, error) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		return nil, httpapi.ReadError(err)
	}
	return parseFields(body, c.GetHeader("Content-Type"), names...)
}

// parseFields reads the named string fields of body, JSON or a form.
func parseFields(body []byte, contentType string, names ...string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	trimmed := bytes.TrimSpace(body)
	ct, _, _ := mime.ParseMediaType(contentType)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, httpapi.BadRequest("request body is not valid JSON")
		}
		if err := httpapi.CheckDuplicateKeys(trimmed); err != nil {
			return nil, err
		}
		for _, n := range names {
			raw, ok := obj[n]
			if !ok || string(raw) == "null" {
				continue
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, httpapi.BadRequest(fmt.Sprintf("%s must be a string", n))
			}
			out[n] = v
		}
	case ct == "application/x-www-form-urlencoded" || (ct == "" && len(trimmed) > 0):
		form, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return nil, httpapi.BadRequest("request body is not a valid form")
		}
		for _, n := range names {
			if v, ok := form[n]; ok && len(v) > 0 {
				out[n] = v[0]
			}
		}
	case len(trimmed) == 0:
		return nil, httpapi.BadRequest("request body is empty; send JSON such as {\"" + names[0] + "\":...}")
	default:
		return nil, httpapi.BadRequest("unsupported content type " + ct + "; send application/json")
	}
	for _, n := range names {
		if out[n] == "" {
			return nil, httpapi.BadRequest(n + " is required")
		}
	}
	return out, nil
}

// claimResponse answers both claim calls.
type claimResponse struct {
	Status string `json:"status"`
	User   string `json:"user"`
	APIKey string `json:"api_key"`
}

// errClaimsOff answers the claim calls when the operator turned them off.
var errClaimsOff = httpapi.Errorf(http.StatusForbidden,
	"claiming keys is turned off on this server; ask its operator for a key (certfleet apikey create)")

// claimGenerated is GET /access/claim/{email}: a new random key for the
// account of email.
func (h *Handler) claimGenerated(c *gin.Context) {
	if h.cfg.Claims == ClaimsOff {
		httpapi.Fail(c, errClaimsOff)
		return
	}
	email := c.Param("email")
	if !h.accountsLeft(c, email) {
		return
	}
	key, err := h.accounts.ClaimNew(c.Request.Context(), email)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, claimResponse{Status: "created", User: email, APIKey: key})
}

// accountsLeft tells whether a claim for email may go on. A claim that
// would create the account counts against the accounts its client
// address may create (Config.RateLimitClaimAccounts); past that it fails
// with 429. An email that does not parse goes on, for the claim to
// answer.
func (h *Handler) accountsLeft(c *gin.Context, email string) bool {
	parsed, err := accounts.ParseEmail(email)
	if err != nil {
		return true
	}
	exists, err := h.accounts.Exists(c.Request.Context(), events.TenantID(parsed))
	if err != nil {
		httpapi.Fail(c, err)
		return false
	}
	if exists {
		return true
	}
	n := h.cfg.RateLimitClaimAccounts
	h.limits.Allow(c, httpapi.AddressSubject(classClaimAccounts, c), ratelimit.Limit{Rate: n, Period: time.Hour, Burst: n})
	return !c.IsAborted()
}

// claimOwn is POST /access/claim {"email","api_key"}: the client's own key.
func (h *Handler) claimOwn(c *gin.Context) {
	if h.cfg.Claims == ClaimsOff {
		httpapi.Fail(c, errClaimsOff)
		return
	}
	f, err := readFields(c, "email", "api_key")
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if !h.accountsLeft(c, f["email"]) {
		return
	}
	created, err := h.accounts.Claim(c.Request.Context(), f["email"], f["api_key"])
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	status := "success"
	if created {
		status = "created"
	}
	c.JSON(http.StatusOK, claimResponse{Status: status, User: f["email"], APIKey: f["api_key"]})
}

type addResponse struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	// Key is KeyChest's "internal representation of the domain name":
	// here always host:port.
	Key    string `json:"key"`
	Domain string `json:"domain"`
}

// addServer is POST /servers/add {"api_key","domain"}.
func (h *Handler) addServer(c *gin.Context) {
	f, err := readFields(c, "api_key", "domain")
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	host, port, err := domainname.Parse(f["domain"])
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	p, err := h.principal(c, f["api_key"])
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	nd := accounts.NewDomain{Host: host, Port: port, Source: accounts.Source}
	if p.Held {
		nd.HeldBy = p.KeyID
	}
	d, _, err := h.accounts.AddDomain(ctx, p.TenantID, nd)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, addResponse{Status: "success", ID: d.ID, Key: d.Name(), Domain: domainname.Format(d.Host, d.Port)})
}

// expirationResult is one IP seen from one region. The certificate fields
// are null when no certificate was seen, as KeyChest does.
type expirationResult struct {
	IP                string  `json:"ip"`
	Region            string  `json:"region"`
	Port              int     `json:"port"`
	CertificateFound  bool    `json:"certificate_found"`
	CertificateSHA256 *string `json:"certificate_sha256"`
	RenewalDue        *bool   `json:"renewal_due"`
	Expired           *bool   `json:"expired"`
	RenewalUTC        *int64  `json:"renewal_utc"`
	LastScanUTC       int64   `json:"last_scan_utc"`
	ChainValid        bool    `json:"chain_valid"`
	HostnameValid     bool    `json:"hostname_valid"`
	TLSVersion        string  `json:"tls_version"`
	Issuer            string  `json:"issuer"`
	// Error is the outcome when the scan of this IP did not end in "ok".
	Error string `json:"error"`
	// Detail refines Error or a failed validation (a TLS alert name, an
	// x509 error kind such as "unknown-authority"); an addition to KeyChest.
	Detail string `json:"detail,omitempty"`
}

type expirationResponse struct {
	Domain           string             `json:"domain"`
	CertificateFound bool               `json:"certificate_found"`
	RenewalDue       bool               `json:"renewal_due"`
	ExpiredFound     bool               `json:"expired_found"`
	Results          []expirationResult `json:"results"`
	Status           string             `json:"status"`
}

// expiration is GET /servers/expiration/{domain}?api_key=.
func (h *Handler) expiration(c *gin.Context) {
	host, port, err := domainname.Parse(c.Param("domain"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	key := c.Query("api_key")
	if key == "" {
		httpapi.Fail(c, httpapi.BadRequest("api_key is required"))
		return
	}
	ctx := c.Request.Context()
	p, err := h.principal(c, key)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	domainID, err := h.accounts.LookupDomain(ctx, p.TenantID, host, port)
	if err == nil {
		// A held key reads only what it added; the rest of the account
		// is unknown to it, as another tenant's domain is.
		err = h.accounts.CanRead(ctx, p, domainID)
	}
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	views, err := projector.Views(ctx, h.rdb, []string{domainID})
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, h.expirationOf(domainname.Format(host, port), views[domainID].For(domainname.Key(host, port))))
}

// expirationOf computes the KeyChest answer from the view at cfg.Now.
func (h *Handler) expirationOf(domain string, entries []projector.ExpEntry) expirationResponse {
	now := h.cfg.Now()
	resp := expirationResponse{Domain: domain, Results: make([]expirationResult, 0, len(entries)), Status: "success"}
	for _, e := range entries {
		r := expirationResult{
			IP:               e.IP,
			Region:           e.Region,
			Port:             e.Port,
			CertificateFound: e.CertificateFound,
			LastScanUTC:      e.ScannedAt.Unix(),
			ChainValid:       e.ChainValid,
			HostnameValid:    e.HostnameValid,
			TLSVersion:       e.TLSVersion,
			Issuer:           e.Issuer,
			Detail:           e.Detail,
		}
		if e.Outcome != events.OutcomeOK {
			r.Error = string(e.Outcome)
		}
		if e.CertificateFound && e.NoExpiry {
			// RFC 5280's "no well-defined expiration": never due, never
			// expired, and no renewal time to give.
			sha, no := e.LeafSHA256, false
			r.CertificateSHA256, r.RenewalDue, r.Expired = &sha, &no, &no
			resp.CertificateFound = true
		} else if e.CertificateFound {
			sha, renewal := e.LeafSHA256, e.NotAfter.Unix()
			due, expired := e.NotAfter.Sub(now) < h.cfg.RenewalWindow, e.NotAfter.Before(now)
			r.CertificateSHA256, r.RenewalUTC, r.RenewalDue, r.Expired = &sha, &renewal, &due, &expired
			resp.CertificateFound = true
			resp.RenewalDue = resp.RenewalDue || due
			resp.ExpiredFound = resp.ExpiredFound || expired
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}

// confirmResponse answers an approval link.
type confirmResponse struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	KeyID   string `json:"key_id"`
}

// confirmPage is GET /access/confirm/{token}, the link mailed to an
// account for a held claim: a page that names the key and approves it
// only when its button is pressed (a POST to the same address, confirm).
// The GET itself changes nothing, because mail gateways and link
// scanners (Safe Links, URL Defense, ...) fetch every link of a message
// before anyone reads it: if the GET approved, the claimer's key, whose
// secret the claimer holds, would be approved by the victim's own mail
// filter. An invalid or expired link answers as the POST would.
func (h *Handler) confirmPage(c *gin.Context) {
	claim, ok := h.openLink(c)
	if !ok {
		return
	}
	httpapi.LinkPage(c, confirmTemplate, claim)
}

// confirmTemplate is the approval page: one form posting back to the
// page's own address.
var confirmTemplate = template.Must(template.New("confirm").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Approve a claimed API key</title></head>
<body><main>
<h1>Approve a claimed API key</h1>
<p>Someone claimed a KeyChest API key (id <code>{{.KeyID}}</code>) for this certfleet account.
Approving it lets the key read and change the whole account.</p>
<p>Approve it only if you or someone you trust made the claim. If not, close this page: the key stays limited.</p>
<form method="post"><button type="submit">Approve the key</button></form>
<p>This link works until {{.ExpiresAt.UTC.Format "2006-01-02 15:04 UTC"}}.</p>
</main></body></html>
`))

// openLink opens the token of an approval link, answering the error
// when it is not a valid, unexpired link of this server.
func (h *Handler) openLink(c *gin.Context) (claimlink.Claim, bool) {
	if h.links == nil {
		httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, "approval links are not enabled on this server"))
		return claimlink.Claim{}, false
	}
	claim, err := h.links.Open(c.Request.Context(), c.Param("token"))
	if err != nil {
		httpapi.Fail(c, err)
		return claimlink.Claim{}, false
	}
	return claim, true
}

// confirm is POST /access/confirm/{token}, the approval page's button:
// it approves the key (accounts/held.go). Approving twice approves once.
func (h *Handler) confirm(c *gin.Context) {
	claim, ok := h.openLink(c)
	if !ok {
		return
	}
	if _, err := h.accounts.ApproveKey(c.Request.Context(), claim.TenantID, claim.KeyID); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, confirmResponse{Status: "success", Message: "the key is approved: it now reads the whole account", KeyID: claim.KeyID})
}
