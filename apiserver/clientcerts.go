package apiserver

// The client certificate API under /api, as CertMate documents it: bearer
// ssa_ keys (write for changes, read for reads), CertMate's per-key rate
// limits and its error shapes. Authentication and rate limiting are v1's
// (requireKey, limit, allow); certMateErrors only rewrites their error
// answers into CertMate's shapes, so the two APIs never drift apart.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/internal/lease"
)

// Rate limit classes of the CertMate API, per key, requests a minute as
// CertMate documents them (fixed: clients written for CertMate expect
// them). Every CertMate route counts against cm-general; creation, batch,
// OCSP status and CRL downloads also against their own class.
const (
	classCMGeneral = "cm-general"
	classCMCreate  = "cm-create"
	classCMBatch   = "cm-batch"
	classCMOCSP    = "cm-ocsp"
	classCMCRL     = "cm-crl"

	cmRateGeneral = 100
	cmRateCreate  = 30
	cmRateBatch   = 10
	cmRateOCSP    = 200
	cmRateCRL     = 60
)

// cmErrorBody is every CertMate error answer but 429. Code is a stable
// upper-case name of the kind of error (CertMate's "ERROR_CODE"); Status
// repeats the HTTP status.
type cmErrorBody struct {
	Error  string `json:"error"`
	Code   string `json:"code"`
	Status int    `json:"status"`
}

// cmRateLimitedBody is CertMate's 429 answer.
type cmRateLimitedBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	RetryAfter int    `json:"retry_after"`
}

// cmCodes names the error code of each status the CertMate routes answer.
var cmCodes = map[int]string{
	http.StatusBadRequest:            "BAD_REQUEST",
	http.StatusUnauthorized:          "UNAUTHORIZED",
	http.StatusForbidden:             "FORBIDDEN",
	http.StatusNotFound:              "NOT_FOUND",
	http.StatusMethodNotAllowed:      "METHOD_NOT_ALLOWED",
	http.StatusConflict:              "CONFLICT",
	http.StatusRequestEntityTooLarge: "PAYLOAD_TOO_LARGE",
	http.StatusTooManyRequests:       "RATE_LIMIT_EXCEEDED",
	http.StatusInternalServerError:   "INTERNAL_ERROR",
	http.StatusServiceUnavailable:    "SERVICE_UNAVAILABLE",
}

func cmCode(status int) string {
	if code, ok := cmCodes[status]; ok {
		return code
	}
	return "ERROR"
}

// failCM answers an error in CertMate's shape and stops the handler chain.
func failCM(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, cmErrorBody{Error: msg, Code: cmCode(status), Status: status})
}

// certMate returns the handlers every authenticated CertMate route starts
// with: CertMate's error shapes, the key holding scope, and the per-key
// limits of cm-general and of each class given. E2's OCSP status and CRL
// routes use it too.
func (s *Server) certMate(scope string, classes ...string) []gin.HandlerFunc {
	hs := []gin.HandlerFunc{certMateErrors(), s.cmRequireKey(scope), s.limit(classCMGeneral)}
	for _, class := range classes {
		hs = append(hs, s.limit(class))
	}
	return hs
}

// cmRequireKey is requireKey that also audits a refused key (401, 403):
// on an audited route it adds the reason to the request's record, on any
// other it records the refusal.
func (s *Server) cmRequireKey(scope string) gin.HandlerFunc {
	auth := s.requireKey(scope)
	return func(c *gin.Context) {
		auth(c) // runs the rest of the chain when the key is accepted
		if _, accepted := c.Get(principalKey); accepted || !c.IsAborted() {
			return
		}
		switch code := c.Writer.Status(); code {
		case http.StatusUnauthorized:
			s.auditFailedAuth(c, code, nil, "missing or invalid API key")
		case http.StatusForbidden:
			s.auditFailedAuth(c, code, nil, "API key lacks the "+scope+" permission")
		}
	}
}

// certMatePublic returns the handlers of a CertMate route served without a
// key (the CA certificate, E2's CRL distribution point): CertMate's error
// shapes, and cm-general and each class given limited per client address.
func (s *Server) certMatePublic(classes ...string) []gin.HandlerFunc {
	hs := []gin.HandlerFunc{certMateErrors()}
	for _, class := range append([]string{classCMGeneral}, classes...) {
		lim, ok := s.limits()[class]
		hs = append(hs, func(c *gin.Context) {
			if !ok {
				s.replyV1(c, fmt.Errorf("rate limit: unknown class %q", class))
				return
			}
			s.allow(c, class+":ip:"+c.RemoteIP(), lim)
		})
	}
	return hs
}

