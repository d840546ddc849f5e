package v1

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
)

// Paging and filtering of GET /domains, as SSLTrackr documents them.
const (
	defaultPerPage = 20
	maxPerPage     = 100
	maxSearchLen   = 253
	statusAll      = "all"
	// domainSourceAPI is the Source of domains added through POST /domains.
	domainSourceAPI = "api"
)

// domainRoutes serves /api/v1/domains.
func (h *Handler) domainRoutes(g *gin.RouterGroup) {
	read, write := h.guard(accounts.ScopeRead), h.guard(accounts.ScopeWrite)
	g.GET("/domains", append(read, h.listDomains)...)
	g.POST("/domains", append(write, h.createDomain)...)
	g.POST("/domains/bulk", append(write, h.bulkCreateDomains)...)
	g.GET("/domains/:id", append(read, h.getDomain)...)
	g.PUT("/domains/:id", append(write, h.updateDomain)...)
	g.DELETE("/domains/:id", append(write, h.deleteDomain)...)
}

// Domain is a domain as SSLTrackr shows it. The SSL fields are null
// until a scan arrived; whois_days_remaining is null until the registration
// of the domain's registrable domain was looked up, and whenever no expiry
// is known (WhoisStatus, an addition, says why). SSLStatus (an addition) is
// what the status filter matches, WhoisStatus what whois_status matches.
type Domain struct {
	ID                 string     `json:"id"`
	Hostname           string     `json:"hostname"`
	Port               int        `json:"port"`
	IsActive           bool       `json:"is_active"`
	SSLGrade           *string    `json:"ssl_grade"`
	SSLDaysRemaining   *int       `json:"ssl_days_remaining"`
	SSLStatus          *string    `json:"ssl_status"`
	WhoisDaysRemaining *int       `json:"whois_days_remaining"`
	WhoisStatus        string     `json:"whois_status"`
	Notes              string     `json:"notes"`
	Tags               []string   `json:"tags"`
	CreatedAt          *time.Time `json:"created_at"`
	UpdatedAt          *time.Time `json:"updated_at"`
}

// domainOut is a domain with the verdict over its view at now, and its
// registration's (whoisAt's or whoisDays').
func (h *Handler) domainOut(d accounts.Domain, entries []projector.ExpEntry, whoisDays *int, whoisStatus string, now time.Time) Domain {
	sum := grade.Summarize(entries, now, h.thresholds())
	return Domain{
		WhoisDaysRemaining: whoisDays, WhoisStatus: whoisStatus,
		ID: d.ID, Hostname: d.Host, Port: d.Port, IsActive: d.Active,
		SSLGrade: httpapi.NullIfEmpty(sum.Grade), SSLDaysRemaining: sum.DaysRemaining, SSLStatus: httpapi.NullIfEmpty(sum.Status),
		Notes: d.Notes, Tags: d.Tags, CreatedAt: timeOrNull(d.CreatedAt), UpdatedAt: timeOrNull(d.UpdatedAt),
	}
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// replyDomain reads d's views and answers d with code.
func (h *Handler) replyDomain(c *gin.Context, code int, d accounts.Domain) {
	out, err := h.graded(c.Request.Context(), []accounts.Domain{d}, h.cfg.Now())
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(code, out[0])
}

// graded answers domains with what their expiration and registration
// views say at now.
func (h *Handler) graded(ctx context.Context, domains []accounts.Domain, now time.Time) ([]Domain, error) {
	ids := make([]string, len(domains))
	for i, d := range domains {
		ids[i] = d.ID
	}
	views, err := projector.Views(ctx, h.rdb, ids)
	if err != nil {
		return nil, err
	}
	regs, err := h.registrationsOf(ctx, domains)
	if err != nil {
		return nil, err
	}
	out := make([]Domain, len(domains))
	for i, d := range domains {
		days, status := h.whoisDays(d.Host, regs, now)
		out[i] = h.domainOut(d, views[d.ID].For(d.Name()), days, status, now)
	}
	return out, nil
}

// listed answers a page's domains from their records (decoded and ok, as
// h.records.Listed gives them), its rows' registration facts
// (domainindex.Row) and their views, at now. The registration verdict
// comes from the index's facts, the ones the whois_status filter and the
// whois_days_remaining sort read, so a domain shows the status it was
// listed under.
func (h *Handler) listed(ctx context.Context, page domainindex.Page, decoded []accounts.Domain, ok []bool, now time.Time) ([]Domain, error) {
	domains := make([]accounts.Domain, 0, len(page.IDs))
	rows := make([]domainindex.Row, 0, len(page.IDs))
	ids := make([]string, 0, len(page.IDs))
	for i, d := range decoded {
		if ok[i] {
			domains, rows, ids = append(domains, d), append(rows, page.Rows[i]), append(ids, d.ID)
		}
	}
	views, err := h.views.Views(ctx, h.rdb, ids)
	if err != nil {
		return nil, err
	}
	out := make([]Domain, len(domains))
	for i, d := range domains {
		var exp *time.Time
		reason := rows[i].WhoisReason
		if rows[i].WhoisMS != 0 {
			t := time.UnixMilli(rows[i].WhoisMS)
			exp = &t
		} else if reason == "" {
			reason = domainindex.ReasonPending
		}
		days, status := h.whoisAt(exp, reason, now)
		out[i] = h.domainOut(d, views[d.ID].For(d.Name()), days, status, now)
	}
	return out, nil
}

// parseHostname checks a hostname field: a domain name without a port
// (the port is a field of its own).
func parseHostname(h string) (string, error) {
	host, _, err := domainname.Parse(h)
	if err != nil {
		return "", err
	}
	if strings.Contains(h, ":") {
		return "", httpapi.BadRequest(fmt.Sprintf("hostname %q must not contain a port; send it in the port field", h))
	}
	return host, nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return httpapi.BadRequest(fmt.Sprintf("port must be from 1 to 65535, got %d", p))
	}
	return nil
}

