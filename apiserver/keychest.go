package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

// badRequest is a problem with the request itself (missing field, body
// that is not JSON or a form).
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

// tooLarge is a body over the limit.
var errTooLarge = errors.New("request body too large")

// reply answers err with the status its kind calls for. Anything not
// caused by the request is logged and answered with a bare 500, so Redis
// errors never reach clients.
func (s *Server) reply(c *gin.Context, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br), domainname.IsInvalid(err),
		errors.Is(err, accounts.ErrBadEmail), errors.Is(err, accounts.ErrBadKey):
		fail(c, http.StatusBadRequest, err.Error())
	case errors.Is(err, errTooLarge):
		fail(c, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, accounts.ErrUnknownKey):
		fail(c, http.StatusUnauthorized, err.Error())
	case errors.Is(err, accounts.ErrKeyTaken):
		fail(c, http.StatusConflict, err.Error())
	case errors.Is(err, accounts.ErrUnknownDomain):
		fail(c, http.StatusNotFound, err.Error())
	default:
		s.logger.Error("request failed", zap.String("route", c.FullPath()), zap.Error(err))
		fail(c, http.StatusInternalServerError, "internal error")
	}
}

// readFields reads the named string fields of a JSON object body or of a
// form-encoded body. A body that starts with '{' is JSON whatever its
// Content-Type, since `curl -d '{...}'` without -H sends JSON labelled as a
// form.
func readFields(c *gin.Context, names ...string) (map[string]string, error) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, badRequest{"cannot read request body"}
	}
	out := make(map[string]string, len(names))
	trimmed := bytes.TrimSpace(body)
	ct, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &obj); err != nil {
			return nil, badRequest{"request body is not valid JSON"}
		}
		for _, n := range names {
			raw, ok := obj[n]
			if !ok || string(raw) == "null" {
				continue
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, badRequest{fmt.Sprintf("%s must be a string", n)}
			}
			out[n] = v
		}
	case ct == "application/x-www-form-urlencoded" || (ct == "" && len(trimmed) > 0):
		form, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return nil, badRequest{"request body is not a valid form"}
		}
		for _, n := range names {
			if v, ok := form[n]; ok && len(v) > 0 {
				out[n] = v[0]
			}
		}
	case len(trimmed) == 0:
		return nil, badRequest{"request body is empty; send JSON such as {\"" + names[0] + "\":...}"}
	default:
		return nil, badRequest{"unsupported content type " + ct + "; send application/json"}
	}
	for _, n := range names {
		if out[n] == "" {
			return nil, badRequest{n + " is required"}
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

// claimGenerated is GET /access/claim/{email}: a new random key for the
// account of email.
func (s *Server) claimGenerated(c *gin.Context) {
	email := c.Param("email")
	key, err := s.accounts.ClaimNew(c.Request.Context(), email)
	if err != nil {
		s.reply(c, err)
		return
	}
	c.JSON(http.StatusOK, claimResponse{Status: "created", User: email, APIKey: key})
}

// claimOwn is POST /access/claim {"email","api_key"}: the client's own key.
func (s *Server) claimOwn(c *gin.Context) {
	f, err := readFields(c, "email", "api_key")
	if err != nil {
		s.reply(c, err)
		return
	}
	created, err := s.accounts.Claim(c.Request.Context(), f["email"], f["api_key"])
	if err != nil {
		s.reply(c, err)
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
func (s *Server) addServer(c *gin.Context) {
	f, err := readFields(c, "api_key", "domain")
	if err != nil {
		s.reply(c, err)
		return
	}
	host, port, err := domainname.Parse(f["domain"])
	if err != nil {
		s.reply(c, err)
		return
	}
	ctx := c.Request.Context()
	tenantID, err := s.keyChestTenant(c, f["api_key"])
	if err != nil {
		s.reply(c, err)
		return
	}
	d, _, err := s.accounts.AddDomain(ctx, tenantID, accounts.NewDomain{Host: host, Port: port, Source: accounts.Source})
	if err != nil {
		s.reply(c, err)
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
func (s *Server) expiration(c *gin.Context) {
	host, port, err := domainname.Parse(c.Param("domain"))
	if err != nil {
		s.reply(c, err)
		return
	}
	key := c.Query("api_key")
	if key == "" {
		s.reply(c, badRequest{"api_key is required"})
		return
	}
	ctx := c.Request.Context()
	tenantID, err := s.keyChestTenant(c, key)
	if err != nil {
		s.reply(c, err)
		return
	}
	domainID, err := s.accounts.LookupDomain(ctx, tenantID, host, port)
	if err != nil {
		s.reply(c, err)
		return
	}
	views, err := projector.Views(ctx, s.rdb, []string{domainID})
	if err != nil {
		s.reply(c, err)
		return
	}
	c.JSON(http.StatusOK, s.expirationOf(domainname.Format(host, port), views[domainID].For(domainname.Key(host, port))))
}

// expirationOf computes the KeyChest answer from the view at cfg.Now.
func (s *Server) expirationOf(domain string, entries []projector.ExpEntry) expirationResponse {
	now := s.cfg.Now()
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
		if e.CertificateFound {
			sha, renewal := e.LeafSHA256, e.NotAfter.Unix()
			due, expired := e.NotAfter.Sub(now) < s.cfg.RenewalWindow, e.NotAfter.Before(now)
			r.CertificateSHA256, r.RenewalUTC, r.RenewalDue, r.Expired = &sha, &renewal, &due, &expired
			resp.CertificateFound = true
			resp.RenewalDue = resp.RenewalDue || due
			resp.ExpiredFound = resp.ExpiredFound || expired
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}
