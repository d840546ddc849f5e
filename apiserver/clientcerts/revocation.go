package clientcerts

// Revocation: the CA's CRL and OCSP, for relying parties (the mTLS and VPN
// servers that accept tenants' client certificates) and for CertMate's
// clients.
//
//   - GET /api/crl/download/der is public: it is the CRL distribution point
//     every certificate names, and relying parties hold no API key. It is
//     limited per client address (cm-general, as the CA certificate).
//   - GET /api/crl/download/pem and /info and GET /api/ocsp/status/{serial}
//     are CertMate's API: a bearer key with read, cm-general plus cm-crl or
//     cm-ocsp per key. The CRL is the same public document; the status API
//     answers "unknown" for another tenant's certificate.
//   - POST /ocsp and GET /ocsp/{base64 request} are the RFC 6960 responder
//     that certificates name in their AIA: no key, no rate limit (a relying
//     party may check every handshake; an answer costs two Redis reads
//     and one signature, about 0.1 ms), answers always 200 with an OCSP
//     response, error statuses included, as RFC 6960 appendix A asks.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// revocationRoutes serves /api/crl/download/..., /api/ocsp/status/... and
// the RFC 6960 responder at /ocsp.
func (h *Handler) revocationRoutes(r *gin.Engine) {
	r.GET("/api/crl/download/der", append(h.PublicGuard(), h.crlDER)...)
	r.GET("/api/crl/download/pem", append(h.Guard(accounts.ScopeRead, ClassCRL), h.crlPEM)...)
	r.GET("/api/crl/download/info", append(h.Guard(accounts.ScopeRead, ClassCRL), h.crlInfo)...)
	r.GET("/api/ocsp/status/:serial", append(h.Guard(accounts.ScopeRead, ClassOCSP), h.ocspStatus)...)
	r.POST("/ocsp", h.ocspPost)
	r.GET("/ocsp/*request", h.ocspGet)
}

// currentCRL returns the CRL, or fails the request with a 503 (no CA,
// cannot sign, Redis down) and returns nil.
func (h *Handler) currentCRL(c *gin.Context) *clientca.CRL {
	crl, err := h.store.CRL(c.Request.Context(), clientca.CRLOptions{Validity: h.cfg.CRLValidity})
	switch {
	case err == nil:
		return crl
	case errors.Is(err, clientca.ErrNoCA):
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "CRL not available: the client CA is not initialised"))
	case errors.Is(err, clientca.ErrNoPassphrase):
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "CRL not available: this server cannot sign (no CA passphrase)"))
	default:
		h.logger.Error("crl failed", zap.Error(err))
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "CRL not available"))
	}
	return nil
}

// crlDER is GET /api/crl/download/der: the distribution point.
func (h *Handler) crlDER(c *gin.Context) {
	if crl := h.currentCRL(c); crl != nil {
		serveCRL(c, crl, "application/pkix-crl", "ca.crl", crl.DER)
	}
}

// crlPEM is GET /api/crl/download/pem.
func (h *Handler) crlPEM(c *gin.Context) {
	if crl := h.currentCRL(c); crl != nil {
		serveCRL(c, crl, "application/x-pem-file", "ca.crl.pem", crl.PEM())
	}
}

// serveCRL answers a CRL file as an attachment. Its ETag is the CRL
// number, so a relying party polling with If-None-Match gets 304 until a
// new CRL is out.
func serveCRL(c *gin.Context, crl *clientca.CRL, contentType, filename string, body []byte) {
	etag := fmt.Sprintf(`"crl-%d"`, crl.Number)
	h := c.Writer.Header()
	h.Set("ETag", etag)
	h.Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
	// Caches must ask again: a new CRL follows each revocation.
	h.Set("Cache-Control", "no-cache")
	if c.GetHeader("If-None-Match") == etag {
		c.Status(http.StatusNotModified)
		return
	}
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	c.Data(http.StatusOK, contentType, body)
}

// CRLInfo is GET /api/crl/download/info, CertMate's CRL info plus
// crl_number and the serials as decimal strings (revoked_serials are JSON
// numbers as CertMate writes them, exact but beyond what a float64 holds:
// JavaScript clients want revoked_serial_numbers).
type CRLInfo struct {
	Status               string        `json:"status"`
	Issuer               string        `json:"issuer"`
	LastUpdate           time.Time     `json:"last_update"`
	NextUpdate           time.Time     `json:"next_update"`
	RevokedCount         int           `json:"revoked_count"`
	RevokedSerials       []json.Number `json:"revoked_serials"`
	RevokedSerialNumbers []string      `json:"revoked_serial_numbers"`
	CRLNumber            int64         `json:"crl_number"`
}

// crlInfo is GET /api/crl/download/info.
func (h *Handler) crlInfo(c *gin.Context) {
	crl := h.currentCRL(c)
	if crl == nil {
		return
	}
	entries, err := crl.Entries()
	if err != nil {
		h.logger.Error("crl info failed", zap.Error(err))
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "CRL not available"))
		return
	}
	body := CRLInfo{
		Status:               "available",
		Issuer:               crl.Issuer,
		LastUpdate:           crl.ThisUpdate,
		NextUpdate:           crl.NextUpdate,
		RevokedCount:         len(entries),
		RevokedSerials:       make([]json.Number, len(entries)),
		RevokedSerialNumbers: make([]string, len(entries)),
		CRLNumber:            crl.Number,
	}
	for i, e := range entries {
		body.RevokedSerialNumbers[i] = e.SerialNumber.String()
		body.RevokedSerials[i] = json.Number(body.RevokedSerialNumbers[i])
	}
	c.JSON(http.StatusOK, body)
}

