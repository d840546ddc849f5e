package v1

import (
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/grade"
)

// FuzzParseDomainQuery: no query string makes GET /domains' parser panic,
// and what it accepts is within the documented values.
func FuzzParseDomainQuery(f *testing.F) {
	gin.SetMode(gin.TestMode)
	for _, q := range []string{
		"", "whois_status=expired", "whois_status=pending&sort=whois_days_remaining&order=asc",
		"status=valid&whois_status=no-expiry&search=shop", "whois_status=", "whois_status=all&page=2&per_page=100",
		"whois_status=%00", "whois_status=expired&whois_status=valid", "sort=whois_days_remaining&order=sideways",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("GET", "/api/v1/domains", nil)
		c.Request.URL.RawQuery = raw
		q, err := parseDomainQuery(c)
		if err != nil {
			return
		}
		if q.whoisStatus != statusAll && !slices.Contains(whoisStatuses, q.whoisStatus) {
			t.Fatalf("accepted whois_status %q", q.whoisStatus)
		}
		if q.status != statusAll && !slices.Contains(grade.Statuses, q.status) {
			t.Fatalf("accepted status %q", q.status)
		}
		if !slices.Contains(domainindex.Sorts, q.sort) || q.page < 1 || q.perPage < 1 || q.perPage > maxPerPage {
			t.Fatalf("accepted %+v", q)
		}
	})
}

// FuzzParseHistoryQuery: no query string makes the parsers of GET
// /domains/{id}/history (from, to, region, ip, limit, cursor) or GET
// /stats (window) panic; what they accept is within the documented
// values, and a cursor they accept encodes back to one that decodes alike.
func FuzzParseHistoryQuery(f *testing.F) {
	gin.SetMode(gin.TestMode)
	for _, q := range []string{
		"", "from=2030-06-01T00:00:00Z&to=2030-06-02T00:00:00Z", "from=2030-06-01T02:00:00%2B02:00", "from=yesterday",
		"from=2030-06-02T00:00:00Z&to=2030-06-01T00:00:00Z", "to=2106-02-07T06:28:16Z", "from=1969-12-31T23:59:59Z",
		"limit=1000&region=eu&ip=2001:db8::1", "ip=::ffff:192.0.2.1", "ip=fe80::1%25eth0", "limit=0", "cursor=%ZZ",
		"cursor=eyJ0IjoxOTAwMDAwMDAwLCJyIjoiZXUiLCJpIjoiMTkyLjAuMi4xIiwiaiI6IjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMSJ9",
		"cursor=eyJ0IjotMX0", "window=24h", "window=7d", "window=30d", "window=1y", "window=",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("GET", "/api/v1/stats", nil)
		c.Request.URL.RawQuery = raw
		if w, d, err := parseWindow(c); err == nil && statsWindows[w] != d {
			t.Fatalf("accepted window %q as %v", w, d)
		}
		p, err := parseHistoryParams(c)
		if err != nil {
			return
		}
		if p.limit < 1 || p.limit > maxHistoryLimit || len(p.region) > maxFilterLen {
			t.Fatalf("accepted %+v", p)
		}
		for _, tm := range []time.Time{p.from, p.to} {
			if !tm.IsZero() && (tm.Before(minHistoryTime) || tm.After(maxHistoryTime) || tm.Location() != time.UTC) {
				t.Fatalf("accepted time %v", tm)
			}
		}
		if !p.from.IsZero() && !p.to.IsZero() && !p.from.Before(p.to) {
			t.Fatalf("accepted from %v not before to %v", p.from, p.to)
		}
		if p.ip != "" {
			if a, err := netip.ParseAddr(p.ip); err != nil || a.String() != p.ip {
				t.Fatalf("accepted ip %q", p.ip)
			}
		}
		if p.after != nil {
			back, err := decodeCursor(encodeCursor(*p.after))
			if err != nil || back != *p.after {
				t.Fatalf("cursor %+v: round trip gave %+v, %v", *p.after, back, err)
			}
		}
	})
}
