package v1

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// Limits of the history routes.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
	// maxLeaves caps GET /certificates: a domain serves a few certificates
	// a year, so this many is years of renewals (or a misconfiguration).
	maxLeaves = 500
	// plannerWeeks is how far the expiry planner of GET /stats looks.
	plannerWeeks = 12
	// maxFilterLen bounds the region filter.
	maxFilterLen = 64
)

// statsWindows are the windows GET /stats takes.
var statsWindows = map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

// defaultStatsWindow is GET /stats' window when none is given.
const defaultStatsWindow = "24h"

// historyRoutes serves the history and analytics routes, read from
// ClickHouse.
func (h *Handler) historyRoutes(g *gin.RouterGroup) {
	read := h.guard(accounts.ScopeRead)
	g.GET("/domains/:id/history", append(read, h.scanHistory)...)
	g.GET("/domains/:id/certificates", append(read, h.certificates)...)
	g.GET("/stats", append(read, h.stats)...)
}

// historyParams are GET /domains/{id}/history's query parameters.
type historyParams struct {
	from, to   time.Time // zero: unbounded
	region, ip string
	limit      int
	after      *schema.HistoryCursor
}

// parseHistoryParams reads and checks GET /history's query: a bad value
// is a 400 saying which parameter and why.
func parseHistoryParams(c *gin.Context) (historyParams, error) {
	var (
		p   historyParams
		err error
	)
	if p.from, err = timeParam(c, "from"); err != nil {
		return p, err
	}
	if p.to, err = timeParam(c, "to"); err != nil {
		return p, err
	}
	if !p.from.IsZero() && !p.to.IsZero() && !p.from.Before(p.to) {
		return p, httpapi.BadRequest(fmt.Sprintf("from (%s) must be before to (%s)", p.from.Format(time.RFC3339), p.to.Format(time.RFC3339)))
	}
	p.region = c.Query("region")
	if len(p.region) > maxFilterLen {
		return p, httpapi.BadRequest(fmt.Sprintf("region must be at most %d characters", maxFilterLen))
	}
	if v := c.Query("ip"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return p, httpapi.BadRequest(fmt.Sprintf("ip must be an IPv4 or IPv6 address, got %q", v))
		}
		p.ip = a.Unmap().String() // as agents write it
	}
	if p.limit, err = httpapi.PageParam(c, "limit", defaultHistoryLimit, maxHistoryLimit); err != nil {
		return p, err
	}
	if v := c.Query("cursor"); v != "" {
		cur, err := decodeCursor(v)
		if err != nil {
			return p, httpapi.BadRequest("cursor is not one this API gave: pass next_cursor of the previous page as it is")
		}
		p.after = &cur
	}
	return p, nil
}

// Earliest and latest times the history holds (ClickHouse's DateTime).
var (
	minHistoryTime = time.Unix(0, 0).UTC()
	maxHistoryTime = time.Unix(1<<32-1, 0).UTC()
)

// timeParam reads an RFC 3339 time from the query; zero when absent.
func timeParam(c *gin.Context, name string) (time.Time, error) {
	v, ok := c.GetQuery(name)
	if !ok {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, httpapi.BadRequest(fmt.Sprintf("%s must be an RFC 3339 time such as 2030-06-01T12:00:00Z, got %q", name, v))
	}
	if t.Before(minHistoryTime) || t.After(maxHistoryTime) {
		return time.Time{}, httpapi.BadRequest(fmt.Sprintf("%s must be from %s to %s, got %q", name,
			minHistoryTime.Format(time.RFC3339), maxHistoryTime.Format(time.RFC3339), v))
	}
	return t.UTC(), nil
}

// cursorJSON is a cursor's content; the client sees it base64url-encoded
// and opaque, so it can change without notice.
type cursorJSON struct {
	At     int64  `json:"t"`
	Region string `json:"r"`
	IP     string `json:"i"`
	Job    string `json:"j"`
}

