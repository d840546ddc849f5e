package v1

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/internal/presence"
)

// Messages of the check routes.
const (
	msgNoSSLCheck   = "No SSL check yet"
	msgInactive     = "This domain is not active; set is_active to true to check it"
	msgCheckTimeout = "Timed out waiting for a fresh scan from every region"
	msgNoScan       = "Timed out waiting for a fresh scan"
	msgNoLookup     = "Timed out waiting for a fresh registration lookup"
	msgShuttingDown = "The server is shutting down; ask again (another replica will answer)"
)

// checkPoll is how often POST /check reads the view while it waits.
const checkPoll = 200 * time.Millisecond

// regionWindow: a region counts as active for POST /check when one of its
// agents said it was alive this recently (agents do every 10 s).
const regionWindow = time.Minute

// checkRoutes serves /api/v1/domains/:id/ssl, /domains/:id/whois, its
// /history and /check.
func (h *Handler) checkRoutes(g *gin.RouterGroup) {
	g.GET("/domains/:id/ssl", append(h.guard(accounts.ScopeRead), h.sslCheck)...)
	g.GET("/domains/:id/whois", append(h.guard(accounts.ScopeRead), h.whoisCheck)...)
	g.GET("/domains/:id/whois/history", append(h.guard(accounts.ScopeRead), h.whoisHistory)...)
	g.POST("/check", append(h.guard(accounts.ScopeWrite, ClassCheck), h.manualCheck)...)
}

// thresholds are the status and grade thresholds of the configuration.
func (h *Handler) thresholds() grade.Thresholds {
	return grade.Thresholds{Warning: h.cfg.WarningDays, Critical: h.cfg.CriticalDays}
}

// SSLResult is what one IP showed one region, with its grade.
type SSLResult struct {
	IP               string     `json:"ip"`
	Region           string     `json:"region"`
	Port             int        `json:"port"`
	Outcome          string     `json:"outcome"`
	Detail           string     `json:"detail"`
	ScannedAt        time.Time  `json:"scanned_at"`
	Grade            *string    `json:"grade"`
	GradeReasons     []string   `json:"grade_reasons"`
	CertificateFound bool       `json:"certificate_found"`
	Subject          *string    `json:"subject"`
	Issuer           *string    `json:"issuer"`
	SANs             []string   `json:"sans"`
	SerialNumber     *string    `json:"serial_number"`
	ValidFrom        *time.Time `json:"valid_from"`
	ValidTo          *time.Time `json:"valid_to"`
	DaysRemaining    *int       `json:"days_remaining"`
	// NoExpiry: as SSLCheck's.
	NoExpiry              bool     `json:"no_expiry,omitempty"`
	CertificateSHA256     *string  `json:"certificate_sha256"`
	KeyType               *string  `json:"key_type"`
	KeyBits               *int     `json:"key_bits"`
	SignatureAlgorithm    *string  `json:"signature_algorithm"`
	ChainLength           int      `json:"chain_length"`
	TLSVersion            *string  `json:"tls_version"`
	CipherSuite           *string  `json:"cipher_suite"`
	ChainValid            bool     `json:"chain_valid"`
	HostnameValid         bool     `json:"hostname_valid"`
	HTTPStatus            *int     `json:"http_status"`
	HSTS                  bool     `json:"hsts"`
	HSTSMaxAge            int64    `json:"hsts_max_age"`
	HSTSIncludeSubdomains bool     `json:"hsts_include_subdomains"`
	LegacyTLSChecked      bool     `json:"legacy_tls_checked"`
	LegacyTLS             []string `json:"legacy_tls"`
	ConnectMS             int64    `json:"connect_ms"`
	HandshakeMS           int64    `json:"handshake_ms"`
}

