package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
)

// domainsPage is /domains: the tenant's domains, searched, filtered by
// tag and status, sorted and paged as GET /api/v1/domains does, with
// forms to add, check and delete.
func (d *Dashboard) domainsPage() Page {
	return Page{Path: "/domains", Title: "Domains", Nav: "Domains", Template: "domains.html", Get: d.domains,
		Actions: []Action{
			{Path: "/domains/add", Do: d.addDomain},
			{Path: "/domains/:id/check", Do: d.checkDomain, Classes: []string{v1.ClassCheck}},
			{Path: "/domains/:id/delete", Do: d.deleteDomain},
			{Path: "/domains/:id/edit", Do: d.editDomain},
		}}
}

// domainsPerPage is the page size of /domains when the query names none.
const domainsPerPage = 50

// dashboardSource is the Source of domains added here.
const dashboardSource = "dashboard"

type domainsData struct {
	List     v1.DomainList
	Query    domainsQuery
	Statuses []string
	Sorts    []sortOption
	Prev     string
	Next     string
}

// domainsQuery is the page's query as the filter form shows it.
type domainsQuery struct {
	Search, Status, Tag, Sort, Order string
}

type sortOption struct{ Value, Label string }

var domainSortOptions = []sortOption{
	{"created_at", "Added"}, {"hostname", "Name"}, {"ssl_days_remaining", "Certificate days left"},
	{"whois_days_remaining", "Registration days left"},
}

// domainRows is the domains page's one read of the domain list: the code
// behind GET /api/v1/domains, reading c's query. Swap it here for another
// read model.
func (d *Dashboard) domainRows(c *gin.Context, tenant string) (v1.DomainList, error) {
	return d.deps.V1.DomainPage(c, tenant)
}

func (d *Dashboard) domains(r *Request) (any, error) {
	q := r.Request.URL.Query()
	if q.Get("per_page") == "" {
		// Before anything read the query through gin, which caches it.
		q.Set("per_page", strconv.Itoa(domainsPerPage))
		r.Request.URL.RawQuery = q.Encode()
	}
	list, err := d.domainRows(r.Context, r.Tenant())
	if err != nil {
		return nil, err
	}
	out := domainsData{List: list, Statuses: grade.Statuses, Sorts: domainSortOptions,
		Query: domainsQuery{Search: q.Get("search"), Status: q.Get("status"), Tag: q.Get("tag"), Sort: q.Get("sort"), Order: q.Get("order")}}
	page := list.Pagination.Page
	if page > 1 {
		out.Prev = pageLink(q, page-1)
	}
	if page < list.Pagination.TotalPages {
		out.Next = pageLink(q, page+1)
	}
	return out, nil
}

func pageLink(q url.Values, page int) string {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	q2.Set("page", strconv.Itoa(page))
	return "/domains?" + q2.Encode()
}

// splitTags reads a comma-separated tag field.
func splitTags(s string) []string {
	var tags []string
	for t := range strings.SplitSeq(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// portField reads a port field; empty is nil (443 for an add).
func portField(s string) (*int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil {
		return nil, httpapi.BadRequest("port must be a number from 1 to 65535")
	}
	return &p, nil
}

// addDomain is POST /domains/add: what POST /api/v1/domains does.
func (d *Dashboard) addDomain(r *Request) (string, error) {
	port, err := portField(r.PostForm("port"))
	if err != nil {
		return "/domains", err
	}
	nd, err := v1.NewDomain(strings.TrimSpace(r.PostForm("hostname")), port, r.PostForm("notes"), splitTags(r.PostForm("tags")), dashboardSource)
	if err != nil {
		return "/domains", err
	}
	dom, added, err := d.deps.Accounts.AddDomain(r.Ctx(), r.Tenant(), nd)
	if err != nil {
		return "/domains", err
	}
	if !added {
		return "/domains", accounts.ErrDomainExists
	}
	r.Flash(FlashInfo, "Added "+dom.Name()+": every region scans it within seconds.")
	return "/domains/" + dom.ID, nil
}

// checkDomain is POST /domains/{id}/check: a scan now, as POST
// /api/v1/check asks for it; the domain's page refreshes until it lands.
func (d *Dashboard) checkDomain(r *Request) (string, error) {
	id := r.Param("id")
	to := "/domains/" + id
	err := d.deps.Accounts.RequestCheck(r.Ctx(), r.Tenant(), id)
	if errors.Is(err, accounts.ErrDomainInactive) {
		return to, httpapi.Errorf(http.StatusConflict, "The domain is paused: resume it to check it")
	}
	if err != nil {
		return to, err
	}
	r.Flash(FlashInfo, "Check requested: the results below refresh as regions answer.")
	return fmt.Sprintf("%s?checking=%d", to, d.cfg.Now().UnixMilli()), nil
}

// deleteDomain is POST /domains/{id}/delete.
func (d *Dashboard) deleteDomain(r *Request) (string, error) {
	dom, err := d.deps.Accounts.RemoveDomain(r.Ctx(), r.Tenant(), r.Param("id"))
	if err != nil {
		return "/domains", err
	}
	r.Flash(FlashInfo, "Deleted "+dom.Name()+".")
	return "/domains", nil
}

// editDomain is POST /domains/{id}/edit: what PUT /api/v1/domains/{id}
// does with every field of the form.
func (d *Dashboard) editDomain(r *Request) (string, error) {
	id := r.Param("id")
	to := "/domains/" + id
	port, err := portField(r.PostForm("port"))
	if err != nil {
		return to, err
	}
	host := strings.TrimSpace(r.PostForm("hostname"))
	notes := r.PostForm("notes")
	tags := splitTags(r.PostForm("tags"))
	if tags == nil {
		tags = []string{}
	}
	active := r.PostForm("active") == "on"
	p, err := v1.DomainPatch(&host, port, &active, &notes, &tags)
	if err != nil {
		return to, err
	}
	dom, err := d.deps.Accounts.UpdateDomain(r.Ctx(), r.Tenant(), id, p)
	if err != nil {
		return to, err
	}
	r.Flash(FlashInfo, "Saved "+dom.Name()+".")
	return to, nil
}
