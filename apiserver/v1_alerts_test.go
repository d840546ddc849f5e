package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/openapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// scanWithTenant feeds a scan of domain id (named host:443) from region
// through a projector, which evaluates its alerts, as an agent's
// scan.completed of tenant's domain would arrive.
func scanWithTenant(t *testing.T, rdb redis.UniversalClient, tenant, id, host, region string, finished time.Time, results ...events.IPResult) {
	t.Helper()
	job := uuid.New()
	ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, id, events.ScanCompletedV1{
		JobID: job, DomainID: id, Host: host, Port: 443, Region: region,
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := alerts.New(alerts.Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := projector.New(projector.Config{Consumer: "test", Evaluator: eng}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(context.Background(), ev); err != nil {
		t.Fatalf("apply scan: %v", err)
	}
}

// alertSchemaFields are the properties the OpenAPI document gives schema.
func alertSchemaFields(t *testing.T, schema string) []string {
	t.Helper()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for p := range doc.Components.Schemas[schema].Properties {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestAlertsAPI(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	ctx := context.Background()
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	aliceRead := e.bootstrapKey("alice@example.com", "read")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	aliceID, err := e.srv[0].accounts.EnsureAccount(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	soonID := e.createDomain(0, alice, map[string]any{"hostname": "soon.example.com"})
	selfID := e.createDomain(1, alice, map[string]any{"hostname": "self.example.com"})

	at := now.Add(time.Hour)
	soon := certResult(at.Add(10*24*time.Hour), true)
	scanWithTenant(t, e.rdb, aliceID, soonID, "soon.example.com", "eu", at, soon)
	self := certResult(at.Add(90*24*time.Hour), false)
	self.IP, self.LeafSHA256, self.Detail = "192.0.2.2", "bb", "unknown-authority"
	scanWithTenant(t, e.rdb, aliceID, selfID, "self.example.com", "eu", at.Add(time.Minute), self)

	// Newest first, on the other replica.
	r := e.call(1, http.MethodGet, "/api/v1/alerts", aliceRead, "")
	if r.code != http.StatusOK {
		t.Fatalf("list: got %d %v, want 200", r.code, r.body)
	}
	data, _ := r.body["data"].([]any)
	if len(data) != 2 {
		t.Fatalf("list: got %v, want 2 alerts", r.body)
	}
	first, second := data[0].(map[string]any), data[1].(map[string]any)
	if got, want := keysOf(first), alertSchemaFields(t, "Alert"); !reflect.DeepEqual(got, want) {
		t.Errorf("alert fields: got %v, want the documented %v", got, want)
	}
	if first["alert_type"] != "chain_invalid" || first["severity"] != "critical" || first["domain_id"] != selfID ||
		first["hostname"] != "self.example.com" || first["status"] != "active" || first["threshold_days"] != nil ||
		first["resolved_at"] != nil || first["triggered_at"] != at.Add(time.Minute).Format(time.RFC3339) {
		t.Errorf("first alert: got %v", first)
	}
	if second["alert_type"] != "ssl_expiry" || second["severity"] != "warning" || second["threshold_days"] != 14.0 ||
		second["title"] != "SSL certificate expires in 10 days" || second["leaf_sha256"] != "aa" ||
		!reflect.DeepEqual(second["ips"], []any{"192.0.2.1"}) || !reflect.DeepEqual(second["regions"], []any{"eu"}) {
		t.Errorf("second alert: got %v", second)
	}
	wantPages := map[string]any{"page": 1.0, "per_page": 20.0, "total": 2.0, "total_pages": 1.0}
	if !reflect.DeepEqual(r.body["pagination"], wantPages) {
		t.Errorf("pagination: got %v, want %v", r.body["pagination"], wantPages)
	}

	// Paging and the domain filter.
	r = e.call(0, http.MethodGet, "/api/v1/alerts?page=2&per_page=1", alice, "")
	if got := ids(t, r); !reflect.DeepEqual(got, []string{second["id"].(string)}) ||
		!reflect.DeepEqual(r.body["pagination"], map[string]any{"page": 2.0, "per_page": 1.0, "total": 2.0, "total_pages": 2.0}) {
		t.Errorf("page 2 of 1: got %v %v", got, r.body["pagination"])
	}
	r = e.call(0, http.MethodGet, "/api/v1/alerts?domain_id="+soonID, alice, "")
	if got := ids(t, r); !reflect.DeepEqual(got, []string{second["id"].(string)}) {
		t.Errorf("domain filter: got %v, want the ssl_expiry alert", got)
	}
	if r := e.call(0, http.MethodGet, "/api/v1/alerts", bob, ""); len(ids(t, r)) != 0 {
		t.Errorf("bob's alerts: got %v, want none", r.body)
	}

	errs := []struct {
		name, path, key string
		code            int
		msg             string
	}{
		{"no key", "/api/v1/alerts", "", http.StatusUnauthorized, httpapi.MsgUnauthorized},
		{"other tenant's domain", "/api/v1/alerts?domain_id=" + soonID, bob, http.StatusNotFound, "Domain not found"},
		{"unknown domain", "/api/v1/alerts?domain_id=" + uuid.NewString(), alice, http.StatusNotFound, "Domain not found"},
		{"not an id", "/api/v1/alerts?domain_id=x", alice, http.StatusBadRequest, `domain_id must be a domain's id (a UUID), got "x"`},
		{"page 0", "/api/v1/alerts?page=0", alice, http.StatusBadRequest, `page must be a whole number of at least 1, got "0"`},
		{"per_page 101", "/api/v1/alerts?per_page=101", alice, http.StatusBadRequest, `per_page must be a whole number from 1 to 100, got "101"`},
		{"settings without key", "/api/v1/alert-settings", "", http.StatusUnauthorized, httpapi.MsgUnauthorized},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			wantV1Error(t, e.call(0, http.MethodGet, tc.path, tc.key, ""), tc.code, tc.msg)
		})
	}

	// The renewal resolves the expiry alert.
	renewed := certResult(at.Add(100*24*time.Hour), true)
	renewed.LeafSHA256 = "cc"
	scanWithTenant(t, e.rdb, aliceID, soonID, "soon.example.com", "eu", at.Add(time.Hour), renewed)
	r = e.call(1, http.MethodGet, "/api/v1/alerts?domain_id="+soonID, alice, "")
	data, _ = r.body["data"].([]any)
	var got []string
	for _, d := range data {
		a := d.(map[string]any)
		got = append(got, a["alert_type"].(string)+" "+a["status"].(string))
		if a["alert_type"] == "ssl_expiry" && (a["resolved_at"] != at.Add(time.Hour).Format(time.RFC3339) || a["resolved_reason"] != "certificate replaced") {
			t.Errorf("resolved expiry alert: got %v", a)
		}
	}
	if want := []string{"cert_changed notice", "ssl_expiry resolved"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after renewal: got %v, want %v", got, want)
	}
}

func TestAlertSettingsAPI(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	aliceRead := e.bootstrapKey("alice@example.com", "read")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	defaults := map[string]any{"expiry_thresholds_days": []any{30.0, 14.0, 7.0, 3.0, 1.0}, "scan_failing_after": 3.0,
		"domain_expiry_thresholds_days": []any{60.0, 30.0, 14.0, 7.0, 1.0}, "expiry_metrics": false}

	r := e.call(0, http.MethodGet, "/api/v1/alert-settings", aliceRead, "")
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, defaults) {
		t.Fatalf("defaults: got %d %v, want 200 %v", r.code, r.body, defaults)
	}
	if got, want := keysOf(r.body), alertSchemaFields(t, "AlertSettings"); !reflect.DeepEqual(got, want) {
		t.Errorf("settings fields: got %v, want the documented %v", got, want)
	}

	bad := []struct {
		name, key, body string
		code            int
		msg             string
	}{
		{"read key", aliceRead, `{"scan_failing_after":5}`, http.StatusForbidden, "lacks the write permission"},
		{"no thresholds", alice, `{"expiry_thresholds_days":[]}`, http.StatusBadRequest, "expiry_thresholds_days must hold 1 to 10 values, got 0"},
		{"eleven", alice, `{"expiry_thresholds_days":[1,2,3,4,5,6,7,8,9,10,11]}`, http.StatusBadRequest, "must hold 1 to 10 values, got 11"},
		{"zero", alice, `{"expiry_thresholds_days":[0]}`, http.StatusBadRequest, "values must be from 1 to 365, got 0"},
		{"366", alice, `{"expiry_thresholds_days":[366]}`, http.StatusBadRequest, "values must be from 1 to 365, got 366"},
		{"twice", alice, `{"expiry_thresholds_days":[7,14,7]}`, http.StatusBadRequest, "must be distinct, got 7 twice"},
		{"no domain thresholds", alice, `{"domain_expiry_thresholds_days":[]}`, http.StatusBadRequest, "domain_expiry_thresholds_days must hold 1 to 10 values, got 0"},
		{"domain 366", alice, `{"domain_expiry_thresholds_days":[30,366]}`, http.StatusBadRequest, "domain_expiry_thresholds_days values must be from 1 to 365, got 366"},
		{"failing 0", alice, `{"scan_failing_after":0}`, http.StatusBadRequest, "scan_failing_after must be from 1 to 20, got 0"},
		{"failing 21", alice, `{"scan_failing_after":21}`, http.StatusBadRequest, "got 21"},
		{"string", alice, `{"scan_failing_after":"3"}`, http.StatusBadRequest, `field "scan_failing_after" must be a whole number`},
		{"fraction", alice, `{"expiry_thresholds_days":[1.5]}`, http.StatusBadRequest, `field "expiry_thresholds_days" must be an array of whole numbers`},
		{"unknown field", alice, `{"thresholds":[1]}`, http.StatusBadRequest, `unknown field "thresholds"`},
		{"empty body", alice, ``, http.StatusBadRequest, "request body is empty"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantV1Error(t, e.call(0, http.MethodPut, "/api/v1/alert-settings", tc.key, tc.body), tc.code, tc.msg)
		})
	}
	if r := e.call(1, http.MethodGet, "/api/v1/alert-settings", alice, ""); !reflect.DeepEqual(r.body, defaults) {
		t.Errorf("after refused changes: got %v, want the defaults", r.body)
	}

	// A field left out keeps its value; thresholds come back largest first.
	r = e.call(0, http.MethodPut, "/api/v1/alert-settings", alice, `{"scan_failing_after":5}`)
	if r.code != http.StatusOK || r.body["scan_failing_after"] != 5.0 || !reflect.DeepEqual(r.body["expiry_thresholds_days"], defaults["expiry_thresholds_days"]) {
		t.Errorf("put scan_failing_after: got %d %v", r.code, r.body)
	}
	r = e.call(0, http.MethodPut, "/api/v1/alert-settings", alice, `{"expiry_thresholds_days":[1,365,60],"domain_expiry_thresholds_days":[10,90],"expiry_metrics":true}`)
	want := map[string]any{"expiry_thresholds_days": []any{365.0, 60.0, 1.0}, "scan_failing_after": 5.0,
		"domain_expiry_thresholds_days": []any{90.0, 10.0}, "expiry_metrics": true}
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, want) {
		t.Errorf("put thresholds: got %d %v, want 200 %v", r.code, r.body, want)
	}
	if r := e.call(1, http.MethodGet, "/api/v1/alert-settings", aliceRead, ""); !reflect.DeepEqual(r.body, want) {
		t.Errorf("other replica: got %v, want %v", r.body, want)
	}
	if r := e.call(1, http.MethodGet, "/api/v1/alert-settings", bob, ""); !reflect.DeepEqual(r.body, defaults) {
		t.Errorf("bob: got %v, want the defaults", r.body)
	}
}