type createDomainRequest struct {
	Hostname string   `json:"hostname"`
	Port     *int     `json:"port"`
	Notes    string   `json:"notes"`
	Tags     []string `json:"tags"`
}

// newDomain checks the request of one add, POST /domains' body or an
// item of POST /domains/bulk, and returns the domain to add from source.
// The store checks notes and tags.
func (req createDomainRequest) newDomain(source string) (accounts.NewDomain, error) {
	if req.Hostname == "" {
		return accounts.NewDomain{}, httpapi.BadRequest("hostname is required")
	}
	host, err := parseHostname(req.Hostname)
	if err != nil {
		return accounts.NewDomain{}, err
	}
	port := domainname.DefaultPort
	if req.Port != nil {
		if err := checkPort(*req.Port); err != nil {
			return accounts.NewDomain{}, err
		}
		port = *req.Port
	}
	return accounts.NewDomain{Host: host, Port: port, Notes: req.Notes, Tags: req.Tags, Source: source}, nil
}

// createDomain is POST /domains. A new domain is due at once in the
// coordinator, so every region scans it within seconds.
func (h *Handler) createDomain(c *gin.Context) {
	var req createDomainRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	nd, err := req.newDomain(domainSourceAPI)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	d, added, err := h.accounts.AddDomain(c.Request.Context(), httpapi.Principal(c).TenantID, nd)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if !added {
		// The 409 names the domain the caller already has, so a client can
		// go on with it (SSLTrackr's body plus "id"); a held key that
		// cannot read it gets the plain 409.
		if err := h.accounts.CanRead(c.Request.Context(), httpapi.Principal(c), d.ID); err == nil {
			c.JSON(http.StatusConflict, existingBody{Error: msgDomainTaken, ID: d.ID})
			return
		}
		httpapi.Fail(c, accounts.ErrDomainExists)
		return
	}
	h.syncIndex(c, d.ID)
	h.replyDomain(c, http.StatusCreated, d)
}

// syncIndex has the list index show domain id's registration at once
// after an add or a rename, rather than when the projector applies its
// event (which it does anyway: a failure here is only logged). A bulk
// import leaves it to the projector.
func (h *Handler) syncIndex(c *gin.Context, id string) {
	if err := projector.SyncTenantIndex(c.Request.Context(), h.rdb, httpapi.Principal(c).TenantID, []string{id}); err != nil {
		h.logger.Warn("sync list index", zap.String("domain_id", id), zap.Error(err))
	}
}

