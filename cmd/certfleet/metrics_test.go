package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Each role's /metrics exports its own series and not another role's
// (which would always be zero there); all exports every role's. The
// metrics named are plain counters and gauges, which the default registry
// holds from the start, so absence can only come from the filter.
func TestRoleMetrics(t *testing.T) {
	const (
		agentOwn       = "certfleet_agent_ips_skipped_total"
		coordinatorOwn = "certfleet_coordinator_leases_held"
		sinkOwn        = "certfleet_sink_rows_total"
		apiserverOwn   = "certfleet_audit_errors_total"
		shared         = "certfleet_build_info"
	)
	for _, tc := range []struct {
		role          string
		present, gone []string
	}{
		{"agent", []string{agentOwn, shared}, []string{coordinatorOwn, sinkOwn, apiserverOwn}},
		{"coordinator", []string{coordinatorOwn, sinkOwn, shared}, []string{agentOwn, apiserverOwn}},
		{"apiserver", []string{apiserverOwn, shared}, []string{agentOwn, coordinatorOwn, sinkOwn}},
		{"all", []string{agentOwn, coordinatorOwn, sinkOwn, apiserverOwn, shared}, nil},
	} {
		t.Run(tc.role, func(t *testing.T) {
			rec := httptest.NewRecorder()
			roleMetrics(tc.role).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("got status %d, want 200", rec.Code)
			}
			body := rec.Body.String()
			for _, name := range tc.present {
				if !strings.Contains(body, "# TYPE "+name+" ") {
					t.Errorf("got no %s, want it on the %s's /metrics", name, tc.role)
				}
			}
			for _, name := range tc.gone {
				if strings.Contains(body, name) {
					t.Errorf("got %s, want it only on its own role's /metrics", name)
				}
			}
		})
	}
}

// Every metric prefix belongs to roles that exist, so a typo cannot hide
// a metric from every process but all.
func TestMetricOwnersRoles(t *testing.T) {
	for prefix, roles := range metricOwners {
		for _, r := range roles {
			if r != "agent" && r != "coordinator" && r != "apiserver" {
				t.Errorf("prefix %s: got role %q, want agent, coordinator or apiserver", prefix, r)
			}
		}
	}
}
