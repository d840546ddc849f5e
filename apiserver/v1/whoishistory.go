package v1

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// historyQueryTimeout bounds the ClickHouse queries of one history page.
const historyQueryTimeout = 10 * time.Second

// Changes a history entry reports against the registry's previous answer.
const (
	ChangeExpiryExtended  = "expiry_extended"  // renewed: a later expiry
	ChangeExpiryShortened = "expiry_shortened" // an earlier expiry (a correction, a shortened term)
	ChangeExpiryPublished = "expiry_published" // an expiry where there was none
	ChangeExpiryWithdrawn = "expiry_withdrawn" // no expiry where there was one
	ChangeRegistrar       = "registrar_changed"
)

// answered are the lookup statuses in which the registry gave the
// registration: only these are compared, so that a failed lookup between
// two answers neither hides nor invents a change.
var answered = []string{events.RegistrationOK, events.RegistrationNoExpiry}

// WhoisHistoryEntry is one lookup of the registrable domain.
type WhoisHistoryEntry struct {
	// ID is the registration.looked_up event.
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	Detail     *string    `json:"detail"`
	Source     *string    `json:"source"`
	Server     *string    `json:"server"`
	Registrar  *string    `json:"registrar"`
	ExpiryDate *time.Time `json:"expiry_date"`
	Statuses   []string   `json:"statuses"`
	LookedUpAt time.Time  `json:"looked_up_at"`
	// Changes compare an answered lookup with the previous answered one
	// (older, maybe on a later page); empty for the first answer and for
	// failed lookups.
	Changes []string `json:"changes"`
}

type whoisHistory struct {
	DomainID string `json:"domain_id"`
	Hostname string `json:"hostname"`
	// Domain is the registrable domain whose lookups these are.
	Domain     *string             `json:"domain"`
	Data       []WhoisHistoryEntry `json:"data"`
	Pagination Pagination          `json:"pagination"`
}

// whoisHistory is GET /domains/{id}/whois/history: every lookup of the
// domain's registrable domain, newest first, paged, from ClickHouse.
func (h *Handler) whoisHistory(c *gin.Context) {
	if !h.historyConn(c, "registration history") {
		return
	}
	page, perPage, err := httpapi.Paging(c, defaultPerPage, maxPerPage)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	d, err := h.domainOf(c, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out := whoisHistory{DomainID: d.ID, Hostname: d.Host, Data: []WhoisHistoryEntry{},
		Pagination: Pagination{Page: page, PerPage: perPage}}
	reg := projector.RegistrableOf(d.Host)
	if reg == "" {
		c.JSON(http.StatusOK, out)
		return
	}
	out.Domain = &reg
	ctx, cancel := context.WithTimeout(c.Request.Context(), historyQueryTimeout)
	defer cancel()
	rows, total, err := schema.RegistrationHistoryPage(ctx, h.cfg.ClickHouse, reg, (page-1)*perPage, perPage)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	var prev *schema.RegistrationRow
	if len(rows) > 0 {
		if prev, err = schema.RegistrationAnswerBefore(ctx, h.cfg.ClickHouse, reg, rows[len(rows)-1].LookedUpAt, answered); err != nil {
			httpapi.Fail(c, err)
			return
		}
	}
	out.Data = historyEntries(rows, prev)
	out.Pagination.Total = int(total)
	out.Pagination.TotalPages = (out.Pagination.Total + perPage - 1) / perPage
	c.JSON(http.StatusOK, out)
}

// historyEntries turns rows (newest first) into entries, each answered
// one with its changes against the answered one before it; prev is the
// newest answer older than every row, or nil.
func historyEntries(rows []schema.RegistrationRow, prev *schema.RegistrationRow) []WhoisHistoryEntry {
	out := make([]WhoisHistoryEntry, len(rows))
	for i := len(rows) - 1; i >= 0; i-- {
		r := rows[i]
		out[i] = WhoisHistoryEntry{ID: r.EventID.String(), Status: r.Status, Detail: httpapi.NullIfEmpty(r.Detail),
			Source: httpapi.NullIfEmpty(r.Source), Server: httpapi.NullIfEmpty(r.Server), Registrar: httpapi.NullIfEmpty(r.Registrar),
			ExpiryDate: utcOrNull(r.ExpiresAt), Statuses: nonNilStrings(r.Statuses), LookedUpAt: r.LookedUpAt.UTC(), Changes: []string{}}
		if !isAnswer(r.Status) {
			continue
		}
		if prev != nil {
			out[i].Changes = changesOf(*prev, r)
		}
		prev = &rows[i]
	}
	return out
}

func isAnswer(status string) bool {
	for _, s := range answered {
		if s == status {
			return true
		}
	}
	return false
}

// changesOf lists what moved between two answers of the registry.
func changesOf(before, after schema.RegistrationRow) []string {
	ch := []string{}
	switch b, a := before.ExpiresAt, after.ExpiresAt; {
	case b == nil && a != nil:
		ch = append(ch, ChangeExpiryPublished)
	case b != nil && a == nil:
		ch = append(ch, ChangeExpiryWithdrawn)
	case b != nil && a.After(*b):
		ch = append(ch, ChangeExpiryExtended)
	case b != nil && a.Before(*b):
		ch = append(ch, ChangeExpiryShortened)
	}
	if before.Registrar != after.Registrar {
		ch = append(ch, ChangeRegistrar)
	}
	return ch
}
