package dashboard

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
)

// domainPage is /domains/{id}: what every vantage point sees of the
// domain now (region × IP, from the projector's view), the certificates
// it served over time and charts of its scans' latency and outcomes (from
// the history in ClickHouse), and the forms to edit, check and delete it.
// Its actions are the domains page's.
func (d *Dashboard) domainPage() Page {
	return Page{Path: "/domains/:id", Title: "Domain", Template: "domain.html", Get: d.domain}
}

// historyEntries is how many of the newest scan results the charts show.
const historyEntries = 500

type domainData struct {
	Domain accounts.Domain
	SSL    *v1.SSLCheck
	Matrix matrix
	// Waiting: never scanned, or a check was just requested; the page
	// refreshes itself.
	Waiting  bool
	History  bool // the server has ClickHouse
	Certs    []v1.CertificateEntry
	Latency  *LineChart
	Outcomes *BarChart
	Series   []string // the latency chart's regions, in class order
	Entries  int
}

// matrix is the region × IP table of what each vantage point sees.
type matrix struct {
	Regions []string
	IPs     []string
	Cells   [][]*v1.SSLResult // [region][ip]
	// Leaves numbers each distinct leaf, so that the table shows which
	// cells serve the same certificate; Disagree is true when more than
	// one leaf is served.
	Leaves   map[string]int
	Disagree bool
}

// Leaf is the number of r's certificate in the matrix ("" without one).
func (m matrix) Leaf(r *v1.SSLResult) string {
	if r == nil || r.CertificateSHA256 == nil {
		return ""
	}
	return fmt.Sprintf("#%d", m.Leaves[*r.CertificateSHA256])
}

func matrixOf(results []v1.SSLResult) matrix {
	m := matrix{Leaves: map[string]int{}}
	for _, r := range results {
		if !slices.Contains(m.Regions, r.Region) {
			m.Regions = append(m.Regions, r.Region)
		}
		if !slices.Contains(m.IPs, r.IP) {
			m.IPs = append(m.IPs, r.IP)
		}
	}
	slices.Sort(m.Regions)
	slices.Sort(m.IPs)
	m.Cells = make([][]*v1.SSLResult, len(m.Regions))
	for i := range m.Cells {
		m.Cells[i] = make([]*v1.SSLResult, len(m.IPs))
	}
	for i := range results {
		r := &results[i]
		m.Cells[slices.Index(m.Regions, r.Region)][slices.Index(m.IPs, r.IP)] = r
	}
	for _, row := range m.Cells {
		for _, r := range row {
			if r != nil && r.CertificateSHA256 != nil {
				if _, ok := m.Leaves[*r.CertificateSHA256]; !ok {
					m.Leaves[*r.CertificateSHA256] = len(m.Leaves) + 1
				}
			}
		}
	}
	m.Disagree = len(m.Leaves) > 1
	return m
}

func (d *Dashboard) domain(r *Request) (any, error) {
	id := r.Param("id")
	dom, ssl, err := d.deps.V1.SSL(r.Ctx(), r.Tenant(), id)
	if err != nil {
		return nil, err
	}
	out := domainData{Domain: dom, SSL: ssl, History: d.deps.V1.HasHistory()}
	if ssl != nil {
		out.Matrix = matrixOf(ssl.Results)
	}
	out.Waiting = dom.Active && (ssl == nil || checkPending(r.Query("checking"), ssl.CheckedAt, d.cfg.Now()))
	if !out.History {
		return out, nil
	}
	certs, err := d.deps.V1.Certificates(r.Ctx(), r.Tenant(), id)
	if err != nil {
		return nil, err
	}
	out.Certs = certs.Data
	// The history reads its parameters from a query: give it its own.
	hc := r.Context.Copy()
	req := *hc.Request
	u := *req.URL
	u.RawQuery = fmt.Sprintf("limit=%d", historyEntries)
	req.URL = &u
	hc.Request = &req
	hist, err := d.deps.V1.ScanHistory(hc, r.Tenant(), id)
	if err != nil {
		return nil, err
	}
	out.Entries = len(hist.Data)
	if len(hist.Data) > 0 {
		out.Latency, out.Series = latencyChart(hist.Data)
		out.Outcomes = outcomeChart(hist.Data)
	}
	return out, nil
}

// checkWait is how long a requested check keeps the page refreshing.
const checkWait = time.Minute

// checkPending tells whether the check requested at checking (Unix ms,
// the check action's redirect says) has not landed yet: the newest scan is
// older than the request, which is younger than checkWait.
func checkPending(checking string, checkedAt, now time.Time) bool {
	ms, err := strconv.ParseInt(checking, 10, 64)
	if err != nil {
		return false
	}
	at := time.UnixMilli(ms)
	return checkedAt.Before(at) && now.Sub(at) < checkWait
}

// PageTitle is the page's title: the domain's name.
func (dd domainData) PageTitle() string { return dd.Domain.Name() }

// latencyChart draws the TLS handshake time of successful scans over
// time, one line per region (and IP when a region sees several).
func latencyChart(es []v1.HistoryEntry) (*LineChart, []string) {
	byRegion := map[string][]Point{}
	for _, e := range slices.Backward(es) { // oldest first
		if e.Outcome != "ok" {
			continue
		}
		ip := ""
		if e.IP != nil {
			ip = *e.IP
		}
		byRegion[e.Region] = append(byRegion[e.Region], Point{X: float64(e.ScannedAt.Unix()), Y: float64(e.HandshakeMS),
			Label: fmt.Sprintf("%s %s %s: %d ms", e.Region, ip, e.ScannedAt.UTC().Format("Jan 2 15:04"), e.HandshakeMS)})
	}
	regions := make([]string, 0, len(byRegion))
	for r := range byRegion {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	series := make([]Series, len(regions))
	for i, r := range regions {
		series[i] = Series{Name: r, Class: fmt.Sprintf("s%d", i%4), Points: byRegion[r]}
	}
	c := lineChart("Handshake latency", fmt.Sprintf("TLS handshake time in milliseconds of successful scans, by region: %s.", strings.Join(regions, ", ")),
		series, func(x float64) string { return time.Unix(int64(x), 0).UTC().Format("Jan 2 15:04") })
	return &c, regions
}

// outcomeChart counts the scans by outcome.
func outcomeChart(es []v1.HistoryEntry) *BarChart {
	n := map[string]int{}
	for _, e := range es {
		n[e.Outcome]++
	}
	outcomes := make([]string, 0, len(n))
	for o := range n {
		outcomes = append(outcomes, o)
	}
	slices.SortFunc(outcomes, func(a, b string) int { return cmp.Or(cmp.Compare(n[b], n[a]), cmp.Compare(a, b)) })
	var bars []Bar
	var desc []string
	for _, o := range outcomes {
		class := "bad"
		if o == "ok" {
			class = ""
		}
		bars = append(bars, Bar{Label: o, Value: float64(n[o]), Class: class})
		desc = append(desc, fmt.Sprintf("%s %d", o, n[o]))
	}
	c := barChart("Scan outcomes", "Scan results by outcome: "+strings.Join(desc, ", ")+".", bars)
	return &c
}
