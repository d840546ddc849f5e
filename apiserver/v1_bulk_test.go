package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
)

// bulkItemResult is one item of POST /domains/bulk's answer.
type bulkItemResult struct {
	Index    int    `json:"index"`
	Line     int    `json:"line"`
	Status   string `json:"status"`
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	Port     int    `json:"port"`
	Error    string `json:"error"`
}

type bulkAnswer struct {
	Created, Exists, Errors int
	Results                 []bulkItemResult
	Error                   string // of an error answer
}

// bulk POSTs body to /domains/bulk on replica i as contentType.
func (e *keyEnv) bulk(i int, key, contentType, body string) (int, bulkAnswer) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.urls[i]+"/api/v1/domains/bulk", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("bulk: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out bulkAnswer
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("bulk: got non-JSON body %q (HTTP %d)", raw, resp.StatusCode)
	}
	return resp.StatusCode, out
}

// ndjson writes one domain object a line for hosts.
func ndjsonOf(hosts ...string) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "{\"hostname\":%q}\n", h)
	}
	return b.String()
}

// domainAddedEvents reads the domain.added events of tenant by domain id.
func domainAddedEvents(t *testing.T, e *keyEnv, tenant string) map[string]events.DomainAddedV1 {
	t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), events.EventStream(tenant), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]events.DomainAddedV1{}
	for _, m := range msgs {
		env, err := events.FromStreamValues(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		if env.Name != events.DomainAdded || env.TenantID != tenant {
			continue
		}
		var p events.DomainAddedV1
		if err := env.Decode(&p); err != nil {
			t.Fatal(err)
		}
		out[p.DomainID] = p
	}
	return out
}

// TestBulkCreate: a JSON array and an NDJSON body add every item, answered
// in request order; posting them again adds nothing and reports the same
// ids; the domains list and the single add see them. The new domains'
// first scans are spread, a single add's is not.
func TestBulkCreate(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("bulk@example.com", "read", "write")
	tenant := events.TenantID("bulk@example.com")

	body := `[{"hostname":"a.example.com"},{"hostname":"B.example.com","port":8443,"notes":"n","tags":["x"]},{"hostname":"c.example.com"}]`
	code, first := e.bulk(0, key, "application/json", body)
	if code != http.StatusOK || first.Created != 3 || first.Exists != 0 || first.Errors != 0 || len(first.Results) != 3 {
		t.Fatalf("bulk: got %d %+v, want 200 with 3 created", code, first)
	}
	wantHosts := []string{"a.example.com", "b.example.com", "c.example.com"}
	for i, r := range first.Results {
		if r.Index != i || r.Status != "created" || r.ID == "" || r.Hostname != wantHosts[i] {
			t.Errorf("item %d: got %+v, want created %s", i, r, wantHosts[i])
		}
	}
	// The other replica reads one at once, as the single add made it.
	if r := e.call(1, http.MethodGet, "/api/v1/domains/"+first.Results[1].ID, key, ""); r.code != http.StatusOK ||
		r.body["port"] != 8443.0 || r.body["notes"] != "n" || !reflect.DeepEqual(r.body["tags"], []any{"x"}) {
		t.Errorf("get b: got %d %v, want port 8443, notes and tags", r.code, r.body)
	}

	// A retry (another replica, NDJSON, plus one new) adds only the new one.
	code, again := e.bulk(1, key, "application/x-ndjson", ndjsonOf("a.example.com", "b.example.com:8443", "d.example.com"))
	if code != http.StatusOK {
		t.Fatalf("retry: got %d %+v", code, again)
	}
	// "b.example.com:8443" is refused as in POST /domains: the port is its own field.
	if again.Results[0].Status != "exists" || again.Results[0].ID != first.Results[0].ID {
		t.Errorf("retry item 0: got %+v, want exists with id %s", again.Results[0], first.Results[0].ID)
	}
	if r := again.Results[1]; r.Status != "error" || !strings.Contains(r.Error, "must not contain a port") || r.Line != 2 {
		t.Errorf("retry item 1: got %+v, want the single add's port error on line 2", r)
	}
	if again.Results[2].Status != "created" || again.Created != 1 || again.Exists != 1 || again.Errors != 1 {
		t.Errorf("retry: got %+v, want 1 created, 1 exists, 1 error", again)
	}
	code, third := e.bulk(0, key, "application/json", body)
	for i, r := range third.Results {
		if code != http.StatusOK || r.Status != "exists" || r.ID != first.Results[i].ID {
			t.Errorf("third post item %d: got %d %+v, want exists with id %s", i, code, r, first.Results[i].ID)
		}
	}
	if r := e.call(0, http.MethodGet, "/api/v1/domains?per_page=100", key, ""); len(ids(t, r)) != 4 {
		t.Errorf("list: got %d domains, want 4", len(ids(t, r)))
	}
	// The single add sees a bulk-added domain as taken.
	if r := e.call(0, http.MethodPost, "/api/v1/domains", key, `{"hostname":"c.example.com"}`); r.code != http.StatusConflict || r.body["id"] != first.Results[2].ID {
		t.Errorf("single add of a bulk-added domain: got %d %v, want 409 with its id", r.code, r.body)
	}
	single := e.createDomain(0, key, map[string]any{"hostname": "single.example.com"})

	added := domainAddedEvents(t, e, tenant)
	if len(added) != 5 {
		t.Fatalf("domain.added events: got %d, want 5 (nothing twice)", len(added))
	}
	if d := added[single].FirstScanDelayMS; d != 0 {
		t.Errorf("single add: got first scan delay %dms, want 0 (due at once)", d)
	}
	var delays []int64
	for _, r := range first.Results {
		p := added[r.ID]
		if p.Source != "import" {
			t.Errorf("%s: got source %q, want import", r.Hostname, p.Source)
		}
		delays = append(delays, p.FirstScanDelayMS)
	}
	// 3 items at 20ms spacing: within [0, 60ms], item i in its own slot.
	for i, d := range delays {
		if d < int64(i)*20 || d > int64(i+1)*20 {
			t.Errorf("item %d: got first scan delay %dms, want within [%d, %d]", i, d, i*20, (i+1)*20)
		}
	}
	// The NDJSON import came after the first: its window follows it.
	if d := added[again.Results[2].ID].FirstScanDelayMS; d < 60 {
		t.Errorf("second import: got first scan delay %dms, want after the first import's 60ms window", d)
	}
}

