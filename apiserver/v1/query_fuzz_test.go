package v1

import (
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/gin-gonic/gin"

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
		if !slices.Contains(domainSorts, q.sort) || q.page < 1 || q.perPage < 1 || q.perPage > maxPerPage {
			t.Fatalf("accepted %+v", q)
		}
	})
}
