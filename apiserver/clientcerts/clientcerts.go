// Package clientcerts serves the private CA's client-certificate API in
// CertMate's shapes: the certificates (create, batch, list, get, download,
// revoke, renew), the CA certificate, the CRL and OCSP, and the
// auto-renewal loop (RunRenewal). Bearer ssa_ keys (write for changes,
// read for reads), CertMate's per-key rate limits and its error shapes;
// every operation is audited (apiserver/audit).
package clientcerts

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/idempotency"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/replicated"
)

// Rate limit classes of the CertMate API, per key, requests a minute as
// CertMate documents them (fixed: clients written for CertMate expect
// them). Every CertMate route counts against cm-general; creation, batch,
// OCSP status and CRL downloads also against their own class.
const (
	RateGeneral = 100
	RateCreate  = 30
	RateBatch   = 10
	RateOCSP    = 200
	RateCRL     = 60
)

// Class is a rate limit class of the CertMate API.
type Class struct {
	name string
	rate int
}

// The classes of the CertMate API.
var (
	ClassGeneral = Class{"cm-general", RateGeneral}
	ClassCreate  = Class{"cm-create", RateCreate}
	ClassBatch   = Class{"cm-batch", RateBatch}
	ClassOCSP    = Class{"cm-ocsp", RateOCSP}
	ClassCRL     = Class{"cm-crl", RateCRL}
)

// errorBody is every CertMate error answer but 429. Code is a stable
// upper-case name of the kind of error (CertMate's "ERROR_CODE"); Status
// repeats the HTTP status.
type errorBody struct {
	Error  string `json:"error"`
	Code   string `json:"code"`
	Status int    `json:"status"`
}

// rateLimitedBody is CertMate's 429 answer.
type rateLimitedBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	RetryAfter int    `json:"retry_after"`
}

// msgRateLimited is the error of every CertMate 429.
const msgRateLimited = "Rate limit exceeded"

// style answers errors in CertMate's shapes: an *httpapi.Error as it is
// (a 429 with CertMate's own message), anything else as a 500.
var style = httpapi.Style{
	Answer: func(err error) *httpapi.Error {
		e := httpapi.AsError(err)
		if e != nil && e.Status == http.StatusTooManyRequests {
			return &httpapi.Error{Status: e.Status, Msg: msgRateLimited, RetryAfter: e.RetryAfter}
		}
		return e
	},
	Body: func(e *httpapi.Error) any {
		if e.Status == http.StatusTooManyRequests {
			return rateLimitedBody{Error: e.Msg, Message: "Too many requests. Please try again later.",
				RetryAfter: max(e.RetryAfter, 1)}
		}
		return errorBody{Error: e.Msg, Code: e.Code(), Status: e.Status}
	},
}

// Guard returns the handlers every authenticated CertMate route starts
// with: CertMate's error renderer, the key holding scope (a refused key
// audited), and the per-key limits of cm-general and of each class given.
// The audit log API uses it too.
func (h *Handler) Guard(scope string, classes ...Class) []gin.HandlerFunc {
	hs := []gin.HandlerFunc{h.render, h.requireKey(scope)}
	for _, class := range append([]Class{ClassGeneral}, classes...) {
		hs = append(hs, h.limits.PerKey(class.name, ratelimit.PerMinute(class.rate)))
	}
	return hs
}

// requireKey is httpapi's RequireKey that also audits a refused key (401,
// 403): on an audited route it adds the reason to the request's record,
// on any other it records the refusal.
func (h *Handler) requireKey(scope string) gin.HandlerFunc {
	auth := h.auth.RequireKey(scope)
	return func(c *gin.Context) {
		auth(c) // runs the rest of the chain when the key is accepted
		if _, accepted := httpapi.PrincipalOf(c); accepted || !c.IsAborted() {
			return
		}
		var e *httpapi.Error
		if last := c.Errors.Last(); last != nil {
			e = httpapi.AsError(last.Err)
		}
		switch {
		case e == nil:
		case e.Status == http.StatusUnauthorized:
			h.audit.FailedAuth(c, e.Status, nil, "missing or invalid API key")
		case e.Status == http.StatusForbidden:
			h.audit.FailedAuth(c, e.Status, nil, "API key lacks the "+scope+" permission")
		}
	}
}

