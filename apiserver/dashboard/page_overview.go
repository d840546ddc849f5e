package dashboard

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/certfleet/certfleet/apiserver/alerts"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/events"
)

// overviewPage is /: the tenant's problems first, from the alert engine's
// active alerts, then the expiry planner from the fleet statistics
// behind GET /api/v1/stats.
func (d *Dashboard) overviewPage() Page {
	return Page{Path: "/", Title: "Overview", Nav: "Overview", Template: "overview.html", Get: d.overview}
}

// problemKinds are the alert types the overview lists, in the order it
// shows them, with their headings.
var problemKinds = []struct{ Type, Heading string }{
	{events.AlertSSLExpired, "Expired certificates"},
	{events.AlertSSLExpiry, "Certificates expiring"},
	{events.AlertChainInvalid, "Chain invalid"},
	{events.AlertHostnameMismatch, "Name invalid"},
	{events.AlertRegionMismatch, "Regions disagree"},
	{events.AlertDomainExpired, "Registration expired"},
	{events.AlertDomainExpiry, "Registration expiring"},
	{events.AlertCertNotDeployed, "Certificate not deployed"},
	{events.AlertScanFailing, "Scans failing"},
	{events.AlertACMERenewalFailed, "Renewal failed"},
}

// ProblemGroup is the active alerts of one kind.
type ProblemGroup struct {
	Type, Heading string
	Alerts        []alerts.Alert
}

type overviewData struct {
	Problems []ProblemGroup
	// Scanned tells how many alerts were read to find the active ones;
	// Capped that more exist than were read.
	Scanned int
	Capped  bool
	// Planner is nil when the server has no ClickHouse.
	Planner *plannerData
}

// plannerEntry is a tenant's planner as the cache keeps it.
type plannerEntry struct {
	planner v1.ExpiryPlanner
	domains int64
}

type plannerData struct {
	// Age is how old the counts are (PlannerTTL at most).
	Age     time.Duration
	Chart   BarChart
	Weeks   []v1.ExpiryWeek
	Expired v1.StatsCount
	Later   v1.StatsCount
	Domains int64
}

// Active alerts are found in the newest alerts, a page at a time, up to
// maxAlertsRead: the alert list keeps resolved ones too, newest first.
const (
	alertPage     = 500
	maxAlertsRead = 5000
)

func (d *Dashboard) overview(r *Request) (any, error) {
	var out overviewData
	var err error
	if out.Problems, out.Scanned, out.Capped, err = d.activeProblems(r.Ctx(), r.Tenant()); err != nil {
		return nil, err
	}
	if d.deps.V1.HasHistory() {
		pe, at, ok := d.planners.get(r.Tenant())
		if !ok {
			if pe.planner, err = d.deps.V1.ExpiryPlanner(r.Ctx(), r.Tenant()); err != nil {
				return nil, err
			}
			use, err := d.deps.Accounts.Usage(r.Ctx(), r.Tenant())
			if err != nil {
				return nil, err
			}
			pe.domains = use.Domains + use.HeldDomains
			d.planners.put(r.Tenant(), pe)
			at = time.Now()
		}
		out.Planner = planner(pe.planner, pe.domains)
		out.Planner.Age = time.Since(at)
	}
	return out, nil
}

// activeProblems returns the tenant's active alerts grouped by kind in
// problemKinds' order.
func (d *Dashboard) activeProblems(ctx context.Context, tenant string) (groups []ProblemGroup, scanned int, capped bool, err error) {
	active, scanned, capped, err := d.scanAlerts(ctx, tenant, func(a alerts.Alert) bool { return a.Status == alerts.StatusActive })
	if err != nil {
		return nil, 0, false, err
	}
	byType := map[string][]alerts.Alert{}
	for _, a := range active {
		byType[a.AlertType] = append(byType[a.AlertType], a)
	}
	for _, k := range problemKinds {
		if as := byType[k.Type]; len(as) > 0 {
			slices.SortStableFunc(as, func(a, b alerts.Alert) int { return a.TriggeredAt.Compare(b.TriggeredAt) })
			groups = append(groups, ProblemGroup{Type: k.Type, Heading: k.Heading, Alerts: as})
		}
	}
	return groups, scanned, capped, nil
}

// planner draws the expiry planner: certificates expired, then per week.
func planner(ep v1.ExpiryPlanner, domains int64) *plannerData {
	bars := []Bar{{Label: "expired", Value: float64(ep.Expired.Certificates), Class: "bad"}}
	for _, w := range ep.Weeks {
		bars = append(bars, Bar{Label: w.StartsAt.Format("Jan 2"), Value: float64(w.Certificates)})
	}
	bars = append(bars, Bar{Label: "later", Value: float64(ep.Later.Certificates), Class: "muted"})
	desc := fmt.Sprintf("%d certificates expired, %d expiring in the next %d weeks by week, %d later.",
		ep.Expired.Certificates, sumWeeks(ep.Weeks), len(ep.Weeks), ep.Later.Certificates)
	return &plannerData{Chart: barChart("Expiry planner", desc, bars), Weeks: ep.Weeks, Expired: ep.Expired, Later: ep.Later, Domains: domains}
}

func sumWeeks(ws []v1.ExpiryWeek) uint64 {
	var n uint64
	for _, w := range ws {
		n += w.Certificates
	}
	return n
}
