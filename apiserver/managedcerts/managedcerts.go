// Package managedcerts serves the managed server certificates in
// CertMate's /api/certificates shapes: create (an ACME order the
// coordinator's worker runs), list, get, renew, delete (with revocation),
// and download (a zip, one PEM file, or JSON). Bearer keys: write to
// change, read to list and to download public files; the private key
// (zip, privkey.pem, combined.pem, JSON) needs write, and every download
// is an audit record. Errors and rate limits are the client-certificate
// API's (apiserver/clientcerts), whose shapes CertMate shares.
package managedcerts

import (
	"archive/zip"
	"bytes"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/managedcert"
)

// auditResource is the audit log's resource type of managed certificates.
const auditResource = "managed_certificate"

// Handler serves /api/certificates.
type Handler struct {
	store    *managedcert.Store
	accounts *accounts.Store
	audit    *audit.Log
	guard    func(scope string) []gin.HandlerFunc
	logger   *zap.Logger
}

// New returns the handler. guard gives the handlers a route starts with
// for a scope: CertMate's error renderer, the key, the rate limits
// (clientcerts.Handler.Guard).
func New(store *managedcert.Store, accts *accounts.Store, log *audit.Log, guard func(scope string) []gin.HandlerFunc, logger *zap.Logger) *Handler {
	return &Handler{store: store, accounts: accts, audit: log, guard: guard, logger: logger.Named("managedcerts")}
}

// Routes serves /api/certificates/...
func (h *Handler) Routes(r *gin.Engine) {
	read, write := accounts.ScopeRead, accounts.ScopeWrite
	audited := func(op, scope string, handler gin.HandlerFunc) []gin.HandlerFunc {
		return append(append([]gin.HandlerFunc{h.audit.Audited(op, auditResource)}, h.guard(scope)...), handler)
	}
	reading := func(op string, handler gin.HandlerFunc) []gin.HandlerFunc {
		return append(append([]gin.HandlerFunc{h.audit.Refusals(op, auditResource)}, h.guard(read)...), handler)
	}
	g := r.Group("/api/certificates")
	g.POST("/create", audited("create", write, h.create)...)
	g.GET("", reading("list", h.list)...)
	g.GET("/:domain", reading("get", h.get)...)
	g.POST("/:domain/renew", audited("renew", write, h.renew)...)
	g.DELETE("/:domain", audited("delete", write, h.delete)...)
	// Read scope lets a key in; the handler asks for write when the
	// download includes the private key.
	g.GET("/:domain/download", audited("download", read, h.download)...)
}

// fail answers err in CertMate's shapes, as Explain explains it.
func fail(c *gin.Context, domain string, err error) { httpapi.Fail(c, Explain(domain, err)) }

// Explain returns err of the managed certificates' store as what it
// means (domain names the certificate in messages): its refusals as
// *httpapi.Error, anything else as it is (a logged 500 when unknown; a
// quota passed is httpapi's shared 403). The dashboard's pages use it too.
func Explain(domain string, err error) error {
	var inv *managedcert.InvalidError
	switch {
	case errors.As(err, &inv):
		return httpapi.Errorf(http.StatusBadRequest, inv.Error())
	case errors.Is(err, managedcert.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, "Certificate not found: "+domain)
	case errors.Is(err, managedcert.ErrExists):
		return httpapi.Errorf(http.StatusConflict, "Certificate already managed: "+domain)
	case errors.Is(err, managedcert.ErrNotIssued):
		return httpapi.Errorf(http.StatusConflict, "Certificate not issued yet: "+domain+" (see its status and error)")
	case errors.Is(err, managedcert.ErrNoPassphrase):
		return httpapi.Errorf(http.StatusServiceUnavailable, "Managed certificates are disabled: this server has no secrets passphrase")
	}
	return err
}

// createRequest is POST /api/certificates/create's body.
type createRequest struct {
	Domain      string   `json:"domain"`
	SANs        []string `json:"san_domains"`
	DNSProvider string   `json:"dns_provider"`
	AccountID   string   `json:"account_id"`
	KeyType     string   `json:"key_type"`
}