// PublicGuard returns the handlers of a CertMate route served without a
// key (the CA certificate, the CRL distribution point): CertMate's error
// renderer, and cm-general and each class given limited per client
// address.
func (h *Handler) PublicGuard(classes ...Class) []gin.HandlerFunc {
	hs := []gin.HandlerFunc{h.render}
	for _, class := range append([]Class{ClassGeneral}, classes...) {
		hs = append(hs, h.limits.PerAddress(class.name, ratelimit.PerMinute(class.rate)))
	}
	return hs
}

// audited is Guard with the audit record of operation on a certificate
// before it, so that refused keys are recorded too.
func (h *Handler) audited(operation, scope string, classes ...Class) []gin.HandlerFunc {
	return append([]gin.HandlerFunc{h.audit.Audited(operation, auditResource)}, h.Guard(scope, classes...)...)
}

// read is Guard for a read: only a refused key is audited (as
// failed_auth, naming the operation attempted).
func (h *Handler) read(operation string) []gin.HandlerFunc {
	return append([]gin.HandlerFunc{h.audit.Refusals(operation, auditResource)}, h.Guard(accounts.ScopeRead)...)
}

// auditResource is the audit log's resource type of client certificates.
const auditResource = audit.ResourceCertificate

// Routes serves /api/ca/certificate, /api/client-certs/..., and the
// revocation routes (revocation.go). The auto-renewal loop is RunRenewal,
// an actor of the process.
func (h *Handler) Routes(r *gin.Engine) {
	with := func(hs []gin.HandlerFunc, handler gin.HandlerFunc) []gin.HandlerFunc { return append(hs, handler) }
	read, write := accounts.ScopeRead, accounts.ScopeWrite
	r.GET("/api/ca/certificate", with(h.PublicGuard(), h.caCertificate)...)
	g := r.Group("/api/client-certs")
	g.POST("/create", with(h.audited("create", write, ClassCreate), h.create)...)
	g.POST("/batch", with(h.audited("batch", write, ClassBatch), h.batch)...)
	g.GET("", with(h.read("list"), h.list)...)
	g.GET("/stats", with(h.read("stats"), h.stats)...)
	g.GET("/:id", with(h.read("get"), h.get)...)
	g.GET("/:id/download/:type", with(h.audited("download", read), h.download)...)
	g.POST("/:id/revoke", with(h.audited("revoke", write), h.revoke)...)
	g.POST("/:id/renew", with(h.audited("renew", write), h.renew)...)
	h.revocationRoutes(r)
}

// fail reports err for CertMate's renderer, as Explain explains it.
func fail(c *gin.Context, id string, err error) { httpapi.Fail(c, Explain(id, err)) }

// Explain returns err of the client CA's store as the answer it calls
// for (id names the certificate in messages): its refusals as
// *httpapi.Error, anything else as it is (httpapi's errors as they are,
// the rest a logged 500 whose cause is never answered nor audited:
// tenants read their audit records). The dashboard's pages use it too.
func Explain(id string, err error) error {
	status, msg := http.StatusInternalServerError, ""
	switch {
	case errors.Is(err, clientca.ErrInvalid):
		status, msg = http.StatusBadRequest, invalidMessage(err)
	case errors.Is(err, clientca.ErrNotFound):
		status, msg = http.StatusNotFound, "Certificate not found: "+id
	case errors.Is(err, clientca.ErrNoKey):
		status, msg = http.StatusNotFound, "Private key not available for "+id+": the certificate was issued for a CSR"
	case errors.Is(err, clientca.ErrAlreadyRevoked):
		status, msg = http.StatusConflict, "Certificate already revoked: "+id
	case errors.Is(err, clientca.ErrRevoked):
		status, msg = http.StatusConflict, "Certificate is revoked: "+id
	case errors.Is(err, clientca.ErrAlreadyRenewed):
		status, msg = http.StatusConflict, "Certificate already renewed: "+id+" (renew the newest one)"
	case errors.Is(err, clientca.ErrNoCA):
		status, msg = http.StatusServiceUnavailable, "The client CA is not initialised"
	case errors.Is(err, clientca.ErrNoPassphrase):
		status, msg = http.StatusServiceUnavailable, "This server cannot sign or unseal: no CA passphrase configured"
	}
	if msg != "" {
		return httpapi.Errorf(status, msg)
	}
	return err
}