// certMateErrors rewrites the error answers of the handlers after it that
// are in the v1 shape ({"error": msg}, as requireKey, limit and replyV1
// write them) into CertMate's: {"error", "code", "status"}, and a 429 into
// {"error": "Rate limit exceeded", "message", "retry_after"}. Answers
// already in CertMate's shape, and every answer under 400, pass unchanged.
func certMateErrors() gin.HandlerFunc {
	return func(c *gin.Context) {
		w := &cmWriter{ResponseWriter: c.Writer}
		c.Writer = w
		defer func() { c.Writer = w.ResponseWriter }()
		c.Next()
		if !w.held {
			return
		}
		c.Writer = w.ResponseWriter
		body := cmTranslate(w.Status(), w.Header().Get("Retry-After"), w.buf.Bytes())
		if _, err := w.ResponseWriter.Write(body); err != nil {
			_ = c.Error(err)
		}
	}
}

// cmTranslate returns the CertMate form of an error answer body.
func cmTranslate(status int, retryAfter string, body []byte) []byte {
	var v1 map[string]json.RawMessage
	if err := json.Unmarshal(body, &v1); err != nil || len(v1) != 1 || v1["error"] == nil {
		return body // not v1's shape: CertMate's already, or not JSON
	}
	var msg string
	if err := json.Unmarshal(v1["error"], &msg); err != nil {
		return body
	}
	var out any = cmErrorBody{Error: msg, Code: cmCode(status), Status: status}
	if status == http.StatusTooManyRequests {
		secs, _ := strconv.Atoi(retryAfter)
		out = cmRateLimitedBody{Error: "Rate limit exceeded", Message: "Too many requests. Please try again later.",
			RetryAfter: max(secs, 1)}
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return body
	}
	return raw
}

// cmWriter holds back the body of an error answer (status 400 and up) for
// certMateErrors to rewrite; every other answer goes straight through.
type cmWriter struct {
	gin.ResponseWriter
	buf  bytes.Buffer
	held bool
}

