package v1

// Alerts at /api/v1/alerts (SSLTrackr's list, newest first, with
// resolved_at and status added) and the tenant's alert settings at
// /api/v1/alert-settings. The projector's alert engine (apiserver/alerts)
// writes both the alerts and their events; this file only reads alerts
// and writes settings.

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// alertRoutes serves /api/v1/alerts and /api/v1/alert-settings.
func (h *Handler) alertRoutes(g *gin.RouterGroup) {
	read, write := h.guard(accounts.ScopeRead), h.guard(accounts.ScopeWrite)
	g.GET("/alerts", append(read, h.listAlerts)...)
	g.GET("/alert-settings", append(read, h.getAlertSettings)...)
	g.PUT("/alert-settings", append(write, h.putAlertSettings)...)
}

// alertJSON is an alert as SSLTrackr shows it, plus status, resolved_at
// and where it was seen.
type alertJSON struct {
	ID            string    `json:"id"`
	DomainID      string    `json:"domain_id"`
	Hostname      string    `json:"hostname"`
	Port          int       `json:"port"`
	AlertType     string    `json:"alert_type"`
	Severity      string    `json:"severity"`
	Title         string    `json:"title"`
	Message       string    `json:"message"`
	ThresholdDays *int      `json:"threshold_days"`
	TriggeredAt   time.Time `json:"triggered_at"`
	// Status is active, resolved, or notice (a one-shot alert such as
	// cert_changed, never resolved).
	Status         string     `json:"status"`
	ResolvedAt     *time.Time `json:"resolved_at"`
	ResolvedReason *string    `json:"resolved_reason"`
	LeafSHA256     *string    `json:"leaf_sha256"`
	IPs            []string   `json:"ips"`
	Regions        []string   `json:"regions"`
}

func alertOut(a alerts.Alert) alertJSON {
	out := alertJSON{
		ID: a.AlertID, DomainID: a.DomainID, Hostname: a.Hostname, Port: a.Port, AlertType: a.AlertType,
		Severity: a.Severity, Title: a.Title, Message: a.Message, ThresholdDays: a.ThresholdDays,
		TriggeredAt: a.TriggeredAt, Status: a.Status, ResolvedAt: a.ResolvedAt,
		LeafSHA256: httpapi.NullIfEmpty(a.LeafSHA256), IPs: a.IPs, Regions: a.Regions,
	}
	if a.ResolvedAt != nil {
		out.ResolvedReason = &a.Reason
	}
	if out.IPs == nil {
		out.IPs = []string{}
	}
	if out.Regions == nil {
		out.Regions = []string{}
	}
	return out
}

type alertList struct {
	Data       []alertJSON `json:"data"`
	Pagination Pagination  `json:"pagination"`
}

// listAlerts is GET /alerts: the tenant's alerts, newest first; with
// domain_id, only that domain's (another tenant's domain is 404).
func (h *Handler) listAlerts(c *gin.Context) {
	page, perPage, err := httpapi.Paging(c, defaultPerPage, maxPerPage)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	tenant := httpapi.Principal(c).TenantID
	domainID, filtered := c.GetQuery("domain_id")
	if filtered {
		if uuid.Validate(domainID) != nil {
			httpapi.Fail(c, httpapi.BadRequest(fmt.Sprintf("domain_id must be a domain's id (a UUID), got %q", domainID)))
			return
		}
		if _, err := h.accounts.GetDomain(ctx, tenant, domainID); err != nil {
			httpapi.Fail(c, err)
			return
		}
	}
	as, total, err := h.alerts.List(ctx, tenant, domainID, page, perPage)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out := alertList{Data: make([]alertJSON, len(as)),
		Pagination: Pagination{Page: page, PerPage: perPage, Total: total, TotalPages: (total + perPage - 1) / perPage}}
	for i, a := range as {
		out.Data[i] = alertOut(a)
	}
	c.JSON(http.StatusOK, out)
}

// alertSettingsJSON is the body of GET and PUT /alert-settings.
type alertSettingsJSON struct {
	ExpiryThresholdsDays       []int `json:"expiry_thresholds_days"`
	ScanFailingAfter           int   `json:"scan_failing_after"`
	DomainExpiryThresholdsDays []int `json:"domain_expiry_thresholds_days"`
	ExpiryMetrics              bool  `json:"expiry_metrics"`
}

// alertSettingsUpdate is PUT's body: a field left out keeps its value.
type alertSettingsUpdate struct {
	ExpiryThresholdsDays       *[]int `json:"expiry_thresholds_days"`
	ScanFailingAfter           *int   `json:"scan_failing_after"`
	DomainExpiryThresholdsDays *[]int `json:"domain_expiry_thresholds_days"`
	ExpiryMetrics              *bool  `json:"expiry_metrics"`
}

// getAlertSettings is GET /alert-settings.
func (h *Handler) getAlertSettings(c *gin.Context) {
	st, err := h.alerts.Settings(c.Request.Context(), httpapi.Principal(c).TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, alertSettingsJSON(st))
}

// putAlertSettings is PUT /alert-settings. The settings apply from each
// domain's next scan.
func (h *Handler) putAlertSettings(c *gin.Context) {
	var req alertSettingsUpdate
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	ctx := c.Request.Context()
	tenant := httpapi.Principal(c).TenantID
	st, err := h.alerts.Settings(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if req.ExpiryThresholdsDays != nil {
		st.ExpiryThresholdsDays = *req.ExpiryThresholdsDays
	}
	if req.ScanFailingAfter != nil {
		st.ScanFailingAfter = *req.ScanFailingAfter
	}
	if req.DomainExpiryThresholdsDays != nil {
		st.DomainExpiryThresholdsDays = *req.DomainExpiryThresholdsDays
	}
	if req.ExpiryMetrics != nil {
		st.ExpiryMetrics = *req.ExpiryMetrics
	}
	st, err = h.alerts.PutSettings(ctx, tenant, st)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, alertSettingsJSON(st))
}