// invalidMessage is the message of a clientca.ErrInvalid (one or several
// joined), without the sentinel's prefix.
func invalidMessage(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, clientca.ErrInvalid.Error()+": ")
	}
	return strings.Join(lines, "; ")
}

// caCertificate is GET /api/ca/certificate: the issuing CA in PEM, without
// a key (it is no secret, and the servers that must trust it have none).
func (h *Handler) caCertificate(c *gin.Context) {
	info, err := h.store.Info(c.Request.Context())
	if err != nil {
		fail(c, "", err)
		return
	}
	c.Header("Content-Disposition", `inline; filename="ca.crt"`)
	c.Data(http.StatusOK, "application/x-pem-file", info.PEM)
}

// cmCreateRequest is POST /client-certs/create's body: CertMate's fields,
// plus key_type and the renewal settings CertMate shows on a certificate.
type cmCreateRequest struct {
	CommonName         string `json:"common_name"`
	Email              string `json:"email"`
	Organization       string `json:"organization"`
	OrganizationalUnit string `json:"organizational_unit"`
	CertUsage          string `json:"cert_usage"`
	DaysValid          *int   `json:"days_valid"`
	// GenerateKey defaults to true.
	GenerateKey          *bool  `json:"generate_key"`
	CSR                  string `json:"csr"`
	KeyType              string `json:"key_type"`
	Notes                string `json:"notes"`
	RenewalEnabled       *bool  `json:"renewal_enabled"`
	RenewalThresholdDays *int   `json:"renewal_threshold_days"`
}

// toStore is the store's request. An explicit 0 for days_valid or
// renewal_threshold_days is refused: to the store, 0 means "the default".
func (r cmCreateRequest) toStore() (clientca.CreateRequest, error) {
	out := clientca.CreateRequest{
		CommonName: r.CommonName, Email: r.Email, Organization: r.Organization,
		OrganizationalUnit: r.OrganizationalUnit, Usage: r.CertUsage, GenerateKey: r.GenerateKey == nil || *r.GenerateKey,
		CSR: []byte(r.CSR), KeyType: r.KeyType, Notes: r.Notes, RenewalEnabled: r.RenewalEnabled,
	}
	if r.DaysValid != nil {
		if *r.DaysValid == 0 {
			return out, httpapi.BadRequest(fmt.Sprintf("days_valid must be 1 to %d, got 0", clientca.MaxDaysValid))
		}
		out.DaysValid = *r.DaysValid
	}
	if r.RenewalThresholdDays != nil {
		if *r.RenewalThresholdDays == 0 {
			return out, httpapi.BadRequest("renewal_threshold_days must be 1 to 365 and below days_valid, got 0")
		}
		out.RenewalThresholdDays = *r.RenewalThresholdDays
	}
	return out, nil
}

// cmCreated answers a creation or a renewal.
type cmCreated struct {
	Identifier   string    `json:"identifier"`
	CommonName   string    `json:"common_name"`
	SerialNumber string    `json:"serial_number"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	CertUsage    string    `json:"cert_usage"`
	Status       string    `json:"status"`
	RenewedFrom  string    `json:"renewed_from,omitempty"`
}

func (h *Handler) createdOf(cert clientca.Cert) cmCreated {
	return cmCreated{Identifier: cert.ID, CommonName: cert.CommonName, SerialNumber: cert.Serial.String(),
		CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, CertUsage: cert.Usage,
		Status: cert.Status(h.cfg.Now()), RenewedFrom: cert.RenewedFrom}
}

// create is POST /client-certs/create.
func (h *Handler) create(c *gin.Context) {
	var req cmCreateRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		fail(c, "", err)
		return
	}
	audit.Detail(c, "common_name", req.CommonName)
	audit.Detail(c, "usage", req.CertUsage)
	audit.Detail(c, "generate_key", req.GenerateKey == nil || *req.GenerateKey)
	sreq, err := req.toStore()
	if err != nil {
		fail(c, "", err)
		return
	}
	if sreq.Idempotency, err = httpapi.Idempotency(c, req); err != nil {
		fail(c, "", err)
		return
	}
	cert, err := h.store.Create(c.Request.Context(), httpapi.Principal(c).TenantID, sreq)
	if err != nil {
		fail(c, "", err)
		return
	}
	audit.Resource(c, cert.ID)
	audit.Detail(c, "serial_number", cert.Serial.String())
	if cert.Replayed {
		audit.Detail(c, "replayed", true)
	}
	httpapi.Created(c, cert.Replayed, h.createdOf(cert))
}

// cmListItem is a certificate in a list, as CertMate shows it (plus email
// and serial_number).
type cmListItem struct {
	Identifier   string    `json:"identifier"`
	CommonName   string    `json:"common_name"`
	Email        string    `json:"email"`
	Organization string    `json:"organization"`
	CertUsage    string    `json:"cert_usage"`
	SerialNumber string    `json:"serial_number"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	Revoked      bool      `json:"revoked"`
	Status       string    `json:"status"`
}