// OCSPStatus is GET /api/ocsp/status/{serial}: CertMate's fields, plus
// serial_number (a decimal string, as the client certificate API writes
// serials), identifier, revoked_at and revocation_reason.
type OCSPStatus struct {
	ResponseStatus    string      `json:"response_status"`
	CertificateStatus string      `json:"certificate_status"`
	CertificateSerial json.Number `json:"certificate_serial"`
	ThisUpdate        time.Time   `json:"this_update"`
	// NextUpdate is always null: newer status is always available (the
	// responder's answers carry no nextUpdate either).
	NextUpdate       *time.Time `json:"next_update"`
	ResponderName    string     `json:"responder_name"`
	SerialNumber     string     `json:"serial_number"`
	Identifier       string     `json:"identifier,omitempty"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason string     `json:"revocation_reason,omitempty"`
}

// ocspStatus is GET /api/ocsp/status/{serial}.
func (h *Handler) ocspStatus(c *gin.Context) {
	serial, err := parseSerial(c.Param("serial"))
	if err != nil {
		httpapi.Fail(c, httpapi.BadRequest(err.Error()))
		return
	}
	ctx := c.Request.Context()
	info, err := h.store.Info(ctx)
	if err != nil {
		if !errors.Is(err, clientca.ErrNoCA) {
			h.logger.Error("ocsp status failed", zap.Error(err))
		}
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "OCSP not available"))
		return
	}
	st, err := h.store.Status(ctx, serial)
	if err != nil {
		h.logger.Error("ocsp status failed", zap.Error(err))
		httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable, "OCSP not available"))
		return
	}
	if st.Status != clientca.StatusUnknown && st.TenantID != httpapi.Principal(c).TenantID {
		// Another tenant's certificate: as if never issued.
		st = clientca.CertStatus{Serial: serial, Status: clientca.StatusUnknown, At: st.At}
	}
	body := OCSPStatus{
		ResponseStatus:    "successful",
		CertificateStatus: st.Status,
		CertificateSerial: json.Number(serial.String()),
		ThisUpdate:        st.At,
		ResponderName:     info.Cert.Subject.String(),
		SerialNumber:      serial.String(),
		Identifier:        st.CertID,
	}
	if st.Status == clientca.StatusRevoked {
		body.RevokedAt = &st.RevokedAt
		body.RevocationReason = st.Reason
	}
	c.JSON(http.StatusOK, body)
}

// maxSerialDigits caps a serial number's digits: RFC 5280 allows 20
// octets, 40 hexadecimal or 49 decimal digits, with room for leading
// zeros.
const maxSerialDigits = 64

// errSerialFormat is a serial number that is not a number in one of the
// forms parseSerial reads.
var errSerialFormat = errors.New("serial number must be decimal digits, or hexadecimal with 0x or colons")

// parseSerial reads a serial number as decimal digits, or as hexadecimal
// with a 0x prefix, with colons between bytes (as `openssl x509 -text`
// prints it) or as the line `openssl x509 -noout -serial` prints
// ("serial=2DAE8F..."). A serial of more than maxSerialDigits digits is
// refused as too long, naming the limit, whatever its digits; anything
// else that is not a positive number in those forms is errSerialFormat.
func parseSerial(s string) (*big.Int, error) {
	s = strings.TrimSpace(s)
	base := 10
	switch {
	case strings.HasPrefix(s, "0x"), strings.HasPrefix(s, "0X"):
		s, base = s[2:], 16
	case strings.HasPrefix(s, "serial="):
		s, base = s[len("serial="):], 16
	case strings.Contains(s, ":"):
		s, base = strings.ReplaceAll(s, ":", ""), 16
	}
	if len(s) > maxSerialDigits {
		return nil, fmt.Errorf("serial number too long: at most %d digits, got %d", maxSerialDigits, len(s))
	}
	if s == "" || strings.ContainsAny(s, "+-") {
		return nil, errSerialFormat
	}
	n, ok := new(big.Int).SetString(s, base)
	if !ok || n.Sign() <= 0 {
		return nil, errSerialFormat
	}
	return n, nil
}

// maxOCSPRequest caps a request: a single-certificate OCSP request is
// about 100 bytes, signed ones with certificates a few KiB.
const maxOCSPRequest = 16 << 10

// ocspPost is POST /ocsp (RFC 6960 A.1: the DER request is the body).
func (h *Handler) ocspPost(c *gin.Context) {
	der, err := io.ReadAll(io.LimitReader(c.Request.Body, maxOCSPRequest+1))
	if err != nil || len(der) > maxOCSPRequest {
		der = nil // answered malformedRequest
	}
	h.respondOCSP(c, der)
}

// ocspGet is GET /ocsp/{request}: the request is the base64 of the DER,
// URL-encoded (RFC 6960 A.1); gin has already decoded the path.
func (h *Handler) ocspGet(c *gin.Context) {
	b64 := strings.TrimPrefix(c.Param("request"), "/")
	var der []byte
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if d, err := enc.DecodeString(b64); err == nil {
			der = d
			break
		}
	}
	h.respondOCSP(c, der)
}

func (h *Handler) respondOCSP(c *gin.Context, der []byte) {
	resp, err := h.store.RespondOCSP(c.Request.Context(), der)
	if err != nil {
		h.logger.Error("ocsp response failed", zap.Error(err))
	}
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "application/ocsp-response", resp)
}
