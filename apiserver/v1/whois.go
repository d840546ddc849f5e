package v1

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

// whoisFresh: POST /check answers the stored registration when its newest
// lookup is younger than this; otherwise the coordinator looks the
// registrable domain up again and the request waits for it.
const whoisFresh = time.Hour

// whoisStatuses are the values of whois_status: a verdict over the expiry
// when it is known (grade's statuses but error), else why it is not.
var whoisStatuses = []string{
	grade.StatusValid, grade.StatusWarning, grade.StatusCritical, grade.StatusExpired,
	events.RegistrationNoExpiry, events.RegistrationNotFound, events.RegistrationRateLimited, events.RegistrationError,
	projector.RegistrationPending, projector.RegistrationNotRegistrable,
}

// registrationsOf reads the registration views of the domains' registrable
// domains in one round trip.
func (h *Handler) registrationsOf(ctx context.Context, domains []accounts.Domain) (map[string]projector.Registration, error) {
	regs := make([]string, len(domains))
	for i, d := range domains {
		regs[i] = projector.RegistrableOf(d.Host)
	}
	return projector.ReadRegistrations(ctx, h.rdb, regs)
}

// whoisDays is what the registration view says of host's registration at
// now: days until the expiry (floor, negative once expired) and its
// whois_status, or nil and why the days are unknown. Never a guessed
// number: no published expiry is null.
func (h *Handler) whoisDays(host string, regs map[string]projector.Registration, now time.Time) (*int, string) {
	exp, reason := projector.WhoisExpiry(host, regs)
	return h.whoisAt(exp, reason, now)
}

// whoisAt is the verdict over a registration expiry exp (nil when
// unknown, reason then saying why) at now.
func (h *Handler) whoisAt(exp *time.Time, reason string, now time.Time) (*int, string) {
	if exp == nil {
		return nil, reason
	}
	days := grade.DaysUntil(*exp, now)
	th := h.thresholds()
	switch {
	case days < 0:
		return &days, grade.StatusExpired
	case days <= th.Critical:
		return &days, grade.StatusCritical
	case days <= th.Warning:
		return &days, grade.StatusWarning
	}
	return &days, grade.StatusValid
}

// WhoisCheck is GET /domains/{id}/whois and POST /check's whois:
// SSLTrackr's fields over the newest answer the registry gave for the
// domain's registrable domain, plus where it came from and how the newest
// lookup went. Before any lookup every fact is null and status says
// pending.
type WhoisCheck struct {
	// ID is the registration.looked_up event of the answer shown.
	ID       *string `json:"id"`
	DomainID string  `json:"domain_id"`
	Hostname string  `json:"hostname"`
	// Domain is the registrable domain looked up; null for a host
	// without one (an IP address).
	Domain        *string    `json:"domain"`
	Registrar     *string    `json:"registrar"`
	CreatedDate   *time.Time `json:"created_date"`
	ExpiryDate    *time.Time `json:"expiry_date"`
	UpdatedDate   *time.Time `json:"updated_date"`
	DaysRemaining *int       `json:"days_remaining"`
	// DNSSEC is null: the lookups do not record it.
	DNSSEC      *bool    `json:"dnssec"`
	Nameservers []string `json:"nameservers"`
	Statuses    []string `json:"statuses"`
	Source      *string  `json:"source"`
	Server      *string  `json:"server"`
	// CheckedAt is when the answer shown was looked up.
	CheckedAt *time.Time `json:"checked_at"`
	// Status is the domain object's whois_status.
	Status string `json:"status"`
	// LookedUpAt, LookupStatus, LookupDetail and RetryAfter describe the
	// newest lookup, which may have failed after the answer shown.
	LookedUpAt   *time.Time `json:"looked_up_at"`
	LookupStatus *string    `json:"lookup_status"`
	LookupDetail *string    `json:"lookup_detail"`
	RetryAfter   *time.Time `json:"retry_after"`
}

// whoisBody builds the /whois answer of d from its registration view.
func (h *Handler) whoisBody(d accounts.Domain, regs map[string]projector.Registration, now time.Time) *WhoisCheck {
	b := &WhoisCheck{DomainID: d.ID, Hostname: d.Host, Nameservers: []string{}, Statuses: []string{}}
	b.DaysRemaining, b.Status = h.whoisDays(d.Host, regs, now)
	reg := projector.RegistrableOf(d.Host)
	if reg == "" {
		return b
	}
	b.Domain = &reg
	r := regs[reg]
	if a := r.Answer; a != nil {
		b.ID = httpapi.NullIfEmpty(r.AnswerID)
		b.Registrar, b.Source, b.Server = httpapi.NullIfEmpty(a.Registrar), httpapi.NullIfEmpty(a.Source), httpapi.NullIfEmpty(a.Server)
		b.CreatedDate, b.ExpiryDate, b.UpdatedDate = utcOrNull(a.CreatedAt), utcOrNull(a.ExpiresAt), utcOrNull(a.UpdatedAt)
		b.Nameservers, b.Statuses = nonNilStrings(a.NameServers), nonNilStrings(a.Statuses)
		b.CheckedAt = utcOrNull(&a.LookedUpAt)
	}
	if l := r.Last; l != nil {
		b.LookedUpAt = utcOrNull(&l.LookedUpAt)
		b.LookupStatus, b.LookupDetail = httpapi.NullIfEmpty(l.Status), httpapi.NullIfEmpty(l.Detail)
		b.RetryAfter = utcOrNull(l.RetryAfter)
	}
	return b
}

func utcOrNull(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// whoisCheck is GET /domains/{id}/whois. A domain whose registration was
// never looked up answers 200 with status pending (404 is for a domain
// the key cannot see), as a registration lookup follows every add.
func (h *Handler) whoisCheck(c *gin.Context) {
	d, err := h.domainOf(c, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	regs, err := h.registrationsOf(c.Request.Context(), []accounts.Domain{d})
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, h.whoisBody(d, regs, h.cfg.Now()))
}

// whoisWait is what POST /check waits for of a domain's registration: the
// newest lookup's event before the request, and whether to wait at all.
type whoisWait struct {
	reg    string
	before string
	wait   bool
}

// whoisWaitOf decides, before the check is requested, whether the stored
// registration of d is fresh enough to answer. A fresh lookup is told by
// the view's newest lookup becoming another event, which needs no clock
// shared with the workers; its age is told by the wall clock, as the
// coordinator's.
func whoisWaitOf(d accounts.Domain, regs map[string]projector.Registration) whoisWait {
	reg := projector.RegistrableOf(d.Host)
	if reg == "" {
		return whoisWait{}
	}
	r := regs[reg]
	if r.Last != nil && time.Since(r.Last.LookedUpAt) < whoisFresh {
		return whoisWait{reg: reg}
	}
	return whoisWait{reg: reg, before: r.LastID, wait: true}
}

// done reports whether regs show a lookup newer than the request.
func (w whoisWait) done(regs map[string]projector.Registration) bool {
	return !w.wait || regs[w.reg].LastID != w.before
}