type cmList struct {
	Certificates []cmListItem `json:"certificates"`
	Total        int          `json:"total"`
}

// list is GET /client-certs?usage&revoked&search, newest first.
func (h *Handler) list(c *gin.Context) {
	f := clientca.Filter{Usage: c.Query("usage"), Search: c.Query("search")}
	if v, ok := c.GetQuery("revoked"); ok {
		if v != "true" && v != "false" {
			httpapi.Fail(c, httpapi.BadRequest(fmt.Sprintf("revoked must be true or false, got %q", v)))
			return
		}
		revoked := v == "true"
		f.Revoked = &revoked
	}
	certs, err := h.store.List(c.Request.Context(), httpapi.Principal(c).TenantID, f)
	if err != nil {
		fail(c, "", err)
		return
	}
	now := h.cfg.Now()
	out := cmList{Certificates: make([]cmListItem, 0, len(certs)), Total: len(certs)}
	for _, cert := range certs {
		out.Certificates = append(out.Certificates, cmListItem{Identifier: cert.ID, CommonName: cert.CommonName,
			Email: cert.Email, Organization: cert.Organization, CertUsage: cert.Usage, SerialNumber: cert.Serial.String(),
			CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, Revoked: cert.Revoked, Status: cert.Status(now)})
	}
	c.JSON(http.StatusOK, out)
}

// cmStats is GET /client-certs/stats's answer.
type cmStats struct {
	Total        int            `json:"total"`
	Active       int            `json:"active"`
	Revoked      int            `json:"revoked"`
	Expired      int            `json:"expired"`
	ExpiringSoon int            `json:"expiring_soon"`
	ByUsage      map[string]int `json:"by_usage"`
	// CreatedCount counts every certificate created for the account,
	// renewals included; records are never deleted, so it equals Total.
	CreatedCount int `json:"created_count"`
	// RenewalEnabled counts active certificates that auto-renewal will
	// renew.
	RenewalEnabled int `json:"renewal_enabled"`
}

// stats is GET /client-certs/stats.
func (h *Handler) stats(c *gin.Context) {
	certs, err := h.store.List(c.Request.Context(), httpapi.Principal(c).TenantID, clientca.Filter{})
	if err != nil {
		fail(c, "", err)
		return
	}
	soon := time.Duration(h.cfg.WarningDays) * 24 * time.Hour
	c.JSON(http.StatusOK, cmStatsOf(certs, h.cfg.Now(), soon))
}

// cmStatsOf counts certs at now; expiring_soon counts the active ones
// expiring within soon (--warning-days, as for server certificates).
func cmStatsOf(certs []clientca.Cert, now time.Time, soon time.Duration) cmStats {
	st := cmStats{Total: len(certs), CreatedCount: len(certs), ByUsage: map[string]int{}}
	for _, cert := range certs {
		usage := cert.Usage
		if usage == "" {
			usage = "other"
		}
		st.ByUsage[usage]++
		switch cert.Status(now) {
		case "revoked":
			st.Revoked++
		case "expired":
			st.Expired++
		default:
			st.Active++
			if cert.ExpiresAt.Sub(now) <= soon {
				st.ExpiringSoon++
			}
			if cert.RenewalEnabled && cert.RenewedBy == "" {
				st.RenewalEnabled++
			}
		}
	}
	return st
}