// ParseName checks a name a certificate is ordered for: a DNS name of at
// least two labels, or a wildcard "*.name"; lower case, IDNA. It returns
// the name normalized and whether it is a wildcard.
func ParseName(s string) (string, bool, error) {
	base, wildcard := strings.CutPrefix(s, "*.")
	if strings.Contains(base, ":") {
		return "", false, httpapi.BadRequest("certificate names carry no port: " + s)
	}
	host, _, err := domainname.Parse(base)
	if err != nil {
		return "", false, httpapi.BadRequest(err.Error())
	}
	if wildcard {
		return "*." + host, true, nil
	}
	return host, false, nil
}

// parse checks a create request's fields and names: the domain and SANs
// normalized, and the names to monitor (wildcards are not monitored).
func (r createRequest) parse() (domain string, sans, names []string, err error) {
	if r.Domain == "" || r.DNSProvider == "" || r.AccountID == "" {
		return "", nil, nil, httpapi.BadRequest(`fields "domain", "dns_provider" and "account_id" are required`)
	}
	domain, wild, err := ParseName(r.Domain)
	if err != nil {
		return "", nil, nil, err
	}
	names = []string{}
	if !wild {
		names = append(names, domain)
	}
	sans = make([]string, 0, len(r.SANs))
	for _, s := range r.SANs {
		n, w, err := ParseName(s)
		if err != nil {
			return "", nil, nil, err
		}
		sans = append(sans, n)
		if !w {
			names = append(names, n)
		}
	}
	return domain, sans, names, nil
}