// SSLCheck is GET /domains/{id}/ssl: SSLTrackr's fields, describing the
// certificate that expires first, plus the domain's grade and status and
// every IP's result from every region.
type SSLCheck struct {
	// ID is the scan.completed event the first-expiring entry came from.
	ID            string     `json:"id"`
	DomainID      string     `json:"domain_id"`
	Hostname      string     `json:"hostname"`
	Port          int        `json:"port"`
	Subject       *string    `json:"subject"`
	Issuer        *string    `json:"issuer"`
	ValidFrom     *time.Time `json:"valid_from"`
	ValidTo       *time.Time `json:"valid_to"`
	DaysRemaining *int       `json:"days_remaining"`
	// NoExpiry: the certificate has no well-defined expiration (notAfter
	// 9999-12-31T23:59:59Z, RFC 5280): days_remaining is null.
	NoExpiry     bool     `json:"no_expiry,omitempty"`
	SerialNumber *string  `json:"serial_number"`
	TLSVersion   *string  `json:"tls_version"`
	ChainValid   bool     `json:"chain_valid"`
	HSTS         bool     `json:"hsts"`
	SANs         []string `json:"sans"`
	// Grade is the worst IP's; null when no IP showed a certificate.
	Grade        *string     `json:"grade"`
	GradeReasons []string    `json:"grade_reasons"`
	Status       string      `json:"status"`
	CheckedAt    time.Time   `json:"checked_at"`
	Regions      []string    `json:"regions"`
	Results      []SSLResult `json:"results"`
}

// sslBody builds the /ssl answer from a domain's view; nil when the view
// is empty (never scanned).
func (h *Handler) sslBody(d accounts.Domain, entries []projector.ExpEntry) *SSLCheck {
	now := h.cfg.Now()
	sum := grade.Summarize(entries, now, h.thresholds())
	if sum.CheckedAt == nil {
		return nil
	}
	b := &SSLCheck{
		DomainID:      d.ID,
		Hostname:      d.Host,
		Port:          d.Port,
		DaysRemaining: sum.DaysRemaining,
		NoExpiry:      sum.NoExpiry,
		Grade:         httpapi.NullIfEmpty(sum.Grade),
		GradeReasons:  nonNilStrings(sum.Reasons),
		Status:        sum.Status,
		CheckedAt:     sum.CheckedAt.UTC(),
		SANs:          []string{},
		Regions:       []string{},
		Results:       make([]SSLResult, len(entries)),
	}
	for i, e := range entries {
		b.Results[i] = sslResultOf(e, sum.Entries[i], now)
		if !containsString(b.Regions, e.Region) {
			b.Regions = append(b.Regions, e.Region)
		}
		if b.ID == "" || e.ScannedAt.Equal(*sum.CheckedAt) {
			b.ID = e.EventID
		}
	}
	if f := sum.First; f != nil {
		r := sslResultOf(*f, grade.EntryGrade{}, now)
		b.ID = f.EventID
		b.Subject, b.Issuer, b.ValidFrom, b.ValidTo = r.Subject, r.Issuer, r.ValidFrom, r.ValidTo
		b.SerialNumber, b.TLSVersion, b.ChainValid, b.HSTS, b.SANs = r.SerialNumber, r.TLSVersion, r.ChainValid, r.HSTS, r.SANs
	}
	return b
}

func sslResultOf(e projector.ExpEntry, g grade.EntryGrade, now time.Time) SSLResult {
	r := SSLResult{
		IP:                    e.IP,
		Region:                e.Region,
		Port:                  e.Port,
		Outcome:               string(e.Outcome),
		Detail:                e.Detail,
		ScannedAt:             e.ScannedAt.UTC(),
		Grade:                 httpapi.NullIfEmpty(g.Grade),
		GradeReasons:          nonNilStrings(g.Reasons),
		CertificateFound:      e.CertificateFound,
		SANs:                  nonNilStrings(e.SANs),
		ChainLength:           e.ChainLength,
		ChainValid:            e.ChainValid,
		HostnameValid:         e.HostnameValid,
		HSTS:                  e.HSTSMaxAge > 0,
		HSTSMaxAge:            e.HSTSMaxAge,
		HSTSIncludeSubdomains: e.HSTSIncludeSubdomains,
		LegacyTLSChecked:      e.LegacyTLSChecked,
		LegacyTLS:             nonNilStrings(e.LegacyTLS),
		ConnectMS:             e.ConnectMS,
		HandshakeMS:           e.HandshakeMS,
		TLSVersion:            httpapi.NullIfEmpty(tlsVersionName(e.TLSVersion)),
		CipherSuite:           httpapi.NullIfEmpty(e.CipherSuite),
	}
	if e.HTTPStatus != 0 {
		r.HTTPStatus = &e.HTTPStatus
	}
	if !e.CertificateFound {
		return r
	}
	days := grade.DaysUntil(e.NotAfter, now)
	from, to := e.NotBefore.UTC(), e.NotAfter.UTC()
	r.Subject = &e.Subject
	r.Issuer = &e.Issuer
	r.SerialNumber = httpapi.NullIfEmpty(colonHex(e.Serial))
	r.ValidFrom, r.ValidTo = &from, &to
	if e.HasNoExpiry() {
		r.NoExpiry = true
	} else {
		r.DaysRemaining = &days
	}
	r.CertificateSHA256 = httpapi.NullIfEmpty(e.LeafSHA256)
	r.KeyType = httpapi.NullIfEmpty(e.KeyType)
	if e.KeyBits != 0 {
		r.KeyBits = &e.KeyBits
	}
	r.SignatureAlgorithm = httpapi.NullIfEmpty(e.SignatureAlgorithm)
	return r
}