func (w *cmWriter) Write(b []byte) (int, error) {
	if w.Status() >= http.StatusBadRequest {
		w.held = true
		return w.buf.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *cmWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// WriteHeaderNow sends the header of a success at once; an error's waits
// for its rewritten body.
func (w *cmWriter) WriteHeaderNow() {
	if w.Status() >= http.StatusBadRequest {
		w.held = true
		return
	}
	w.ResponseWriter.WriteHeaderNow()
}

func (w *cmWriter) Written() bool { return w.held || w.ResponseWriter.Written() }

func (w *cmWriter) Flush() {
	if !w.held {
		w.ResponseWriter.Flush()
	}
}

// certMateAudited is certMate with the audit record of operation on a
// certificate before it, so that refused keys are recorded too.
func (s *Server) certMateAudited(operation, scope string, classes ...string) []gin.HandlerFunc {
	return append([]gin.HandlerFunc{s.audited(operation, cmAuditResource)}, s.certMate(scope, classes...)...)
}

// certMateRead is certMate for a read: only a refused key is audited
// (as failed_auth, naming the operation attempted).
func (s *Server) certMateRead(operation string) []gin.HandlerFunc {
	return append([]gin.HandlerFunc{s.auditRefusals(operation, cmAuditResource)}, s.certMate(accounts.ScopeRead)...)
}

// cmAuditResource is the audit log's resource type of client certificates.
const cmAuditResource = "certificate"

// caRoutes serves /api/ca/certificate and /api/client-certs/... (the
// auto-renewal loop is RunRenewal, run beside Run).
func (s *Server) caRoutes(r *gin.Engine) {
	handlers := func(hs []gin.HandlerFunc, h gin.HandlerFunc) []gin.HandlerFunc { return append(hs, h) }
	read, write := accounts.ScopeRead, accounts.ScopeWrite
	r.GET("/api/ca/certificate", handlers(s.certMatePublic(), s.caCertificate)...)
	g := r.Group("/api/client-certs")
	g.POST("/create", handlers(s.certMateAudited("create", write, classCMCreate), s.createClientCert)...)
	g.POST("/batch", handlers(s.certMateAudited("batch", write, classCMBatch), s.batchClientCerts)...)
	g.GET("", handlers(s.certMateRead("list"), s.listClientCerts)...)
	g.GET("/stats", handlers(s.certMateRead("stats"), s.clientCertStats)...)
	g.GET("/:id", handlers(s.certMateRead("get"), s.getClientCert)...)
	g.GET("/:id/download/:type", handlers(s.certMateAudited("download", read), s.downloadClientCert)...)
	g.POST("/:id/revoke", handlers(s.certMateAudited("revoke", write), s.revokeClientCert)...)
	g.POST("/:id/renew", handlers(s.certMateAudited("renew", write), s.renewClientCert)...)
}

// replyCM answers err in CertMate's shape with the status its kind calls
// for; id names the certificate in messages. What replyCM does not know
// goes to replyV1 (logged 500s, bindJSON's 400s), whose answer
// certMateErrors reshapes.
func (s *Server) replyCM(c *gin.Context, id string, err error) {
	switch {
	case errors.Is(err, clientca.ErrInvalid):
		failCM(c, http.StatusBadRequest, invalidMessage(err))
	case errors.Is(err, clientca.ErrNotFound):
		failCM(c, http.StatusNotFound, "Certificate not found: "+id)
	case errors.Is(err, clientca.ErrNoKey):
		failCM(c, http.StatusNotFound, "Private key not available for "+id+": the certificate was issued for a CSR")
	case errors.Is(err, clientca.ErrAlreadyRevoked):
		failCM(c, http.StatusConflict, "Certificate already revoked: "+id)
	case errors.Is(err, clientca.ErrRevoked):
		failCM(c, http.StatusConflict, "Certificate is revoked: "+id)
	case errors.Is(err, clientca.ErrAlreadyRenewed):
		failCM(c, http.StatusConflict, "Certificate already renewed: "+id+" (renew the newest one)")
	case errors.Is(err, clientca.ErrNoCA):
		failCM(c, http.StatusServiceUnavailable, "The client CA is not initialised")
	case errors.Is(err, clientca.ErrNoPassphrase):
		failCM(c, http.StatusServiceUnavailable, "This server cannot sign or unseal: no CA passphrase configured")
	default:
		// The cause is logged, never answered nor audited: tenants read
		// their audit records.
		s.replyV1(c, err)
	}
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
func (s *Server) caCertificate(c *gin.Context) {
	info, err := s.ca.store.Info(c.Request.Context())
	if err != nil {
		s.replyCM(c, "", err)
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
			return out, badRequest{fmt.Sprintf("days_valid must be 1 to %d, got 0", clientca.MaxDaysValid)}
		}
		out.DaysValid = *r.DaysValid
	}
	if r.RenewalThresholdDays != nil {
		if *r.RenewalThresholdDays == 0 {
			return out, badRequest{"renewal_threshold_days must be 1 to 365 and below days_valid, got 0"}
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

func (s *Server) cmCreatedOf(cert clientca.Cert) cmCreated {
	return cmCreated{Identifier: cert.ID, CommonName: cert.CommonName, SerialNumber: cert.Serial.String(),
		CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, CertUsage: cert.Usage,
		Status: cert.Status(s.cfg.Now()), RenewedFrom: cert.RenewedFrom}
}

// createClientCert is POST /client-certs/create.
func (s *Server) createClientCert(c *gin.Context) {
	var req cmCreateRequest
	if err := bindJSON(c, &req); err != nil {
		s.replyCM(c, "", err)
		return
	}
	auditDetail(c, "common_name", req.CommonName)
	auditDetail(c, "usage", req.CertUsage)
	auditDetail(c, "generate_key", req.GenerateKey == nil || *req.GenerateKey)
	sreq, err := req.toStore()
	if err != nil {
		s.replyCM(c, "", err)
		return
	}
	cert, err := s.ca.store.Create(c.Request.Context(), principalOf(c).TenantID, sreq)
	if err != nil {
		s.replyCM(c, "", err)
		return
	}
	auditResource(c, cert.ID)
	auditDetail(c, "serial_number", cert.Serial.String())
	replyJSON(c, http.StatusCreated, s.cmCreatedOf(cert))
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

// listClientCerts is GET /client-certs?usage&revoked&search, newest first.
func (s *Server) listClientCerts(c *gin.Context) {
	f := clientca.Filter{Usage: c.Query("usage"), Search: c.Query("search")}
	if v, ok := c.GetQuery("revoked"); ok {
		if v != "true" && v != "false" {
			failCM(c, http.StatusBadRequest, fmt.Sprintf("revoked must be true or false, got %q", v))
			return
		}
		revoked := v == "true"
		f.Revoked = &revoked
	}
	certs, err := s.ca.store.List(c.Request.Context(), principalOf(c).TenantID, f)
	if err != nil {
		s.replyCM(c, "", err)
		return
	}
	now := s.cfg.Now()
	out := cmList{Certificates: make([]cmListItem, 0, len(certs)), Total: len(certs)}
	for _, cert := range certs {
		out.Certificates = append(out.Certificates, cmListItem{Identifier: cert.ID, CommonName: cert.CommonName,
			Email: cert.Email, Organization: cert.Organization, CertUsage: cert.Usage, SerialNumber: cert.Serial.String(),
			CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, Revoked: cert.Revoked, Status: cert.Status(now)})
	}
	replyJSON(c, http.StatusOK, out)
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

// clientCertStats is GET /client-certs/stats.
func (s *Server) clientCertStats(c *gin.Context) {
	certs, err := s.ca.store.List(c.Request.Context(), principalOf(c).TenantID, clientca.Filter{})
	if err != nil {
		s.replyCM(c, "", err)
		return
	}
	soon := time.Duration(s.cfg.WarningDays) * 24 * time.Hour
	replyJSON(c, http.StatusOK, cmStatsOf(certs, s.cfg.Now(), soon))
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

// getClientCert is GET /client-certs/{id}.
func (s *Server) getClientCert(c *gin.Context) {
	id := c.Param("id")
	cert, err := s.ca.store.Get(c.Request.Context(), principalOf(c).TenantID, id)
	if err != nil {
		s.replyCM(c, id, err)
		return
	}
	out := cmDetail{Type: "client_certificate", Identifier: cert.ID, CommonName: cert.CommonName, Email: cert.Email,
		Organization: cert.Organization, OrganizationalUnit: cert.OrganizationalUnit, SerialNumber: cert.Serial.String(),
		CreatedAt: cert.CreatedAt, ExpiresAt: cert.ExpiresAt, CertUsage: cert.Usage, Notes: cert.Notes,
		Status: cert.Status(s.cfg.Now()), KeyGenerated: cert.KeyGenerated,
		RenewedFrom: nonEmpty(cert.RenewedFrom), RenewedBy: nonEmpty(cert.RenewedBy),
		Revocation: cmRevocation{Revoked: cert.Revoked, RevokedAt: cert.RevokedAt},
		Renewal:    cmRenewal{RenewalEnabled: cert.RenewalEnabled, RenewalThresholdDays: cert.RenewalThresholdDays}}
	if cert.Revoked {
		out.Revocation.ReasonRevoked = &cert.Reason
	}
	replyJSON(c, http.StatusOK, out)
}

// downloadClientCert is GET /client-certs/{id}/download/{crt|key|csr}: an
// attachment <id>.<type>. A key is unsealed for this answer only and never
// cached.
func (s *Server) downloadClientCert(c *gin.Context) {
	id, kind := c.Param("id"), c.Param("type")
	auditDetail(c, "type", kind)
	data, err := s.ca.store.Download(c.Request.Context(), principalOf(c).TenantID, id, kind)
	if err != nil {
		s.replyCM(c, id, err)
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

// revokeClientCert is POST /client-certs/{id}/revoke. The body is optional:
// no body (or an empty one) revokes for "unspecified".
func (s *Server) revokeClientCert(c *gin.Context) {
	id := c.Param("id")
	var req cmRevokeRequest
	if err := bindOptionalJSON(c, &req); err != nil {
		s.replyCM(c, id, err)
		return
	}
	auditDetail(c, "reason", req.Reason)
	cert, err := s.ca.store.Revoke(c.Request.Context(), principalOf(c).TenantID, id, req.Reason)
	if err != nil {
		s.replyCM(c, id, err)
		return
	}
	replyJSON(c, http.StatusOK, cmRevoked{Message: "Certificate revoked: " + id, RevokedAt: *cert.RevokedAt, Reason: cert.Reason})
}

// bindOptionalJSON is bindJSON for a body that may be left out: an empty
// body leaves dst as it is.
func bindOptionalJSON(c *gin.Context, dst any) error {
	body, err := io.ReadAll(c.Request.Body)
	var rest io.Reader = bytes.NewReader(body)
	if err != nil {
		rest = io.MultiReader(rest, errReader{err}) // bindJSON answers it
	} else if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	c.Request.Body = io.NopCloser(rest)
	return bindJSON(c, dst)
}

// renewClientCert is POST /client-certs/{id}/renew: 201 with the new
// certificate.
func (s *Server) renewClientCert(c *gin.Context) {
	id := c.Param("id")
	cert, err := s.ca.store.Renew(c.Request.Context(), principalOf(c).TenantID, id)
	if err != nil {
		s.replyCM(c, id, err)
		return
	}
	auditDetail(c, "new_identifier", cert.ID)
	auditDetail(c, "serial_number", cert.Serial.String())
	replyJSON(c, http.StatusCreated, s.cmCreatedOf(cert))
}

// cmBatchMaxRows caps the rows of one batch, so that one request signs a
// bounded number of certificates (cm-batch allows 10 batches a minute).
const cmBatchMaxRows = 100

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
		return badRequest{"headers is required: the names of the columns, common_name among them"}
	}
	seen := map[string]bool{}
	for _, h := range r.Headers {
		if !slices.Contains(cmBatchColumns, h) {
			return badRequest{fmt.Sprintf("unknown column %q: columns are %s", h, strings.Join(cmBatchColumns, ", "))}
		}
		if seen[h] {
			return badRequest{fmt.Sprintf("column %q appears twice", h)}
		}
		seen[h] = true
	}
	if !seen["common_name"] {
		return badRequest{"headers must name the common_name column"}
	}
	if len(r.Rows) == 0 {
		return badRequest{"rows is required: at least one row"}
	}
	if len(r.Rows) > cmBatchMaxRows {
		return badRequest{fmt.Sprintf("at most %d rows in one batch, got %d", cmBatchMaxRows, len(r.Rows))}
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
		return req, badRequest{fmt.Sprintf("row has %d cells, want %d (one per header)", len(row), len(r.Headers))}
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
			return req, badRequest{fmt.Sprintf("%s must be a string, number or boolean", h)}
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
				return req, badRequest{fmt.Sprintf("%s must be a whole number, got %q", h, v)}
			}
			if h == "days_valid" {
				req.DaysValid = &n
			} else {
				req.RenewalThresholdDays = &n
			}
		case "renewal_enabled":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return req, badRequest{fmt.Sprintf("renewal_enabled must be true or false, got %q", v)}
			}
			req.RenewalEnabled = &b
		}
	}
	return req, nil
}

// batchClientCerts is POST /client-certs/batch. Rows are created one by
// one, each on its own: a bad row is reported and never blocks the others.
// 201 when at least one certificate was created, 200 when none was.
func (s *Server) batchClientCerts(c *gin.Context) {
	var req cmBatchRequest
	if err := bindJSON(c, &req); err != nil {
		s.replyCM(c, "", err)
		return
	}
	if err := req.checkHeaders(); err != nil {
		s.replyCM(c, "", err)
		return
	}
	ctx, tenant := c.Request.Context(), principalOf(c).TenantID
	out := cmBatchResult{Total: len(req.Rows), Errors: []cmBatchError{}, Certificates: []cmBatchCreated{}}
	for i := range req.Rows {
		row, err := req.rowRequest(i)
		var sreq clientca.CreateRequest
		if err == nil {
			sreq, err = row.toStore()
		}
		var cert clientca.Cert
		if err == nil {
			cert, err = s.ca.store.Create(ctx, tenant, sreq)
		}
		var br badRequest
		switch {
		case err == nil:
			out.Certificates = append(out.Certificates, cmBatchCreated{Row: i + 1, Identifier: cert.ID,
				CommonName: cert.CommonName, SerialNumber: cert.Serial.String(), ExpiresAt: cert.ExpiresAt})
			continue
		case errors.As(err, &br):
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: br.msg})
		case errors.Is(err, clientca.ErrInvalid):
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: invalidMessage(err)})
		case len(out.Certificates) == 0 && (errors.Is(err, clientca.ErrNoCA) || errors.Is(err, clientca.ErrNoPassphrase)):
			// Nothing can be signed: the whole batch is unavailable.
			s.replyCM(c, "", err)
			return
		default:
			s.logger.Error("batch row failed", zap.String("tenant_id", tenant), zap.Int("row", i+1), zap.Error(err))
			out.Errors = append(out.Errors, cmBatchError{Row: i + 1, CommonName: row.CommonName, Error: "internal error"})
		}
	}
	out.Successful, out.Failed = len(out.Certificates), len(out.Errors)
	auditDetail(c, "total", out.Total)
	auditDetail(c, "successful", out.Successful)
	auditDetail(c, "failed", out.Failed)
	ids := make([]string, len(out.Certificates))
	for i, cc := range out.Certificates {
		ids[i] = cc.Identifier
	}
	auditDetail(c, "identifiers", ids)
	code := http.StatusCreated
	if out.Successful == 0 {
		code = http.StatusOK
	}
	replyJSON(c, code, out)
}

// Auto-renewal: every replica runs the loop, but one pass at a time runs
// across replicas (a Redis lease), and each renewal is itself checked and
// applied in one step by the store (AutoRenew: due, enabled, not revoked,
// not renewed yet), so a pass that outlives its lease still renews each
// certificate once.
const (
	// cmRenewalEvery is how often the loop looks for due renewals;
	// thresholds count in days, so minutes late is no matter. The first
	// pass is one period after the start.
	cmRenewalEvery = 10 * time.Minute
	// cmRenewalLease bounds one pass's hold on the lease, should its
	// replica die mid-pass.
	cmRenewalLease = 5 * time.Minute
	// cmRenewalBatch is how many due certificates a pass reads at once.
	cmRenewalBatch = 100
	// cmRenewalLeaseKey is the lease (owned by this file).
	cmRenewalLeaseKey = "clientcerts:renewal:lease"
)

// RunRenewal is the client-certificate auto-renewal loop, an actor of the
// process beside Run: every replica runs it, and a lease lets one pass run
// at a time. It returns nil when ctx ends.
func (s *Server) RunRenewal(ctx context.Context) error {
	s.runClientCertRenewal(ctx, cmRenewalEvery)
	return nil
}

// runClientCertRenewal renews due certificates every period until ctx ends.
func (s *Server) runClientCertRenewal(ctx context.Context, every time.Duration) {
	logger := s.logger.Named("renewal")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.renewDueClientCerts(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Error("auto-renewal pass failed", zap.Int("renewed", n), zap.Error(err))
		case n > 0:
			logger.Info("auto-renewal pass", zap.Int("renewed", n))
		}
	}
}

