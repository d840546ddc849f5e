package dashboard

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// clientCertsPage is /client-certs: the tenant's client certificates of
// the private CA (the store behind /api/client-certs): list, issue with
// a generated key, revoke, and download the certificate (read) or its
// private key (write). Issue, revoke and every download are audit
// records, as in the API (resource type audit.ResourceCertificate).
func (d *Dashboard) clientCertsPage() Page {
	return Page{Path: "/client-certs", Title: "Client certificates", Nav: "Client certs", Template: "clientcerts.html",
		Get: d.clientCerts,
		Actions: []Action{
			{Path: "/client-certs/create", Do: d.createClientCert, Before: d.audited("create", audit.ResourceCertificate)},
			{Path: "/client-certs/:id/revoke", Do: d.revokeClientCert, Before: d.audited("revoke", audit.ResourceCertificate)},
			{Path: "/client-certs/:id/download/:type", Scope: accounts.ScopeRead, Do: d.downloadClientCert,
				Before: d.audited("download", audit.ResourceCertificate)},
		}}
}

// audited are the handlers that make an action an audit record of
// operation on resourceType, as the API's routes are: the record, then
// the error page, so that a refusal before the action (a stale form) is
// recorded with its status. A refused action is a failure with its
// message (auditFail).
func (d *Dashboard) audited(operation, resourceType string) []gin.HandlerFunc {
	return []gin.HandlerFunc{d.deps.Audit.Audited(operation, resourceType), d.renderErrors}
}

// auditFail notes err in the request's audit record and returns it.
func auditFail(r *Request, err error) error {
	msg := "internal error"
	if e := httpapi.AsError(err); e != nil && e.Status < http.StatusInternalServerError {
		msg = e.Msg
	}
	audit.SetError(r.Context, msg)
	return err
}

type clientCertsData struct {
	Certs   []clientCertRow
	Search  string
	CanSign bool
}

type clientCertRow struct {
	clientca.Cert
	Status string
}

func (d *Dashboard) clientCerts(r *Request) (any, error) {
	out := clientCertsData{Search: r.Query("search"), CanSign: d.deps.ClientCA.CanSign()}
	certs, err := d.deps.ClientCA.List(r.Ctx(), r.Tenant(), clientca.Filter{Search: out.Search})
	if err != nil {
		return nil, clientcerts.Explain("", err)
	}
	now := d.cfg.Now()
	for _, c := range certs {
		out.Certs = append(out.Certs, clientCertRow{Cert: c, Status: c.Status(now)})
	}
	return out, nil
}

// createClientCert is POST /client-certs/create: a certificate with a
// key certfleet generates (a CSR is the API's).
func (d *Dashboard) createClientCert(r *Request) (string, error) {
	req := clientca.CreateRequest{CommonName: strings.TrimSpace(r.PostForm("common_name")),
		Email: strings.TrimSpace(r.PostForm("email")), Organization: strings.TrimSpace(r.PostForm("organization")),
		Usage: r.PostForm("cert_usage"), GenerateKey: true, KeyType: r.PostForm("key_type")}
	if v := strings.TrimSpace(r.PostForm("days_valid")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return "/client-certs", auditFail(r, httpapi.BadRequest("Days valid must be a whole number"))
		}
		req.DaysValid = n
	}
	audit.Detail(r.Context, "common_name", req.CommonName)
	audit.Detail(r.Context, "usage", req.Usage)
	audit.Detail(r.Context, "generate_key", true)
	cert, err := d.deps.ClientCA.Create(r.Ctx(), r.Tenant(), req)
	if err != nil {
		return "/client-certs", auditFail(r, clientcerts.Explain("", err))
	}
	audit.Resource(r.Context, cert.ID)
	audit.Detail(r.Context, "serial_number", cert.Serial.String())
	r.Flash(FlashInfo, "Certificate issued: "+cert.CommonName+" ("+cert.ID+")")
	return "/client-certs", nil
}

// revokeClientCert is POST /client-certs/:id/revoke.
func (d *Dashboard) revokeClientCert(r *Request) (string, error) {
	id, reason := r.Param("id"), r.PostForm("reason")
	audit.Detail(r.Context, "reason", reason)
	if _, err := d.deps.ClientCA.Revoke(r.Ctx(), r.Tenant(), id, reason); err != nil {
		return "/client-certs", auditFail(r, clientcerts.Explain(id, err))
	}
	r.Flash(FlashInfo, "Certificate revoked: "+id)
	return "/client-certs", nil
}

// downloadClientCert is POST /client-certs/:id/download/crt|key: the
// certificate for a read key, the private key only for a write key.
func (d *Dashboard) downloadClientCert(r *Request) (string, error) {
	id, kind := r.Param("id"), r.Param("type")
	audit.Detail(r.Context, "type", kind)
	if kind == clientca.DownloadKey {
		if err := httpapi.CanDownloadKey(r.Principal, "the certificate"); err != nil {
			return "/client-certs", auditFail(r, err)
		}
	}
	data, err := d.deps.ClientCA.Download(r.Ctx(), r.Tenant(), id, kind)
	if err != nil {
		return "/client-certs", auditFail(r, clientcerts.Explain(id, err))
	}
	attach(r, id+"."+kind, "application/x-pem-file", data)
	return "", nil
}

// attach answers a download.
func attach(r *Request, name, contentType string, data []byte) {
	r.Header("Content-Disposition", `attachment; filename="`+name+`"`)
	r.Header("Cache-Control", "no-store")
	r.Data(http.StatusOK, contentType, data)
}
