package audit

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/events"
)

// FuzzFilter feeds query strings to Filter, the reading of GET
// /api/audit's and the dashboard's audit filter: it never panics, a
// refusal is a 400, and what it accepts is a known operation, resource
// type and status, filters within their length, a limit within the bounds
// and times in order.
func FuzzFilter(f *testing.F) {
	gin.SetMode(gin.TestMode)
	for _, q := range []string{
		"", "operation=download&status=failure", "operation=nope", "status=maybe", "limit=0", "limit=1001", "limit=",
		"since=2026-01-02T15:04:05Z&until=2026-01-03T00:00:00%2B02:00", "since=2026-01-02T15:04:05 02:00",
		"until=2026-01-01T00:00:00Z&since=2026-01-02T00:00:00Z", "resource_id=" + strings.Repeat("x", 201), "foo=1",
		"status=success&status=failure", "%zz", "resource_type=client_certificate&resource_id=abc",
		"resource_type=certificate&operation=revoke", "resource_type=" + strings.Repeat("y", 201),
	} {
		f.Add(q)
	}
	l, err := New(Config{}, nil, nil, zap.NewNop())
	if err != nil {
		f.Fatal(err)
	}
	l.known("download", "revoke")
	f.Fuzz(func(t *testing.T, raw string) {
		c, _ := gin.CreateTestContext(httptest.NewRecorder())
		c.Request = httptest.NewRequest("GET", "/api/audit", nil)
		c.Request.URL.RawQuery = raw
		fl, err := l.Filter(c)
		if err != nil {
			if e := httpapi.AsError(err); e == nil || e.Status != 400 {
				t.Fatalf("%q: got %v, want a 400", raw, err)
			}
			return
		}
		if l.CheckOperation(fl.Operation) != nil {
			t.Fatalf("%q: accepted operation %q", raw, fl.Operation)
		}
		if l.resourceTypes.check(fl.ResourceType) != nil {
			t.Fatalf("%q: accepted resource type %q", raw, fl.ResourceType)
		}
		if fl.Status != "" && fl.Status != events.AuditSuccess && fl.Status != events.AuditFailure {
			t.Fatalf("%q: accepted status %q", raw, fl.Status)
		}
		if len(fl.ResourceType) > maxAuditFilterLen || len(fl.ResourceID) > maxAuditFilterLen {
			t.Fatalf("%q: accepted a filter over %d bytes", raw, maxAuditFilterLen)
		}
		if fl.Limit < 1 || fl.Limit > l.cfg.MaxLimit {
			t.Fatalf("%q: accepted limit %d", raw, fl.Limit)
		}
		if !fl.Since.IsZero() && !fl.Until.IsZero() && !fl.Since.Before(fl.Until) {
			t.Fatalf("%q: accepted since %v not before until %v", raw, fl.Since, fl.Until)
		}
	})
}
