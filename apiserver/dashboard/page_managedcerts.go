package dashboard

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/managedcerts"
	"github.com/certfleet/certfleet/internal/managedcert"
)

// managedCertsPage is /managed-certs: the tenant's ACME certificates
// (the store behind /api/certificates): status, renew, delete, and
// download cert.pem, chain.pem and fullchain.pem (read) or privkey.pem
// (write). Renew, delete and every download are audit records, as in
// the API (resource type "managed_certificate"). Ordering one needs a
// DNS account: that is the API's (POST /api/certificates/create).
func (d *Dashboard) managedCertsPage() Page {
	const res = "managed_certificate"
	return Page{Path: "/managed-certs", Title: "Managed certificates", Nav: "Managed certs", Template: "managedcerts.html",
		Get: d.managedCerts,
		Actions: []Action{
			{Path: "/managed-certs/:domain/renew", Do: d.renewManaged, Before: d.audited("renew", res)},
			{Path: "/managed-certs/:domain/delete", Do: d.deleteManaged, Before: d.audited("delete", res)},
			{Path: "/managed-certs/:domain/download/:file", Scope: accounts.ScopeRead, Do: d.downloadManaged,
				Before: d.audited("download", res)},
		}}
}

// managedPerPage is the certificates a page of /managed-certs shows.
const managedPerPage = 50

type managedData struct {
	Certs        []managedcert.Certificate
	Total        int64
	Page, Pages  int
	Newer, Older string
	Enabled      bool
	// Files are the downloads the key may make.
	Files []string
}

func (d *Dashboard) managedCerts(r *Request) (any, error) {
	out := managedData{Page: 1, Enabled: d.deps.Managed.Enabled(), Files: []string{"cert.pem", "chain.pem", "fullchain.pem"}}
	if r.CanWrite() {
		out.Files = append(out.Files, "privkey.pem")
	}
	if p := r.Query("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 1_000_000 {
			return nil, httpapi.BadRequest("page must be a whole number from 1")
		}
		out.Page = n
	}
	certs, total, err := d.deps.Managed.List(r.Ctx(), r.Tenant(), (out.Page-1)*managedPerPage, managedPerPage)
	if err != nil {
		return nil, managedcerts.Explain("", err)
	}
	out.Certs, out.Total = certs, total
	out.Pages = max(1, int((total+managedPerPage-1)/managedPerPage))
	if out.Page > 1 {
		out.Newer = link("/managed-certs", "page", out.Page-1)
	}
	if out.Page < out.Pages {
		out.Older = link("/managed-certs", "page", out.Page+1)
	}
	return out, nil
}

// managedDomain is the :domain of an action, normalized as stored.
func managedDomain(r *Request) string {
	raw := r.Param("domain")
	if d, _, err := managedcerts.ParseName(raw); err == nil {
		return d
	}
	return raw
}

// renewManaged is POST /managed-certs/:domain/renew.
func (d *Dashboard) renewManaged(r *Request) (string, error) {
	domain := managedDomain(r)
	audit.Resource(r.Context, domain)
	if _, err := d.deps.Managed.RequestRenew(r.Ctx(), r.Tenant(), domain); err != nil {
		return "/managed-certs", auditFail(r, managedcerts.Explain(domain, err))
	}
	r.Flash(FlashInfo, "Renewal requested: "+domain)
	return "/managed-certs", nil
}

// deleteManaged is POST /managed-certs/:domain/delete; revoke=on has the
// worker revoke the certificate first.
func (d *Dashboard) deleteManaged(r *Request) (string, error) {
	domain := managedDomain(r)
	revoke := r.PostForm("revoke") == "on"
	audit.Resource(r.Context, domain)
	audit.Detail(r.Context, "revoke", revoke)
	cert, err := d.deps.Managed.Delete(r.Ctx(), r.Tenant(), domain, revoke)
	if err != nil {
		return "/managed-certs", auditFail(r, managedcerts.Explain(domain, err))
	}
	if cert.Deleting {
		r.Flash(FlashInfo, "Certificate will be revoked, then removed: "+domain)
	} else {
		r.Flash(FlashInfo, "Certificate removed: "+domain)
	}
	return "/managed-certs", nil
}

// downloadManaged is POST /managed-certs/:domain/download/:file: one PEM
// file; those with the private key need a write key.
func (d *Dashboard) downloadManaged(r *Request) (string, error) {
	domain, file := managedDomain(r), r.Param("file")
	audit.Resource(r.Context, domain)
	private, known := managedcerts.DownloadFile(file)
	audit.Detail(r.Context, "file", file)
	audit.Detail(r.Context, "private_key", private)
	if !known {
		return "/managed-certs", auditFail(r, httpapi.BadRequest("No such file: "+file))
	}
	if private && !r.CanWrite() {
		return "/managed-certs", auditFail(r, httpapi.Errorf(http.StatusForbidden, "Downloading a private key needs a key with write"))
	}
	_, m, err := d.deps.Managed.OpenMaterial(r.Ctx(), r.Tenant(), domain)
	if err != nil {
		return "/managed-certs", auditFail(r, managedcerts.Explain(domain, err))
	}
	attach(r, strings.ReplaceAll(domain, "*", "_")+"-"+file, "application/x-pem-file", []byte(managedcerts.FileContents(m, file)))
	return "", nil
}