// cmDetail is GET /client-certs/{id}'s answer: CertMate's fields plus
// status, key_generated and the renewal chain.
type cmDetail struct {
	Type               string       `json:"type"`
	Identifier         string       `json:"identifier"`
	CommonName         string       `json:"common_name"`
	Email              string       `json:"email"`
	Organization       string       `json:"organization"`
	OrganizationalUnit string       `json:"organizational_unit"`
	SerialNumber       string       `json:"serial_number"`
	CreatedAt          time.Time    `json:"created_at"`
	ExpiresAt          time.Time    `json:"expires_at"`
	CertUsage          string       `json:"cert_usage"`
	Notes              string       `json:"notes"`
	Status             string       `json:"status"`
	KeyGenerated       bool         `json:"key_generated"`
	RenewedFrom        *string      `json:"renewed_from"`
	RenewedBy          *string      `json:"renewed_by"`
	Revocation         cmRevocation `json:"revocation"`
	Renewal            cmRenewal    `json:"renewal"`
}

type cmRevocation struct {
	Revoked       bool       `json:"revoked"`
	RevokedAt     *time.Time `json:"revoked_at"`
	ReasonRevoked *string    `json:"reason_revoked"`
}

type cmRenewal struct {
	RenewalEnabled       bool `json:"renewal_enabled"`
	RenewalThresholdDays int  `json:"renewal_threshold_days"`
}

// get is GET /client-certs/{id}.
func (h *Handler) get(c *gin.Context) {
	id := c.Param("id")
	cert, err := h.store.Get(c.Request.Context(), httpapi.Principal(c).TenantID, id)
	if err != nil {
		fail(c, id, err)
		return
	}
	out := cmDetail{Type: "client_certificate", Identifier: cert.ID, CommonName: cert.CommonName, Email: cert.Email,
		Organization: cert.Organization, OrganizationalUnit: cert.OrganizationalUnit, SerialNumber: cert.Serial.String(),
		CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, CertUsage: cert.Usage, Notes: cert.Notes,
		Status: cert.Status(h.cfg.Now()), KeyGenerated: cert.KeyGenerated,
		RenewedFrom: httpapi.NullIfEmpty(cert.RenewedFrom), RenewedBy: httpapi.NullIfEmpty(cert.RenewedBy),
		Revocation: cmRevocation{Revoked: cert.Revoked, RevokedAt: cert.RevokedAt},
		Renewal:    cmRenewal{RenewalEnabled: cert.RenewalEnabled, RenewalThresholdDays: cert.RenewalThresholdDays}}
	if cert.Revoked {
		out.Revocation.ReasonRevoked = &cert.Reason
	}
	c.JSON(http.StatusOK, out)
}

// download is GET /client-certs/{id}/download/{crt|key|csr}: an
// attachment <id>.<type>. The route needs read; a private key needs write
// too (403 to a read-only key). A key is unsealed for this answer only and
// never cached.
func (h *Handler) download(c *gin.Context) {
	id, kind := c.Param("id"), c.Param("type")
	audit.Detail(c, "type", kind)
	p := httpapi.Principal(c)
	if kind == clientca.DownloadKey {
		if err := httpapi.CanDownloadKey(p, "crt and csr"); err != nil {
			httpapi.Fail(c, err)
			return
		}
	}
	data, err := h.store.Download(c.Request.Context(), p.TenantID, id, kind)
	if err != nil {
		fail(c, id, err)
		return
	}
	c.Header("Content-Disposition", `attachment; filename="`+id+"."+kind+`"`)
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusOK, "application/octet-stream", data)
}

// cmRevokeRequest is POST /client-certs/{id}/revoke's optional body.
type cmRevokeRequest struct {
	Reason string `json:"reason"`
}

type cmRevoked struct {
	Message   string    `json:"message"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason"`
}

// revoke is POST /client-certs/{id}/revoke. The body is optional:
// no body (or an empty one) revokes for "unspecified".
func (h *Handler) revoke(c *gin.Context) {
	id := c.Param("id")
	var req cmRevokeRequest
	if err := httpapi.BindOptionalJSON(c, &req); err != nil {
		fail(c, id, err)
		return
	}
	audit.Detail(c, "reason", req.Reason)
	cert, err := h.store.Revoke(c.Request.Context(), httpapi.Principal(c).TenantID, id, req.Reason)
	if err != nil {
		fail(c, id, err)
		return
	}
	c.JSON(http.StatusOK, cmRevoked{Message: "Certificate revoked: " + id, RevokedAt: *cert.RevokedAt, Reason: cert.Reason})
}