// tlsVersionName writes a version as SSLTrackr does: "TLS 1.3" (Go's
// tls.VersionName, which the agent records) is "TLSv1.3".
func tlsVersionName(v string) string {
	if rest, ok := strings.CutPrefix(v, "TLS "); ok {
		return "TLSv" + rest
	}
	return v
}

// colonHex writes a serial number recorded as lower-case hex ("3a1b2")
// as colon-separated bytes ("03:a1:b2").
func colonHex(h string) string {
	if h == "" {
		return ""
	}
	h = strings.ToLower(h)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	var b strings.Builder
	b.Grow(len(h) * 3 / 2)
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// viewOf reads the entries of d's expiration view that are for its
// current name (a renamed domain's old results never show).
func (h *Handler) viewOf(ctx context.Context, d accounts.Domain) ([]projector.ExpEntry, error) {
	views, err := projector.Views(ctx, h.rdb, []string{d.ID})
	if err != nil {
		return nil, err
	}
	return views[d.ID].For(d.Name()), nil
}

// domainOf reads the domain of the request's :id for its principal.
func (h *Handler) domainOf(c *gin.Context, id string) (accounts.Domain, error) {
	return h.accounts.GetDomain(c.Request.Context(), httpapi.Principal(c).TenantID, id)
}

// sslCheck is GET /domains/{id}/ssl.
func (h *Handler) sslCheck(c *gin.Context) {
	_, b, err := h.SSL(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if b == nil {
		httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, msgNoSSLCheck))
		return
	}
	c.JSON(http.StatusOK, b)
}

// SSL returns tenant's domain id and what GET /domains/{id}/ssl says of
// it: every region's and IP's latest result; nil when never scanned.
func (h *Handler) SSL(ctx context.Context, tenant, id string) (accounts.Domain, *SSLCheck, error) {
	d, err := h.accounts.GetDomain(ctx, tenant, id)
	if err != nil {
		return accounts.Domain{}, nil, err
	}
	entries, err := h.viewOf(ctx, d)
	if err != nil {
		return accounts.Domain{}, nil, err
	}
	return d, h.sslBody(d, entries), nil
}

// checkRequest is POST /check's body.
type checkRequest struct {
	DomainID string `json:"domain_id"`
}

// checkBody answers POST /check: SSLTrackr's {"ssl","whois"}. On a
// timeout Error says so, SSL and Whois hold what the views have (ssl null
// when nothing), Pending the regions still awaited and WhoisPending
// whether the registration lookup still is.
type checkBody struct {
	Error        string      `json:"error,omitempty"`
	SSL          *SSLCheck   `json:"ssl"`
	Whois        *WhoisCheck `json:"whois"`
	Pending      []string    `json:"pending_regions,omitempty"`
	WhoisPending bool        `json:"whois_pending,omitempty"`
}