func encodeCursor(c schema.HistoryCursor) string {
	raw, _ := json.Marshal(cursorJSON{At: c.ScheduledAt.Unix(), Region: c.Region, IP: c.IP, Job: c.JobID.String()})
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCursor(s string) (schema.HistoryCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return schema.HistoryCursor{}, err
	}
	var cj cursorJSON
	if err := json.Unmarshal(raw, &cj); err != nil {
		return schema.HistoryCursor{}, err
	}
	job, err := uuid.Parse(cj.Job)
	if err != nil {
		return schema.HistoryCursor{}, err
	}
	at := time.Unix(cj.At, 0).UTC()
	if at.Before(minHistoryTime) || at.After(maxHistoryTime) || len(cj.Region) > maxFilterLen || len(cj.IP) > 64 {
		return schema.HistoryCursor{}, fmt.Errorf("cursor out of range")
	}
	return schema.HistoryCursor{ScheduledAt: at, Region: cj.Region, IP: cj.IP, JobID: job}, nil
}

// HistoryEntry is what one region saw at one IP of the domain in one scan.
type HistoryEntry struct {
	JobID       string    `json:"job_id"`
	ScheduledAt time.Time `json:"scheduled_at"`
	ScannedAt   time.Time `json:"scanned_at"`
	Region      string    `json:"region"`
	IP          *string   `json:"ip"`
	Outcome     string    `json:"outcome"`
	Detail      *string   `json:"detail"`
	LeafSHA256  *string   `json:"leaf_sha256"`
	// NotAfter is null when no certificate was seen; NoExpiry tells a
	// certificate without a well-defined expiration (RFC 5280).
	NotAfter    *time.Time `json:"not_after"`
	NoExpiry    bool       `json:"no_expiry"`
	TLSVersion  *string    `json:"tls_version"`
	ConnectMS   uint32     `json:"connect_ms"`
	HandshakeMS uint32     `json:"handshake_ms"`
}

// ScanHistoryPage is one page of GET /domains/{id}/history.
type ScanHistoryPage struct {
	DomainID string         `json:"domain_id"`
	Hostname string         `json:"hostname"`
	Data     []HistoryEntry `json:"data"`
	// NextCursor continues after the last entry; null on the last page.
	NextCursor *string `json:"next_cursor"`
}

// historyConn answers 503 and false when this server has no ClickHouse.
func (h *Handler) historyConn(c *gin.Context, what string) bool {
	if h.cfg.ClickHouse != nil {
		return true
	}
	httpapi.Fail(c, httpapi.Errorf(http.StatusServiceUnavailable,
		what+" is unavailable: this API server has no ClickHouse connection (--clickhouse-dsn)"))
	return false
}

