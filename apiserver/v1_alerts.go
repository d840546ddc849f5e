package apiserver

// Alerts at /api/v1/alerts (SSLTrackr's list, newest first, with
// resolved_at and status added) and the tenant's alert settings at
// /api/v1/alert-settings. The projector's alert engine (apiserver/alerts)
// writes both the alerts and their events; this file only reads alerts
// and writes settings.

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
)

// alertsArea is the alerts API's state.
type alertsArea struct {
	engine *alerts.Engine
}

func (s *Server) initAlerts() error {
	eng, err := alerts.New(alerts.Config{Now: s.cfg.Now}, s.rdb, s.logger)
	if err != nil {
		return err
	}
	s.alerts.engine = eng
	return nil
}

// alertRoutes serves /api/v1/alerts and /api/v1/alert-settings.
func (s *Server) alertRoutes(g *gin.RouterGroup) {
	read := []gin.HandlerFunc{s.requireKey(accounts.ScopeRead), s.limit(classGeneral)}
	write := []gin.HandlerFunc{s.requireKey(accounts.ScopeWrite), s.limit(classGeneral)}
	g.GET("/alerts", append(read, s.listAlerts)...)
	g.GET("/alert-settings", append(read, s.getAlertSettings)...)
	g.PUT("/alert-settings", append(write, s.putAlertSettings)...)
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
		LeafSHA256: nonEmpty(a.LeafSHA256), IPs: a.IPs, Regions: a.Regions,
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
	Pagination pagination  `json:"pagination"`
}

// listAlerts is GET /alerts: the tenant's alerts, newest first; with
// domain_id, only that domain's (another tenant's domain is 404).
func (s *Server) listAlerts(c *gin.Context) {
	page, err := pageParam(c, "page", 1, 0)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	perPage, err := pageParam(c, "per_page", defaultPerPage, maxPerPage)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	ctx := c.Request.Context()
	tenant := principalOf(c).TenantID
	domainID, filtered := c.GetQuery("domain_id")
	if filtered {
		if _, err := s.accounts.GetDomain(ctx, tenant, domainID); err != nil {
			s.replyV1(c, err)
			return
		}
	}
	as, total, err := s.alerts.engine.List(ctx, tenant, domainID, page, perPage)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	out := alertList{Data: make([]alertJSON, len(as)),
		Pagination: pagination{Page: page, PerPage: perPage, Total: total, TotalPages: (total + perPage - 1) / perPage}}
	for i, a := range as {
		out.Data[i] = alertOut(a)
	}
	replyJSON(c, http.StatusOK, out)
}

// alertSettingsJSON is the body of GET and PUT /alert-settings.
type alertSettingsJSON struct {
	ExpiryThresholdsDays []int `json:"expiry_thresholds_days"`
	ScanFailingAfter     int   `json:"scan_failing_after"`
}

// alertSettingsUpdate is PUT's body: a field left out keeps its value.
type alertSettingsUpdate struct {
	ExpiryThresholdsDays *[]int `json:"expiry_thresholds_days"`
	ScanFailingAfter     *int   `json:"scan_failing_after"`
}

// getAlertSettings is GET /alert-settings.
func (s *Server) getAlertSettings(c *gin.Context) {
	st, err := s.alerts.engine.Settings(c.Request.Context(), principalOf(c).TenantID)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	replyJSON(c, http.StatusOK, alertSettingsJSON(st))
}

// putAlertSettings is PUT /alert-settings. The settings apply from each
// domain's next scan.
func (s *Server) putAlertSettings(c *gin.Context) {
	var req alertSettingsUpdate
	if err := bindJSON(c, &req); err != nil {
		s.replyV1(c, err)
		return
	}
	ctx := c.Request.Context()
	tenant := principalOf(c).TenantID
	st, err := s.alerts.engine.Settings(ctx, tenant)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	if req.ExpiryThresholdsDays != nil {
		st.ExpiryThresholdsDays = *req.ExpiryThresholdsDays
	}
	if req.ScanFailingAfter != nil {
		st.ScanFailingAfter = *req.ScanFailingAfter
	}
	st, err = s.alerts.engine.PutSettings(ctx, tenant, st)
	var se *alerts.SettingsError
	if errors.As(err, &se) {
		err = badRequest{se.Error()}
	}
	if err != nil {
		s.replyV1(c, err)
		return
	}
	replyJSON(c, http.StatusOK, alertSettingsJSON(st))
}