// manualCheck is POST /check: it makes the domain due now and waits until
// every active region has published a scan of it finished after the
// request came in, then answers the fresh view. "Finished after" is told
// by the view's entries of a region carrying another scan event than
// before the request, which needs no clock shared with the agents. A
// region counts as active when one of its agents was seen within
// regionWindow; with none active, one fresh region suffices. The
// registration is answered as stored when its newest lookup is younger
// than whoisFresh; otherwise the coordinator looks it up again on the
// request and the answer waits for that lookup too (whoisWaitOf).
func (h *Handler) manualCheck(c *gin.Context) {
	var req checkRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	if req.DomainID == "" {
		httpapi.Fail(c, httpapi.BadRequest(`field "domain_id" is required`))
		return
	}
	ctx := c.Request.Context()
	d, err := h.domainOf(c, req.DomainID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if !d.Active {
		httpapi.Fail(c, httpapi.Errorf(http.StatusConflict, msgInactive))
		return
	}
	before, err := h.viewOf(ctx, d)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	seen := scansByRegion(before)
	regs, err := h.registrationsOf(ctx, []accounts.Domain{d})
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	whois := whoisWaitOf(d, regs)
	// Heartbeats are wall-clock times, whatever clock grades are computed
	// against (cfg.Now).
	regions, err := presence.Active(ctx, h.rdb, time.Now().Add(-regionWindow))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	// The coordinator applies the request like any other domain event. The
	// script re-checks the domain, so one deactivated since it was read
	// answers as if it had been inactive then.
	if err := h.accounts.RequestCheck(ctx, httpapi.Principal(c).TenantID, d.ID); err != nil {
		if errors.Is(err, accounts.ErrDomainInactive) {
			httpapi.Fail(c, httpapi.Errorf(http.StatusConflict, msgInactive))
			return
		}
		httpapi.Fail(c, err)
		return
	}

	wctx, cancel := context.WithTimeout(ctx, h.cfg.CheckTimeout)
	defer cancel()
	tick := time.NewTicker(checkPoll)
	defer tick.Stop()
	var entries []projector.ExpEntry
	for {
		entries, err = h.viewOf(ctx, d)
		if err == nil {
			regs, err = h.registrationsOf(ctx, []accounts.Domain{d})
		}
		if err != nil {
			httpapi.Fail(c, err)
			return
		}
		pending, done := pendingRegions(regions, seen, entries)
		whoisDone := whois.done(regs)
		body := func(msg string) checkBody {
			b := checkBody{Error: msg, SSL: h.sslBody(d, entries), Whois: h.whoisBody(d, regs, h.cfg.Now()), WhoisPending: !whoisDone}
			if msg != "" {
				b.Pending = pending
			}
			return b
		}
		if done && whoisDone {
			c.JSON(http.StatusOK, body(""))
			return
		}
		select {
		case <-tick.C:
			continue
		case <-h.cfg.Stopping:
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, body(msgShuttingDown))
			return
		case <-wctx.Done():
		}
		if ctx.Err() != nil {
			// The client went away; nobody reads an answer.
			c.Abort()
			return
		}
		msg := fmt.Sprintf("%s within %s", msgCheckTimeout, h.cfg.CheckTimeout)
		switch {
		case done:
			msg = fmt.Sprintf("%s within %s", msgNoLookup, h.cfg.CheckTimeout)
		case len(regions) == 0:
			msg = fmt.Sprintf("%s within %s: no agent was seen in the last %s", msgNoScan, h.cfg.CheckTimeout, regionWindow)
		}
		c.AbortWithStatusJSON(http.StatusGatewayTimeout, body(msg))
		return
	}
}

// scansByRegion maps each region of a view to the scan events its entries
// came from: one, as the projector replaces a region's entries as a whole.
func scansByRegion(entries []projector.ExpEntry) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, e := range entries {
		if out[e.Region] == nil {
			out[e.Region] = map[string]bool{}
		}
		out[e.Region][e.EventID] = true
	}
	return out
}

// pendingRegions lists the regions in want still without a scan newer
// than seen. With want empty (no agent seen lately) it is done once any
// region has a newer scan.
func pendingRegions(want []string, seen map[string]map[string]bool, entries []projector.ExpEntry) (pending []string, done bool) {
	fresh := map[string]bool{}
	for _, e := range entries {
		if !seen[e.Region][e.EventID] {
			fresh[e.Region] = true
		}
	}
	if len(want) == 0 {
		return []string{}, len(fresh) > 0
	}
	for _, r := range want {
		if !fresh[r] {
			pending = append(pending, r)
		}
	}
	return pending, len(pending) == 0
}