// renew is POST /client-certs/{id}/renew: 201 with the new
// certificate.
func (h *Handler) renew(c *gin.Context) {
	id := c.Param("id")
	cert, err := h.store.Renew(c.Request.Context(), httpapi.Principal(c).TenantID, id)
	if err != nil {
		fail(c, id, err)
		return
	}
	audit.Detail(c, "new_identifier", cert.ID)
	audit.Detail(c, "serial_number", cert.Serial.String())
	c.JSON(http.StatusCreated, h.createdOf(cert))
}

// MaxBatchRows caps the rows of one batch, so that one request signs a
// bounded number of certificates (cm-batch allows 10 batches a minute).
const MaxBatchRows = 100

// cmBatchColumns are the columns a batch may name; each row is a creation
// with a generated key.
var cmBatchColumns = []string{"common_name", "email", "organization", "organizational_unit", "cert_usage",
	"days_valid", "notes", "renewal_enabled", "renewal_threshold_days"}

// cmBatchRequest is POST /client-certs/batch's body: CSV as JSON. A cell
// is a string, or a number or boolean (days_valid as 365 or "365"), or
// null (the column's default).
type cmBatchRequest struct {
	Headers []string `json:"headers"`
	Rows    [][]any  `json:"rows"`
}

type cmBatchCreated struct {
	Row          int       `json:"row"`
	Identifier   string    `json:"identifier"`
	CommonName   string    `json:"common_name"`
	SerialNumber string    `json:"serial_number"`
	ExpiresAt    time.Time `json:"expires_at"`
}

type cmBatchError struct {
	Row        int    `json:"row"`
	CommonName string `json:"common_name"`
	Error      string `json:"error"`
}

type cmBatchResult struct {
	Total        int              `json:"total"`
	Successful   int              `json:"successful"`
	Failed       int              `json:"failed"`
	Errors       []cmBatchError   `json:"errors"`
	Certificates []cmBatchCreated `json:"certificates"`
}

// checkHeaders refuses headers that make every row wrong: unknown or
// repeated columns, or no common_name.
func (r cmBatchRequest) checkHeaders() error {
	if len(r.Headers) == 0 {
		return httpapi.BadRequest("headers is required: the names of the columns, common_name among them")
	}
	seen := map[string]bool{}
	for _, h := range r.Headers {
		if !slices.Contains(cmBatchColumns, h) {
			return httpapi.BadRequest(fmt.Sprintf("unknown column %q: columns are %s", h, strings.Join(cmBatchColumns, ", ")))
		}
		if seen[h] {
			return httpapi.BadRequest(fmt.Sprintf("column %q appears twice", h))
		}
		seen[h] = true
	}
	if !seen["common_name"] {
		return httpapi.BadRequest("headers must name the common_name column")
	}
	if len(r.Rows) == 0 {
		return httpapi.BadRequest("rows is required: at least one row")
	}
	if len(r.Rows) > MaxBatchRows {
		return httpapi.BadRequest(fmt.Sprintf("at most %d rows in one batch, got %d", MaxBatchRows, len(r.Rows)))
	}
	return nil
}