// TestBulkQuotaBoundary: past the tenant's domain quota the items fail one
// by one with the quota's reason; the earlier ones land, and existing
// domains still answer exists.
func TestBulkQuotaBoundary(t *testing.T) {
	cfg := domainsConfig
	cfg.Quotas = quota.Limits{quota.Domains: 3}
	e := newKeyEnv(t, cfg)
	key := e.bootstrapKey("quota@example.com", "read", "write")
	e.createDomain(0, key, map[string]any{"hostname": "one.example.com"})
	code, r := e.bulk(0, key, "application/x-ndjson", ndjsonOf("one.example.com", "two.example.com", "three.example.com", "four.example.com", "five.example.com"))
	if code != http.StatusOK {
		t.Fatalf("bulk: got %d %+v, want 200", code, r)
	}
	want := []string{"exists", "created", "created", "error", "error"}
	for i, it := range r.Results {
		if it.Status != want[i] {
			t.Errorf("item %d: got %s, want %s", i, it.Status, want[i])
		}
		if want[i] == "error" && !strings.Contains(it.Error, "quota exceeded: this account may have at most 3 domains") {
			t.Errorf("item %d: got error %q, want the quota's reason", i, it.Error)
		}
	}
	if r := e.call(0, http.MethodGet, "/api/v1/quotas", key, ""); r.body["domains"].(map[string]any)["used"] != 3.0 {
		t.Errorf("quotas: got %v, want 3 domains used", r.body["domains"])
	}
}

// TestBulkRefused: requests refused as a whole, with a clear error.
func TestBulkRefused(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("refused@example.com", "read", "write")
	readKey := e.bootstrapKey("refused@example.com", "read")

	var tooMany strings.Builder
	tooMany.WriteString("[")
	for i := range 10_001 {
		if i > 0 {
			tooMany.WriteString(",")
		}
		fmt.Fprintf(&tooMany, `{"hostname":"h%d.example.com"}`, i)
	}
	tooMany.WriteString("]")
	for _, tc := range []struct {
		name, key, ctype, body string
		code                   int
		msg                    string
	}{
		{"read scope", readKey, "application/json", `[{"hostname":"a.example.com"}]`, http.StatusForbidden, "lacks the write permission"},
		{"over 10000 items", key, "application/json", tooMany.String(), http.StatusRequestEntityTooLarge, "at most 10000 domains"},
		{"over the body limit", key, "application/x-ndjson", strings.Repeat(`{"hostname":"a.example.com","notes":"`+strings.Repeat("x", 400)+`"}`+"\n", 40_000),
			http.StatusRequestEntityTooLarge, "request body too large"},
		{"not an array", key, "application/json", `{"hostname":"a.example.com"}`, http.StatusBadRequest, "JSON array"},
		{"broken array", key, "application/json", `[{"hostname":"a.example.com"},{"host`, http.StatusBadRequest, "not valid JSON after 1 items"},
		{"empty", key, "application/x-ndjson", "\n\n", http.StatusBadRequest, "no domains"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := e.bulk(0, tc.key, tc.ctype, tc.body)
			if code != tc.code || !strings.Contains(r.Error, tc.msg) {
				t.Errorf("got %d %q, want %d with %q", code, r.Error, tc.code, tc.msg)
			}
		})
	}
	if r := e.call(0, http.MethodGet, "/api/v1/domains", key, ""); len(ids(t, r)) != 0 {
		t.Errorf("refused requests added %d domains, want 0", len(ids(t, r)))
	}
}