// getDomain is GET /domains/{id}.
func (h *Handler) getDomain(c *gin.Context) {
	d, err := h.accounts.GetDomain(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	h.replyDomain(c, http.StatusOK, d)
}

type updateDomainRequest struct {
	Hostname *string   `json:"hostname"`
	Port     *int      `json:"port"`
	IsActive *bool     `json:"is_active"`
	Notes    *string   `json:"notes"`
	Tags     *[]string `json:"tags"`
}

// updateDomain is PUT /domains/{id}: a partial update. A rename keeps the
// id and frees the old name, and an active renamed domain is scanned at
// once: its view was for the old name and is empty now, and its next
// scheduled scan may be hours away. An inactive domain is not scanned.
func (h *Handler) updateDomain(c *gin.Context) {
	var req updateDomainRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	p, err := DomainPatch(req.Hostname, req.Port, req.IsActive, req.Notes, req.Tags)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	// A rename needs no scan request here: the coordinator makes a domain
	// whose name changed due at once.
	d, err := h.accounts.UpdateDomain(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"), p)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if p.Host != nil {
		h.syncIndex(c, d.ID)
	}
	h.replyDomain(c, http.StatusOK, d)
}

// DomainPatch checks the fields of a partial update of a domain (PUT
// /domains/{id}; nil leaves a field as it is) and returns the store's
// patch. The store checks notes and tags.
func DomainPatch(hostname *string, port *int, active *bool, notes *string, tags *[]string) (accounts.DomainPatch, error) {
	p := accounts.DomainPatch{Active: active, Notes: notes, Tags: tags}
	if hostname != nil {
		host, err := parseHostname(*hostname)
		if err != nil {
			return p, err
		}
		p.Host = &host
	}
	if port != nil {
		if err := checkPort(*port); err != nil {
			return p, err
		}
		p.Port = port
	}
	return p, nil
}

// NewDomain checks the fields of an added domain (POST /domains; port nil
// is 443) and returns the store's domain from source.
func NewDomain(hostname string, port *int, notes string, tags []string, source string) (accounts.NewDomain, error) {
	return createDomainRequest{Hostname: hostname, Port: port, Notes: notes, Tags: tags}.newDomain(source)
}

// deleteDomain is DELETE /domains/{id}.
func (h *Handler) deleteDomain(c *gin.Context) {
	if _, err := h.accounts.RemoveDomain(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id")); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"message": "Domain deleted"})
}

// domainQuery is GET /domains' query.
type domainQuery struct {
	page, perPage int
	cursor        string
	status        string
	whoisStatus   string
	search        string
	tag           string
	sort          string
	desc          bool
}

// parseDomainQuery reads and checks the query; a bad value is a
// BadRequest naming the parameter.
func parseDomainQuery(c *gin.Context) (domainQuery, error) {
	q := domainQuery{status: statusAll, whoisStatus: statusAll, sort: "created_at", desc: true}
	var err error
	if q.page, q.perPage, err = httpapi.Paging(c, defaultPerPage, maxPerPage); err != nil {
		return q, err
	}
	if v, ok := c.GetQuery("status"); ok {
		if v != statusAll && !slices.Contains(grade.Statuses, v) {
			return q, httpapi.BadRequest(fmt.Sprintf("status must be one of %s, got %q", strings.Join(append([]string{statusAll}, grade.Statuses...), ", "), v))
		}
		q.status = v
	}
	if v, ok := c.GetQuery("whois_status"); ok {
		if v != statusAll && !slices.Contains(whoisStatuses, v) {
			return q, httpapi.BadRequest(fmt.Sprintf("whois_status must be one of %s, got %q", strings.Join(append([]string{statusAll}, whoisStatuses...), ", "), v))
		}
		q.whoisStatus = v
	}
	if v, ok := c.GetQuery("search"); ok {
		if len(v) > maxSearchLen {
			return q, httpapi.BadRequest(fmt.Sprintf("search must be at most %d characters", maxSearchLen))
		}
		q.search = domainname.SearchTerm(v)
	}
	if v, ok := c.GetQuery("tag"); ok {
		if utf8.RuneCountInString(v) > accounts.MaxTagLen {
			return q, httpapi.BadRequest(fmt.Sprintf("tag must be at most %d characters", accounts.MaxTagLen))
		}
		q.tag = v
	}
	if v, ok := c.GetQuery("sort"); ok {
		if !slices.Contains(domainindex.Sorts, v) {
			return q, httpapi.BadRequest(fmt.Sprintf("sort must be one of %s, got %q", strings.Join(domainindex.Sorts, ", "), v))
		}
		q.sort = v
	}
	if v, ok := c.GetQuery("order"); ok {
		switch v {
		case "asc":
			q.desc = false
		case "desc":
			q.desc = true
		default:
			return q, httpapi.BadRequest(fmt.Sprintf("order must be asc or desc, got %q", v))
		}
	}
	q.cursor = c.Query("cursor")
	return q, nil
}

// Pagination is where a page of a list is.
type Pagination struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Total      int `json:"total"`
	TotalPages int `json:"total_pages"`
}

// DomainList is one page of GET /domains.
type DomainList struct {
	Data       []Domain   `json:"data"`
	Pagination Pagination `json:"pagination"`
	// NextCursor (an addition) continues the list after this page; null
	// on the last page.
	NextCursor *string `json:"next_cursor"`
}

// listDomains is GET /domains: a thin adapter over domainindex.List,
// whose cost follows the page, not the tenant. A cursor continues where
// the previous page ended; without one, page and per_page work as they
// always did.
func (h *Handler) listDomains(c *gin.Context) {
	out, err := h.DomainPage(c, httpapi.Principal(c).TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	buf := listBuffers.Get().(*[]byte)
	*buf = appendDomainList((*buf)[:0], out)
	c.Data(http.StatusOK, "application/json; charset=utf-8", *buf)
	if cap(*buf) <= maxPooledList {
		listBuffers.Put(buf)
	}
}

// listBuffers hold the JSON of a page while it is written; a buffer past
// maxPooledList (a page of long notes) is left to the collector.
var listBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

const maxPooledList = 1 << 20

// DomainPage answers GET /domains' query of c (page, per_page, status,
// whois_status, tag, search, sort, order) for tenant: what the API and the
// dashboard list.
func (h *Handler) DomainPage(c *gin.Context, tenant string) (DomainList, error) {
	q, err := parseDomainQuery(c)
	if err != nil {
		return DomainList{}, err
	}
	ctx := c.Request.Context()
	now := h.cfg.Now()
	th := h.thresholds()
	iq := domainindex.Query{
		Sort: q.sort, Desc: q.desc, Search: q.search, Tag: q.tag, Limit: q.perPage, Cursor: q.cursor,
		Offset: (q.page - 1) * q.perPage, Now: now, Warning: th.Warning, Critical: th.Critical,
	}
	if q.status != statusAll {
		iq.Status = q.status
	}
	if q.whoisStatus != statusAll {
		iq.WhoisStatus = q.whoisStatus
	}
	// The script returns the page's registration facts and the tenant's
	// record generation with its ids; the records not kept at that
	// generation (h.records) and the views are the other reads. A record
	// that may have changed between the two lists the page again (twice
	// at most; then the newer record shows).
	var page domainindex.Page
	var decoded []accounts.Domain
	var ok []bool
	for attempt := 0; ; attempt++ {
		page, err = domainindex.List(ctx, h.rdb, tenant, accounts.DomainKeyPrefix(tenant), iq)
		if errors.Is(err, domainindex.ErrBadCursor) {
			return DomainList{}, httpapi.BadRequest("cursor: " + err.Error())
		}
		if err != nil {
			return DomainList{}, err
		}
		var changed bool
		if decoded, ok, changed, err = h.records.Listed(ctx, h.rdb, tenant, page.Gen, page.IDs); err != nil {
			return DomainList{}, err
		}
		if !changed || attempt == 2 {
			break
		}
	}
	if page.SweepDue {
		h.attention.Due(tenant)
	}
	out, err := h.listed(ctx, page, decoded, ok, now)
	if err != nil {
		return DomainList{}, err
	}
	list := DomainList{
		Data:       out,
		Pagination: Pagination{Page: q.page, PerPage: q.perPage, Total: page.Total, TotalPages: (page.Total + q.perPage - 1) / q.perPage},
	}
	if page.NextCursor != "" {
		list.NextCursor = &page.NextCursor
	}
	return list, nil
}