// rowRequest reads row i into a creation request (the common name too, for
// the error report, even when the row is refused).
func (r cmBatchRequest) rowRequest(i int) (cmCreateRequest, error) {
	row := r.Rows[i]
	var req cmCreateRequest
	for j, h := range r.Headers {
		if j >= len(row) {
			break
		}
		if h == "common_name" {
			req.CommonName, _ = row[j].(string)
		}
	}
	if len(row) != len(r.Headers) {
		return req, httpapi.BadRequest(fmt.Sprintf("row has %d cells, want %d (one per header)", len(row), len(r.Headers)))
	}
	for j, h := range r.Headers {
		var v string
		switch cell := row[j].(type) {
		case nil:
			continue
		case string:
			v = strings.TrimSpace(cell)
		case float64:
			v = strconv.FormatFloat(cell, 'f', -1, 64)
		case bool:
			v = strconv.FormatBool(cell)
		default:
			return req, httpapi.BadRequest(fmt.Sprintf("%s must be a string, number or boolean", h))
		}
		if v == "" && h != "common_name" {
			continue
		}
		switch h {
		case "common_name":
			req.CommonName = v
		case "email":
			req.Email = v
		case "organization":
			req.Organization = v
		case "organizational_unit":
			req.OrganizationalUnit = v
		case "cert_usage":
			req.CertUsage = v
		case "notes":
			req.Notes = v
		case "days_valid", "renewal_threshold_days":
			n, err := strconv.Atoi(v)
			if err != nil {
				return req, httpapi.BadRequest(fmt.Sprintf("%s must be a whole number, got %q", h, v))
			}
			if h == "days_valid" {
				req.DaysValid = &n
			} else {
				req.RenewalThresholdDays = &n
			}
		case "renewal_enabled":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return req, httpapi.BadRequest(fmt.Sprintf("renewal_enabled must be true or false, got %q", v))
			}
			req.RenewalEnabled = &b
		}
	}
	return req, nil
}

// batch is POST /client-certs/batch. Rows are created one by
// one, each on its own: a bad row is reported and never blocks the others.
// 201 when at least one certificate was created, 200 when none was.
func (h *Handler) batch(c *gin.Context) {
	var req cmBatchRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		fail(c, "", err)
		return
	}
	if err := req.checkHeaders(); err != nil {
		fail(c, "", err)
		return
	}
	// A malformed Idempotency-Key fails the batch, not each row.
	if _, err := httpapi.Idempotency(c, nil); err != nil {
		fail(c, "", err)
		return
	}
	ctx, tenant := c.Request.Context(), httpapi.Principal(c).TenantID
	out := cmBatchResult{Total: len(req.Rows), Errors: []cmBatchError{}, Certificates: []cmBatchCreated{}}
	for i := range req.Rows {
		row, err := req.rowRequest(i)
		var sreq clientca.CreateRequest
		if err == nil {
			sreq, err = row.toStore()
		}
		if err == nil {
			sreq.Idempotency, err = httpapi.IdempotencyItem(c, i, row)
		}
		var cert clientca.Cert
		if err == nil {
			cert, err = h.store.Create(ctx, tenant, sreq)
		}
		br := httpapi.AsError(err)
		switch {
		case err == nil:
			out.Certificates = append(out.Certificates, cmBatchCreated{Row: i + 1, Identifier: cert.ID,
				CommonName: cert.CommonName, SerialNumber: cert.Serial.String(), ExpiresAt: cert.ExpiresAt})
			continue
		case br != nil && br.Status == http.StatusBadRequest:
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: br.Msg})
		case errors.Is(err, clientca.ErrInvalid):
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: invalidMessage(err)})
		case len(out.Certificates) == 0 && (errors.Is(err, clientca.ErrNoCA) || errors.Is(err, clientca.ErrNoPassphrase)):
			// Nothing can be signed: the whole batch is unavailable.
			fail(c, "", err)
			return
		case errors.Is(err, replicated.ErrNotReplicated):
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName,
				Error: "not confirmed by a Redis replica in time: the certificate may have been issued; retry the batch with the same Idempotency-Key to issue each row once"})
		case idempotency.IsReplayRefused(err), errors.As(err, new(*quota.Exceeded)):
			// Over the quota, each row is refused on its own, in the
			// store's step, as a bulk add of domains is.
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: err.Error()})
		default:
			h.logger.Error("batch row failed", zap.String("tenant_id", tenant), zap.Int("row", i+1), zap.Error(err))
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: "internal error"})
		}
	}
	out.Successful, out.Failed = len(out.Certificates), len(out.Errors)
	audit.Detail(c, "total", out.Total)
	audit.Detail(c, "successful", out.Successful)
	audit.Detail(c, "failed", out.Failed)
	ids := make([]string, len(out.Certificates))
	for i, cc := range out.Certificates {
		ids[i] = cc.Identifier
	}
	audit.Detail(c, "identifiers", ids)
	code := http.StatusCreated
	if out.Successful == 0 {
		code = http.StatusOK
	}
	c.JSON(code, out)
}