// renewDueClientCerts is one auto-renewal pass: with the lease, it renews
// every certificate due now and returns how many it renewed. Without the
// lease (another replica's pass is running) it does nothing.
func (s *Server) renewDueClientCerts(ctx context.Context) (int, error) {
	holder := lease.NewToken()
	ok, err := lease.Acquire(ctx, s.rdb, cmRenewalLeaseKey, holder, cmRenewalLease)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, nil
	}
	defer func() {
		if _, err := lease.Release(context.WithoutCancel(ctx), s.rdb, cmRenewalLeaseKey, holder); err != nil {
			s.logger.Warn("renewal lease not released", zap.Error(err))
		}
	}()
	renewed := 0
	skip := map[string]bool{} // failed in this pass: not retried until the next
	for ctx.Err() == nil {
		limit := cmRenewalBatch + len(skip)
		due, err := s.ca.store.DueForRenewal(ctx, s.cfg.Now(), limit)
		if err != nil {
			return renewed, err
		}
		progress := false
		for _, d := range due {
			if skip[d.ID] {
				continue
			}
			progress = true
			cert, err := s.ca.store.AutoRenew(ctx, d.TenantID, d.ID)
			switch {
			case err == nil:
				renewed++
				s.logger.Info("client certificate renewed", zap.String("tenant_id", d.TenantID),
					zap.String("cert_id", d.ID), zap.String("new_cert_id", cert.ID))
				_ = s.auditSystem(ctx, d.TenantID, "auto_renew", "certificate", d.ID,
					map[string]any{"new_identifier": cert.ID, "serial_number": cert.Serial.String()}, "")
			case errors.Is(err, clientca.ErrNotDue), errors.Is(err, clientca.ErrRevoked),
				errors.Is(err, clientca.ErrAlreadyRenewed), errors.Is(err, clientca.ErrNotFound):
				skip[d.ID] = true // changed since it was listed
			case errors.Is(err, clientca.ErrNoCA), errors.Is(err, clientca.ErrNoPassphrase):
				return renewed, err
			default:
				skip[d.ID] = true
				s.logger.Error("auto-renewal failed", zap.String("tenant_id", d.TenantID), zap.String("cert_id", d.ID), zap.Error(err))
				_ = s.auditSystem(ctx, d.TenantID, "auto_renew", "certificate", d.ID, nil, "automatic renewal failed")
			}
		}
		if !progress || len(due) < limit {
			break
		}
	}
	return renewed, ctx.Err()
}
