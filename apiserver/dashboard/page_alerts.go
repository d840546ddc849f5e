package dashboard

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// alertsPage is /alerts: the tenant's alerts, newest first, filtered by
// status and kind (GET /api/v1/alerts), and its alert settings (GET and
// PUT /api/v1/alert-settings). The v1 API has no acknowledge or resolve:
// alerts resolve when a scan finds the problem gone.
func (d *Dashboard) alertsPage() Page {
	return Page{Path: "/alerts", Title: "Alerts", Nav: "Alerts", Template: "alerts.html", Get: d.alerts,
		Actions: []Action{{Path: "/alerts/settings", Do: d.saveAlertSettings}}}
}

// alertsPerPage is the alerts a page of /alerts shows.
const alertsPerPage = 50

type alertsData struct {
	Alerts   []alerts.Alert
	Status   string // "" for every status
	Type     string // "" for every kind
	Page     int
	Pages    int
	Total    int
	Capped   bool // the filter read only the newest maxAlertsRead alerts
	Kinds    []string
	Statuses []string
	Settings alerts.Settings
	// Expiry and DomainExpiry are the settings' thresholds as the form
	// shows them; Newer and Older link the pages around ("" for none).
	Expiry, DomainExpiry string
	Newer, Older         string
}

func (d *Dashboard) alerts(r *Request) (any, error) {
	out := alertsData{Status: r.Query("status"), Type: r.Query("type"), Page: 1,
		Statuses: []string{alerts.StatusActive, alerts.StatusResolved, alerts.StatusNotice}}
	for _, k := range problemKinds {
		out.Kinds = append(out.Kinds, k.Type)
	}
	if p := r.Query("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > maxAlertsRead/alertsPerPage+1 {
			return nil, httpapi.BadRequest("page must be a whole number from 1")
		}
		out.Page = n
	}
	ctx, tenant := r.Ctx(), r.Tenant()
	var err error
	if out.Settings, err = d.deps.Alerts.Settings(ctx, tenant); err != nil {
		return nil, err
	}
	if out.Status == "" && out.Type == "" {
		// No filter: the store pages.
		if out.Alerts, out.Total, err = d.deps.Alerts.List(ctx, tenant, "", out.Page, alertsPerPage); err != nil {
			return nil, err
		}
	} else {
		// A filter reads the newest alerts and pages what it keeps.
		kept, _, capped, err := d.scanAlerts(ctx, tenant, func(a alerts.Alert) bool {
			return (out.Status == "" || a.Status == out.Status) && (out.Type == "" || a.AlertType == out.Type)
		})
		if err != nil {
			return nil, err
		}
		out.Capped = capped
		out.Total = len(kept)
		from := min((out.Page-1)*alertsPerPage, len(kept))
		out.Alerts = kept[from:min(from+alertsPerPage, len(kept))]
	}
	out.Pages = max(1, (out.Total+alertsPerPage-1)/alertsPerPage)
	if out.Page > 1 {
		out.Newer = link("/alerts", "status", out.Status, "type", out.Type, "page", out.Page-1)
	}
	if out.Page < out.Pages {
		out.Older = link("/alerts", "status", out.Status, "type", out.Type, "page", out.Page+1)
	}
	out.Expiry, out.DomainExpiry = joinDays(out.Settings.ExpiryThresholdsDays), joinDays(out.Settings.DomainExpiryThresholdsDays)
	return out, nil
}

// scanAlerts returns the tenant's alerts keep keeps, newest first, read
// a page (alertPage) at a time up to maxAlertsRead: how many it read,
// and whether more exist than it read. The overview's activeProblems
// reads the same way.
func (d *Dashboard) scanAlerts(ctx context.Context, tenant string, keep func(alerts.Alert) bool) (kept []alerts.Alert, read int, capped bool, err error) {
	for page := 1; ; page++ {
		as, total, err := d.deps.Alerts.List(ctx, tenant, "", page, alertPage)
		if err != nil {
			return nil, 0, false, err
		}
		read += len(as)
		for _, a := range as {
			if keep(a) {
				kept = append(kept, a)
			}
		}
		if read >= total || len(as) == 0 {
			return kept, read, false, nil
		}
		if read >= maxAlertsRead {
			return kept, read, true, nil
		}
	}
}

// saveAlertSettings is POST /alerts/settings: the form holds every
// setting, as PUT /api/v1/alert-settings with every field.
func (d *Dashboard) saveAlertSettings(r *Request) (string, error) {
	expiry, err := dayList("Certificate expiry thresholds", r.PostForm("expiry_thresholds_days"))
	if err != nil {
		return "/alerts", err
	}
	domainExpiry, err := dayList("Registration expiry thresholds", r.PostForm("domain_expiry_thresholds_days"))
	if err != nil {
		return "/alerts", err
	}
	after, err := strconv.Atoi(strings.TrimSpace(r.PostForm("scan_failing_after")))
	if err != nil {
		return "/alerts", httpapi.BadRequest("Scans failing after must be a whole number")
	}
	st := alerts.Settings{ExpiryThresholdsDays: expiry, DomainExpiryThresholdsDays: domainExpiry,
		ScanFailingAfter: after, ExpiryMetrics: r.PostForm("expiry_metrics") == "on"}
	if _, err := d.deps.Alerts.PutSettings(r.Ctx(), r.Tenant(), st); err != nil {
		return "/alerts", err
	}
	r.Flash(FlashInfo, "Alert settings saved: they apply from each domain's next scan")
	return "/alerts", nil
}

// dayList reads "30, 14, 7" as days; the store checks the values.
func dayList(what, s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, httpapi.Errorf(http.StatusBadRequest, what+": "+strconv.Quote(f)+" is not a whole number of days")
		}
		out = append(out, n)
	}
	return out, nil
}

// joinDays writes days as dayList reads them.
func joinDays(days []int) string {
	s := make([]string, len(days))
	for i, n := range days {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