// scanHistory is GET /domains/{id}/history: the domain's scan results,
// one entry per scan, region and IP, newest first, paged by cursor.
func (h *Handler) scanHistory(c *gin.Context) {
	if !h.historyConn(c, "scan history") {
		return
	}
	out, err := h.ScanHistory(c, httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

// ScanHistory answers GET /domains/{id}/history's query of c (from, to,
// region, ip, limit, cursor) for tenant's domain id.
func (h *Handler) ScanHistory(c *gin.Context, tenant, id string) (ScanHistoryPage, error) {
	p, err := parseHistoryParams(c)
	if err != nil {
		return ScanHistoryPage{}, err
	}
	d, err := h.accounts.GetDomain(c.Request.Context(), tenant, id)
	if err != nil {
		return ScanHistoryPage{}, err
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), historyQueryTimeout)
	defer cancel()
	// One row more than asked tells whether a next page exists.
	rows, err := schema.ScanHistoryPage(ctx, h.cfg.ClickHouse, schema.HistoryQuery{TenantID: d.TenantID, DomainID: d.ID,
		From: p.from, To: p.to, Region: p.region, IP: p.ip, After: p.after, Limit: p.limit + 1, Now: h.cfg.Now()})
	if err != nil {
		return ScanHistoryPage{}, err
	}
	out := ScanHistoryPage{DomainID: d.ID, Hostname: d.Host, Data: make([]HistoryEntry, 0, min(len(rows), p.limit))}
	if len(rows) > p.limit {
		rows = rows[:p.limit]
		next := encodeCursor(schema.CursorOf(rows[len(rows)-1]))
		out.NextCursor = &next
	}
	for _, r := range rows {
		e := HistoryEntry{JobID: r.JobID.String(), ScheduledAt: r.ScheduledAt, ScannedAt: r.ScannedAt, Region: r.Region,
			IP: httpapi.NullIfEmpty(r.IP), Outcome: r.Outcome, Detail: httpapi.NullIfEmpty(r.Detail),
			TLSVersion: httpapi.NullIfEmpty(r.TLSVersion), ConnectMS: r.ConnectMS, HandshakeMS: r.HandshakeMS}
		if r.CertificateFound {
			e.LeafSHA256, e.NotAfter, e.NoExpiry = httpapi.NullIfEmpty(r.LeafSHA256), utcOrNull(r.NotAfter), r.HasNoExpiry()
		}
		out.Data = append(out.Data, e)
	}
	return out, nil
}

// CertificateEntry is one certificate the domain served.
type CertificateEntry struct {
	LeafSHA256 string     `json:"leaf_sha256"`
	Subject    string     `json:"subject"`
	Issuer     string     `json:"issuer"`
	Serial     string     `json:"serial"`
	NotBefore  *time.Time `json:"not_before"`
	NotAfter   *time.Time `json:"not_after"`
	NoExpiry   bool       `json:"no_expiry"`
	FirstSeen  time.Time  `json:"first_seen"`
	LastSeen   time.Time  `json:"last_seen"`
	Scans      uint64     `json:"scans"`
	Seen       []Sighting `json:"seen"`
}

// Sighting is where a certificate was seen: one region and IP.
type Sighting struct {
	Region    string    `json:"region"`
	IP        string    `json:"ip"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Scans     uint64    `json:"scans"`
}

// CertificateTimeline is GET /domains/{id}/certificates' answer.
type CertificateTimeline struct {
	DomainID string             `json:"domain_id"`
	Hostname string             `json:"hostname"`
	Data     []CertificateEntry `json:"data"`
}

// certificates is GET /domains/{id}/certificates: every certificate the
// domain served, newest first, with where and when each was seen.
func (h *Handler) certificates(c *gin.Context) {
	if !h.historyConn(c, "the certificate timeline") {
		return
	}
	out, err := h.Certificates(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

// Certificates answers GET /domains/{id}/certificates for tenant's
// domain id.
func (h *Handler) Certificates(ctx context.Context, tenant, id string) (CertificateTimeline, error) {
	d, err := h.accounts.GetDomain(ctx, tenant, id)
	if err != nil {
		return CertificateTimeline{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, historyQueryTimeout)
	defer cancel()
	leaves, err := schema.CertificateTimeline(ctx, h.cfg.ClickHouse, d.TenantID, d.ID, maxLeaves)
	if err != nil {
		return CertificateTimeline{}, err
	}
	out := CertificateTimeline{DomainID: d.ID, Hostname: d.Host, Data: make([]CertificateEntry, 0, len(leaves))}
	for _, l := range leaves {
		e := CertificateEntry{LeafSHA256: l.SHA256, Subject: l.Subject, Issuer: l.Issuer, Serial: l.Serial,
			NotBefore: utcOrNull(l.NotBefore), NotAfter: utcOrNull(l.NotAfter), NoExpiry: l.NotAfter != nil && l.NotAfter.Equal(events.NoExpiry),
			FirstSeen: l.FirstSeen, LastSeen: l.LastSeen, Scans: l.Scans, Seen: make([]Sighting, len(l.Seen))}
		for i, s := range l.Seen {
			e.Seen[i] = Sighting{Region: s.Region, IP: s.IP, FirstSeen: s.FirstSeen, LastSeen: s.LastSeen, Scans: s.Scans}
		}
		out.Data = append(out.Data, e)
	}
	return out, nil
}

// parseWindow reads GET /stats' window.
func parseWindow(c *gin.Context) (string, time.Duration, error) {
	w, ok := c.GetQuery("window")
	if !ok {
		w = defaultStatsWindow
	}
	d, known := statsWindows[w]
	if !known {
		return "", 0, httpapi.BadRequest(fmt.Sprintf("window must be 24h, 7d or 30d, got %q", w))
	}
	return w, d, nil
}

// StatsCount is how many of the fleet's latest results share a value.
type StatsCount struct {
	Name string `json:"name"`
	// Endpoints counts (domain, region, IP) whose latest result shows it.
	Endpoints    uint64 `json:"endpoints"`
	Domains      uint64 `json:"domains"`
	Certificates uint64 `json:"certificates"`
}

// ExpiryWeek is one ISO week of the expiry planner.
type ExpiryWeek struct {
	Week         string    `json:"week"` // ISO 8601, e.g. 2030-W23
	StartsAt     time.Time `json:"starts_at"`
	Endpoints    uint64    `json:"endpoints"`
	Domains      uint64    `json:"domains"`
	Certificates uint64    `json:"certificates"`
	// Registrations counts the registrable domains (eTLD+1) of the
	// account's domains whose registration expires that week (RDAP or
	// WHOIS, as GET /domains/{id}/whois shows it).
	Registrations uint64 `json:"registrations"`
}

// ExpiryPlanner counts the latest certificates by when they expire.
type ExpiryPlanner struct {
	Weeks   []ExpiryWeek `json:"weeks"`
	Expired StatsCount   `json:"expired"`
	Later   StatsCount   `json:"later"`
}

// RegionStats are a region's scans in the window.
type RegionStats struct {
	Region    string            `json:"region"`
	Scans     uint64            `json:"scans"`
	Errors    uint64            `json:"errors"`
	ErrorRate float64           `json:"error_rate"`
	Outcomes  map[string]uint64 `json:"outcomes"`
	// HandshakeP50MS and HandshakeP95MS are over successful scans; null
	// when there was none.
	HandshakeP50MS *float64 `json:"handshake_ms_p50"`
	HandshakeP95MS *float64 `json:"handshake_ms_p95"`
}

// Stats is GET /stats' answer.
type Stats struct {
	Window string    `json:"window"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	// Domains counts the account's domains, Registrations them by
	// whois_status as GET /domains shows it (from the registration views).
	Domains       int            `json:"domains"`
	Registrations map[string]int `json:"registrations"`
	ExpiryPlanner ExpiryPlanner  `json:"expiry_planner"`
	Issuers       []StatsCount   `json:"issuers"`
	TLSVersions   []StatsCount   `json:"tls_versions"`
	Keys          []StatsCount   `json:"keys"`
	Regions       []RegionStats  `json:"regions"`
	Alerts        AlertCounts    `json:"alerts"`
}

// AlertCounts are the account's alerts by kind (alert_type).
type AlertCounts struct {
	// Open counts the active alerts by kind, now (not limited to the
	// window); kinds with none are left out.
	Open map[string]int64 `json:"open"`
	// OpenTotal is their sum.
	OpenTotal int64 `json:"open_total"`
	// Raised counts the alerts (notices too) triggered in the window.
	Raised int64 `json:"raised"`
}

// stats is GET /stats: the tenant's fleet at a glance over a window.
func (h *Handler) stats(c *gin.Context) {
	if !h.historyConn(c, "fleet statistics") {
		return
	}
	window, _, err := parseWindow(c)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out, err := h.Stats(c.Request.Context(), httpapi.Principal(c).TenantID, window)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}

// Stats answers GET /stats?window= for tenant; window is 24h, 7d or 30d.
func (h *Handler) Stats(ctx context.Context, tenant, window string) (Stats, error) {
	dur, ok := statsWindows[window]
	if !ok {
		return Stats{}, httpapi.BadRequest(fmt.Sprintf("window must be 24h, 7d or 30d, got %q", window))
	}
	ctx, cancel := context.WithTimeout(ctx, historyQueryTimeout)
	defer cancel()
	out, now, err := h.fleetStats(ctx, tenant, window, dur)
	if err != nil {
		return Stats{}, err
	}
	domains, err := h.accounts.ListDomains(ctx, tenant)
	if err != nil {
		return Stats{}, err
	}
	regs, err := h.registrationsOf(ctx, domains)
	if err != nil {
		return Stats{}, err
	}
	counts, err := h.alerts.OpenCounts(ctx, tenant, now.Add(-dur))
	if err != nil {
		return Stats{}, err
	}
	out.Alerts = AlertCounts{Open: counts.Open, Raised: counts.Raised}
	for _, n := range counts.Open {
		out.Alerts.OpenTotal += n
	}
	out.Domains = len(domains)
	planned := map[string]bool{}
	for _, d := range domains {
		_, status := h.whoisDays(d.Host, regs, now)
		out.Registrations[status]++
		if reg := projector.RegistrableOf(d.Host); !planned[reg] {
			planned[reg] = true
			if exp, _ := projector.WhoisExpiry(d.Host, regs); exp != nil {
				planRegistration(&out.ExpiryPlanner, *exp)
			}
		}
	}
	return out, nil
}

// planRegistration counts a registration expiring at exp in the planner's
// week that holds it, if any.
func planRegistration(p *ExpiryPlanner, exp time.Time) {
	for i := range p.Weeks {
		if w := &p.Weeks[i]; !exp.Before(w.StartsAt) && exp.Before(w.StartsAt.AddDate(0, 0, 7)) {
			w.Registrations++
			return
		}
	}
}

// fleetStats is what ClickHouse counts of tenant's fleet over the window
// ending now: Stats without the domains and registrations.
func (h *Handler) fleetStats(ctx context.Context, tenant, window string, dur time.Duration) (Stats, time.Time, error) {
	now := h.cfg.Now().UTC().Truncate(time.Second)
	st, err := schema.QueryFleetStats(ctx, h.cfg.ClickHouse, tenant, now.Add(-dur), now, plannerWeeks)
	if err != nil {
		return Stats{}, now, err
	}
	return statsOf(st, window, now.Add(-dur), now), now, nil
}

// ExpiryPlanner is the expiry planner of GET /stats for tenant, without
// the rest of the statistics (and without reading every domain and
// registration, which Stats does).
func (h *Handler) ExpiryPlanner(ctx context.Context, tenant string) (ExpiryPlanner, error) {
	ctx, cancel := context.WithTimeout(ctx, historyQueryTimeout)
	defer cancel()
	st, _, err := h.fleetStats(ctx, tenant, defaultStatsWindow, statsWindows[defaultStatsWindow])
	return st.ExpiryPlanner, err
}

// HasHistory tells whether this server reads history from ClickHouse
// (ScanHistory, Certificates and Stats need it).
func (h *Handler) HasHistory() bool { return h.cfg.ClickHouse != nil }

// statsOf shapes what ClickHouse counted.
func statsOf(st schema.FleetStats, window string, from, now time.Time) Stats {
	out := Stats{Window: window, From: from, To: now, Registrations: map[string]int{}, Issuers: []StatsCount{}, TLSVersions: []StatsCount{}, Keys: []StatsCount{},
		Regions: []RegionStats{}, ExpiryPlanner: ExpiryPlanner{Weeks: make([]ExpiryWeek, plannerWeeks)}}
	first := schema.WeekOf(now)
	weeks := map[string]int{}
	for i := range out.ExpiryPlanner.Weeks {
		start := first.AddDate(0, 0, 7*i)
		y, w := start.ISOWeek()
		out.ExpiryPlanner.Weeks[i] = ExpiryWeek{Week: fmt.Sprintf("%04d-W%02d", y, w), StartsAt: start}
		weeks[fmt.Sprint(start.Unix())] = i
	}
	for _, fc := range st.Latest {
		sc := StatsCount{Name: fc.Value, Endpoints: fc.Endpoints, Domains: fc.Domains, Certificates: fc.Certificates}
		switch fc.Dimension {
		case schema.DimIssuer:
			out.Issuers = append(out.Issuers, sc)
		case schema.DimTLSVersion:
			out.TLSVersions = append(out.TLSVersions, sc)
		case schema.DimKey:
			out.Keys = append(out.Keys, sc)
		case schema.DimExpired:
			out.ExpiryPlanner.Expired = sc
		case schema.DimLater:
			out.ExpiryPlanner.Later = sc
		case schema.DimExpiryWeek:
			if i, ok := weeks[fc.Value]; ok {
				w := &out.ExpiryPlanner.Weeks[i]
				w.Endpoints, w.Domains, w.Certificates = fc.Endpoints, fc.Domains, fc.Certificates
			}
		}
	}
	for _, ro := range st.Outcomes {
		if n := len(out.Regions); n == 0 || out.Regions[n-1].Region != ro.Region {
			out.Regions = append(out.Regions, RegionStats{Region: ro.Region, Outcomes: map[string]uint64{}})
		}
		r := &out.Regions[len(out.Regions)-1]
		r.Scans += ro.Scans
		r.Outcomes[ro.Outcome] += ro.Scans
		if ro.Outcome == string(events.OutcomeOK) {
			p50, p95 := ro.HandshakeP50, ro.HandshakeP95
			r.HandshakeP50MS, r.HandshakeP95MS = &p50, &p95
		} else {
			r.Errors += ro.Scans
		}
	}
	for i := range out.Regions {
		r := &out.Regions[i]
		r.ErrorRate = float64(r.Errors) / float64(r.Scans)
	}
	return out
}