// TestBulkMalformedLines: a bad NDJSON line or array element is an item
// with its error (the single add's message), its line named; the rest land.
func TestBulkMalformedLines(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("lines@example.com", "read", "write")
	body := "{\"hostname\":\"ok1.example.com\"}\n{\"hostname\": \"broken\n\n[1,2]\n{\"hostname\":\"ok2.example.com\",\"colour\":\"red\"}\n" +
		"{\"hostname\":\"ok3.example.com\",\"port\":\"443\"}\n{\"hostname\":\"ok4.example.com\",\"tags\":[\"\"]}\n{\"hostname\":\"ok5.example.com\"}\n" +
		"{\"hostname\":\"ok7.example.com\",\"tags\":[\"a\\u0000b\"]}\n{\"hostname\":\"ok8.example.com\",\"notes\":\"\\u001b[2J\"}\n" +
		"{\"hostname\":\"ok9.example.com\",\"hostname\":\"other.example.com\"}\n"
	code, r := e.bulk(0, key, "application/x-ndjson; charset=utf-8", body)
	if code != http.StatusOK {
		t.Fatalf("bulk: got %d %+v, want 200", code, r)
	}
	want := []struct {
		status string
		line   int
		msg    string
	}{
		{"created", 1, ""},
		{"error", 2, "item is not valid JSON"},
		{"error", 4, "item must be a JSON object"},
		{"error", 5, `unknown field "colour"`},
		{"error", 6, `field "port" must be`},
		{"error", 7, "tags [0] must be 1 to 50 characters"},
		{"created", 8, ""},
		{"error", 9, "tags [0] must not contain control characters"},
		{"error", 10, "notes must not contain control characters"},
		{"error", 11, `duplicate field "hostname"`},
	}
	if len(r.Results) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(r.Results), r.Results, len(want))
	}
	for i, w := range want {
		got := r.Results[i]
		if got.Index != i || got.Status != w.status || got.Line != w.line || !strings.Contains(got.Error, w.msg) {
			t.Errorf("item %d: got %+v, want %s on line %d with %q", i, got, w.status, w.line, w.msg)
		}
	}
	// The same in a JSON array: elements of the wrong shape are items.
	code, r = e.bulk(0, key, "application/json", `[{"hostname":"ok6.example.com"}, 7, {"hostname":""}, {"hostname":"x.example.com","tags":["a"],"tags":["b"]}]`)
	if code != http.StatusOK || r.Results[0].Status != "created" || !strings.Contains(r.Results[1].Error, "JSON object") ||
		!strings.Contains(r.Results[2].Error, "hostname is required") || !strings.Contains(r.Results[3].Error, `duplicate field "tags"`) {
		t.Errorf("array: got %d %+v, want created, not an object, hostname required, duplicate tags", code, r)
	}
}

// TestBulkTenantIsolation: the same host imported by two tenants is two
// domains; neither sees the other's.
func TestBulkTenantIsolation(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	keyA := e.bootstrapKey("a@example.com", "read", "write")
	keyB := e.bootstrapKey("b@example.com", "read", "write")
	_, a := e.bulk(0, keyA, "application/x-ndjson", ndjsonOf("shared.example.com"))
	_, b := e.bulk(1, keyB, "application/x-ndjson", ndjsonOf("shared.example.com"))
	if a.Results[0].Status != "created" || b.Results[0].Status != "created" || a.Results[0].ID == b.Results[0].ID {
		t.Fatalf("got %+v and %+v, want each tenant's own new domain", a.Results[0], b.Results[0])
	}
	if r := e.call(0, http.MethodGet, "/api/v1/domains/"+a.Results[0].ID, keyB, ""); r.code != http.StatusNotFound {
		t.Errorf("tenant b reading a's domain: got %d, want 404", r.code)
	}
	if r := e.call(0, http.MethodGet, "/api/v1/domains", keyB, ""); !reflect.DeepEqual(ids(t, r), []string{b.Results[0].ID}) {
		t.Errorf("tenant b's list: got %v, want only its own %s", ids(t, r), b.Results[0].ID)
	}
}

// TestBulkSkipsBOM: a body that starts with a UTF-8 byte order mark, as
// a file saved by a Windows editor or a spreadsheet does, imports like the
// same body without it, JSON array and NDJSON alike; only one leading
// mark is skipped.
func TestBulkSkipsBOM(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("bom@example.com", "read", "write")
	const bom = "\ufeff"
	code, r := e.bulk(0, key, "application/json", bom+`[{"hostname":"x.example.com"}]`)
	if code != http.StatusOK || r.Created != 1 || r.Errors != 0 {
		t.Errorf("array: got %d %+v, want 200 with 1 created", code, r)
	}
	code, r = e.bulk(0, key, "application/x-ndjson", bom+ndjsonOf("y.example.com", "z.example.com"))
	if code != http.StatusOK || r.Created != 2 || r.Errors != 0 || r.Results[0].Line != 1 {
		t.Errorf("ndjson: got %d %+v, want 200 with 2 created, the first on line 1", code, r)
	}
	code, r = e.bulk(0, key, "application/json", bom+bom+`[{"hostname":"w.example.com"}]`)
	if code != http.StatusBadRequest || !strings.Contains(r.Error, "JSON array") {
		t.Errorf("two marks: got %d %+v, want 400 must be a JSON array", code, r)
	}
}