func (h *Handler) create(c *gin.Context) {
	var req createRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	domain, sans, names, err := req.parse()
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	audit.Resource(c, domain)
	ctx := c.Request.Context()
	p := httpapi.Principal(c)
	email, err := h.accounts.Email(ctx, p.TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	cert, err := h.store.Create(ctx, p.TenantID, managedcert.CreateRequest{Domain: domain, SANs: sans,
		DNSProvider: req.DNSProvider, AccountID: req.AccountID, KeyType: req.KeyType, Contact: email})
	if err != nil {
		fail(c, domain, err)
		return
	}
	// Every managed name is monitored too, so that scans show whether the
	// certificate issued is the one deployed. Names already monitored stay
	// as they are; a name the domain quota refuses is left out, said in
	// the answer.
	var unmonitored []string
	for _, n := range names {
		if _, _, err := h.accounts.AddDomain(ctx, p.TenantID, accounts.NewDomain{Host: n, Port: domainname.DefaultPort,
			Source: "acme", HeldBy: heldBy(p)}); err != nil {
			h.logger.Info("managed name not monitored", zap.String("tenant_id", p.TenantID), zap.String("name", n), zap.Error(err))
			unmonitored = append(unmonitored, n)
		}
	}
	audit.Detail(c, "dns_provider", cert.DNSProvider)
	audit.Detail(c, "san_domains", cert.SANs)
	out := certJSON(cert)
	out.Unmonitored = unmonitored
	c.JSON(http.StatusAccepted, out)
}

func heldBy(p accounts.Principal) string {
	if p.Held {
		return p.KeyID
	}
	return ""
}

// certificate is a managed certificate as the API shows it.
type certificate struct {
	Domain        string     `json:"domain"`
	SANs          []string   `json:"san_domains"`
	DNSProvider   string     `json:"dns_provider"`
	AccountID     string     `json:"account_id"`
	KeyType       string     `json:"key_type"`
	Status        string     `json:"status"`
	Renewing      bool       `json:"renewing"`
	Deleting      bool       `json:"deleting,omitempty"`
	Error         *string    `json:"error"`
	Attempts      int        `json:"failed_attempts"`
	RetryAt       *time.Time `json:"retry_at"`
	Serial        *string    `json:"serial"`
	SHA256        *string    `json:"sha256"`
	Issuer        *string    `json:"issuer"`
	NotBefore     *time.Time `json:"not_before"`
	NotAfter      *time.Time `json:"not_after"`
	DaysLeft      *int       `json:"days_remaining"`
	IssuedAt      *time.Time `json:"issued_at"`
	NextRenewal   *time.Time `json:"next_renewal"`
	RenewalSource *string    `json:"renewal_source"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	// Unmonitored lists names of a new certificate the domain quota kept
	// out of monitoring (create only).
	Unmonitored []string `json:"unmonitored,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func certJSON(c managedcert.Certificate) certificate {
	out := certificate{Domain: c.Domain, SANs: c.SANs, DNSProvider: c.DNSProvider, AccountID: c.AccountID,
		KeyType: c.KeyType, Status: string(c.Status), Renewing: c.Renewing, Deleting: c.Deleting,
		Error: httpapi.NullIfEmpty(c.Error), Attempts: c.Attempt, RetryAt: timePtr(c.RetryAt),
		Serial: httpapi.NullIfEmpty(c.Serial), SHA256: httpapi.NullIfEmpty(c.SHA256), Issuer: httpapi.NullIfEmpty(c.Issuer),
		NotBefore: timePtr(c.NotBefore), NotAfter: timePtr(c.NotAfter), IssuedAt: timePtr(c.IssuedAt),
		NextRenewal: timePtr(c.NextRenewal), RenewalSource: httpapi.NullIfEmpty(c.RenewalSource),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	if out.SANs == nil {
		out.SANs = []string{}
	}
	if !c.NotAfter.IsZero() {
		d := int(time.Until(c.NotAfter).Hours() / 24)
		out.DaysLeft = &d
	}
	return out
}

// list is GET /api/certificates: page and per_page (at most 500).
func (h *Handler) list(c *gin.Context) {
	page, perPage, err := httpapi.Paging(c, 50, managedcert.MaxPageSize)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	certs, total, err := h.store.List(c.Request.Context(), httpapi.Principal(c).TenantID, (page-1)*perPage, perPage)
	if err != nil {
		fail(c, "", err)
		return
	}
	items := make([]certificate, len(certs))
	for i, cert := range certs {
		items[i] = certJSON(cert)
	}
	c.JSON(http.StatusOK, gin.H{"certificates": items, "total": total, "page": page, "per_page": perPage})
}

// domainParam is the :domain of a route, normalized as it was stored;
// an unparsable name is simply not found.
func domainParam(c *gin.Context) string {
	raw := c.Param("domain")
	if d, _, err := ParseName(raw); err == nil {
		return d
	}
	return raw
}

func (h *Handler) get(c *gin.Context) {
	domain := domainParam(c)
	cert, err := h.store.Get(c.Request.Context(), httpapi.Principal(c).TenantID, domain)
	if err != nil {
		fail(c, domain, err)
		return
	}
	c.JSON(http.StatusOK, certJSON(cert))
}

func (h *Handler) renew(c *gin.Context) {
	domain := domainParam(c)
	audit.Resource(c, domain)
	cert, err := h.store.RequestRenew(c.Request.Context(), httpapi.Principal(c).TenantID, domain)
	if err != nil {
		fail(c, domain, err)
		return
	}
	c.JSON(http.StatusAccepted, certJSON(cert))
}

// delete stops managing the domain; ?revoke=true has the worker revoke
// the certificate first (202 while it does).
func (h *Handler) delete(c *gin.Context) {
	domain := domainParam(c)
	audit.Resource(c, domain)
	revoke := c.Query("revoke")
	if revoke != "" && revoke != "true" && revoke != "false" {
		httpapi.Fail(c, httpapi.BadRequest(`revoke must be "true" or "false"`))
		return
	}
	audit.Detail(c, "revoke", revoke == "true")
	cert, err := h.store.Delete(c.Request.Context(), httpapi.Principal(c).TenantID, domain, revoke == "true")
	if err != nil {
		fail(c, domain, err)
		return
	}
	if cert.Deleting {
		c.JSON(http.StatusAccepted, gin.H{"message": "Certificate will be revoked, then removed", "certificate": certJSON(cert)})
		return
	}
	c.JSON(http.StatusOK, gin.H{"message": "Certificate removed", "domain": domain})
}

// The files of a download and whether each holds the private key.
var downloadFiles = map[string]bool{
	"cert.pem": false, "chain.pem": false, "fullchain.pem": false, "privkey.pem": true, "combined.pem": true,
}

// DownloadFile tells whether name is a file of a download (cert.pem,
// chain.pem, fullchain.pem, privkey.pem, combined.pem) and whether it
// holds the private key, which needs a write key.
func DownloadFile(name string) (private, known bool) {
	private, known = downloadFiles[name]
	return private, known
}

// FileContents is the file name of a download made of m (DownloadFile's
// names).
func FileContents(m managedcert.Material, name string) string {
	switch name {
	case "cert.pem":
		return m.CertPEM
	case "chain.pem":
		return m.ChainPEM
	case "fullchain.pem":
		return m.FullchainPEM()
	case "privkey.pem":
		return string(m.PrivateKeyPEM)
	case "combined.pem":
		return m.FullchainPEM() + string(m.PrivateKeyPEM)
	}
	return ""
}

// download is GET /api/certificates/<domain>/download: a zip of every
// file (default), one file (?file=), or JSON (?format=json).
func (h *Handler) download(c *gin.Context) {
	domain := domainParam(c)
	audit.Resource(c, domain)
	file, format := c.Query("file"), c.Query("format")
	private, known := DownloadFile(file)
	switch {
	case format != "" && format != "json":
		httpapi.Fail(c, httpapi.BadRequest(`format must be "json"`))
		return
	case format == "json" && file != "":
		httpapi.Fail(c, httpapi.BadRequest("give file or format, not both"))
		return
	case file != "" && !known:
		httpapi.Fail(c, httpapi.BadRequest("file must be one of cert.pem, chain.pem, fullchain.pem, privkey.pem, combined.pem"))
		return
	case file == "":
		private = true // the zip and the JSON hold the key
	}
	audit.Detail(c, "file", file)
	audit.Detail(c, "format", format)
	audit.Detail(c, "private_key", private)
	p := httpapi.Principal(c)
	if private {
		if err := httpapi.CanDownloadKey(p, "cert.pem, chain.pem and fullchain.pem"); err != nil {
			httpapi.Fail(c, err)
			return
		}
	}
	_, m, err := h.store.OpenMaterial(c.Request.Context(), p.TenantID, domain)
	if err != nil {
		fail(c, domain, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	name := strings.ReplaceAll(domain, "*", "_")
	switch {
	case format == "json":
		c.JSON(http.StatusOK, gin.H{"domain": domain, "cert_pem": m.CertPEM, "chain_pem": m.ChainPEM,
			"fullchain_pem": m.FullchainPEM(), "private_key_pem": string(m.PrivateKeyPEM)})
	case file != "":
		c.Header("Content-Disposition", `attachment; filename="`+file+`"`)
		c.Data(http.StatusOK, "application/x-pem-file", []byte(FileContents(m, file)))
	default:
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
			hdr := &zip.FileHeader{Name: f, Method: zip.Deflate, Modified: time.Now()}
			hdr.SetMode(0o600)
			w, err := zw.CreateHeader(hdr)
			if err == nil {
				_, err = w.Write([]byte(FileContents(m, f)))
			}
			if err != nil {
				httpapi.Fail(c, err)
				return
			}
		}
		if err := zw.Close(); err != nil {
			httpapi.Fail(c, err)
			return
		}
		c.Header("Content-Disposition", `attachment; filename="`+name+`.zip"`)
		c.Data(http.StatusOK, "application/zip", buf.Bytes())
	}
}
