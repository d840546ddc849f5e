package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/coordinator"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// domainsConfig lifts the general rate limit out of the way of tests that
// send many requests with one key.
var domainsConfig = Config{RateLimitGeneral: 1_000_000, RateLimitCheck: 1_000_000}

// jsonBody marshals v for call.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// createDomain POSTs a domain on replica i and returns its id.
func (e *keyEnv) createDomain(i int, key string, body map[string]any) string {
	e.t.Helper()
	r := e.call(i, http.MethodPost, "/api/v1/domains", key, jsonBody(e.t, body))
	if r.code != http.StatusCreated {
		e.t.Fatalf("create %v: got %d %v, want 201", body, r.code, r.body)
	}
	id, _ := r.body["id"].(string)
	return id
}

// applyScan feeds a scan of id, under the name host:port, from region
// through the projector, as an agent's scan.completed would arrive.
func applyScan(t *testing.T, rdb *redis.Client, id, host string, port int, region string, finished time.Time, results ...events.IPResult) {
	t.Helper()
	job := uuid.New()
	ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, "", id, events.ScanCompletedV1{
		JobID: job, DomainID: id, Host: host, Port: port, Region: region,
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEvent(context.Background(), rdb, ev); err != nil {
		t.Fatalf("apply scan: %v", err)
	}
}

// certResult is an IP that showed a certificate valid until notAfter.
func certResult(notAfter time.Time, chainValid bool) events.IPResult {
	return events.IPResult{
		IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "aa",
		NotBefore: notAfter.AddDate(-1, 0, 0), NotAfter: notAfter, Issuer: "CN=Lab CA",
		KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256",
		ChainValid: chainValid, HostnameValid: true, TLSVersion: "TLS 1.3",
	}
}

// ids lists the ids of a list answer's data, in order.
func ids(t *testing.T, r v1Response) []string {
	t.Helper()
	data, ok := r.body["data"].([]any)
	if !ok {
		t.Fatalf("list: got %d %v, want a data array", r.code, r.body)
	}
	out := []string{}
	for _, d := range data {
		out = append(out, d.(map[string]any)["id"].(string))
	}
	return out
}

func TestDomainLifecycle(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	created := e.clock.Now().UTC()

	r := e.call(0, http.MethodPost, "/api/v1/domains", key,
		`{"hostname":"Shop.Example.","port":8443,"notes":"Production server","tags":["production","web"]}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create: got %d %v, want 201", r.code, r.body)
	}
	id, _ := r.body["id"].(string)
	if u, err := uuid.Parse(id); err != nil || u.Version() != 4 {
		t.Fatalf("id: got %q, want a random UUID", id)
	}
	want := map[string]any{
		"id": id, "hostname": "shop.example", "port": 8443.0, "is_active": true,
		"ssl_grade": nil, "ssl_days_remaining": nil, "ssl_status": nil, "whois_days_remaining": nil,
		"whois_status": "pending", "notes": "Production server", "tags": []any{"production", "web"},
		"created_at": created.Format(time.RFC3339), "updated_at": created.Format(time.RFC3339),
	}
	if !reflect.DeepEqual(r.body, want) {
		t.Errorf("create:\n got %v\nwant %v", r.body, want)
	}
	// The other replica reads it at once.
	if r := e.call(1, http.MethodGet, "/api/v1/domains/"+id, key, ""); r.code != http.StatusOK || !reflect.DeepEqual(r.body, want) {
		t.Errorf("get on the other replica: got %d %v, want 200 %v", r.code, r.body, want)
	}
	// Adding it again: 409 naming the domain the caller has.
	if r := e.call(1, http.MethodPost, "/api/v1/domains", key, `{"hostname":"shop.example","port":8443}`); r.code != http.StatusConflict ||
		!reflect.DeepEqual(r.body, map[string]any{"error": "This domain is already being monitored", "id": id}) {
		t.Errorf("add again: got %d %v, want 409 with the error and id %s", r.code, r.body, id)
	}

	// A scan arrives: the grade and days show.
	at := e.clock.Now()
	applyScan(t, e.rdb, id, "shop.example", 8443, "eu-west", at, certResult(at.Add(45*24*time.Hour+time.Hour), true))
	r = e.call(0, http.MethodGet, "/api/v1/domains/"+id, key, "")
	if r.body["ssl_grade"] != "A" || r.body["ssl_days_remaining"] != 45.0 || r.body["ssl_status"] != "valid" {
		t.Errorf("after a scan: got %v, want grade A, 45 days, valid", r.body)
	}

	// Partial update: only the fields sent change.
	e.clock.Add(time.Minute)
	r = e.call(1, http.MethodPut, "/api/v1/domains/"+id, key, `{"is_active":false,"notes":"Deprecated server"}`)
	if r.code != http.StatusOK || r.body["is_active"] != false || r.body["notes"] != "Deprecated server" ||
		!reflect.DeepEqual(r.body["tags"], []any{"production", "web"}) || r.body["hostname"] != "shop.example" ||
		r.body["ssl_grade"] != "A" || r.body["updated_at"] != e.clock.Now().UTC().Format(time.RFC3339) ||
		r.body["created_at"] != created.Format(time.RFC3339) {
		t.Errorf("update: got %d %v, want inactive with new notes, the rest kept", r.code, r.body)
	}

	// Rename: same id, the view of the old name no longer shows, the old
	// name is free, a taken name is refused.
	other := e.createDomain(0, key, map[string]any{"hostname": "other.example"})
	wantV1Error(t, e.call(0, http.MethodPut, "/api/v1/domains/"+id, key, `{"hostname":"other.example","port":443}`),
		http.StatusConflict, "This domain is already being monitored")
	r = e.call(0, http.MethodPut, "/api/v1/domains/"+id, key, `{"hostname":"new.example","tags":[]}`)
	if r.code != http.StatusOK || r.body["id"] != id || r.body["hostname"] != "new.example" || r.body["port"] != 8443.0 ||
		r.body["ssl_grade"] != nil || r.body["ssl_days_remaining"] != nil || !reflect.DeepEqual(r.body["tags"], []any{}) {
		t.Errorf("rename: got %d %v, want new.example:8443, same id, no SSL facts yet, no tags", r.code, r.body)
	}
	// The KeyChest API finds it under its new name only.
	claimKey := "key-of-ops-0123456789"
	if r := e.call(0, http.MethodPost, "/api/v1.0/access/claim", "", jsonBody(t, map[string]string{"email": "ops@example.com", "api_key": claimKey})); r.code != http.StatusOK {
		t.Fatalf("claim: got %d %v", r.code, r.body)
	}
	e.approveClaimed(key)
	if r := e.call(1, http.MethodGet, "/api/v1.0/servers/expiration/shop.example:8443?api_key="+claimKey, "", ""); r.code != http.StatusNotFound {
		t.Errorf("keychest expiration of the old name: got %d %v, want 404", r.code, r.body)
	}
	if r := e.call(1, http.MethodGet, "/api/v1.0/servers/expiration/new.example:8443?api_key="+claimKey, "", ""); r.code != http.StatusOK ||
		!reflect.DeepEqual(r.body["results"], []any{}) {
		t.Errorf("keychest expiration of the new name: got %d %v, want 200 without the old name's results", r.code, r.body)
	}
	again := e.createDomain(1, key, map[string]any{"hostname": "shop.example", "port": 8443})
	if again == id || again == other {
		t.Errorf("re-add of the old name: got id %s, want a new one", again)
	}

	// Delete.
	r = e.call(1, http.MethodDelete, "/api/v1/domains/"+id, key, "")
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, map[string]any{"message": "Domain deleted"}) {
		t.Errorf("delete: got %d %v, want 200 Domain deleted", r.code, r.body)
	}
	for i, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		wantV1Error(t, e.call(i%2, m, "/api/v1/domains/"+id, key, `{"notes":"x"}`), http.StatusNotFound, "Domain not found")
	}
	r = e.call(0, http.MethodGet, "/api/v1/domains?sort=hostname&order=asc", key, "")
	if got, want := ids(t, r), []string{other, again}; !reflect.DeepEqual(got, want) {
		t.Errorf("list after delete: got %v, want %v", got, want)
	}
}

// Inactive domains leave the coordinator's schedule; deleted ones leave it
// altogether. A real coordinator consumes the events.
func TestDomainScheduling(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	co, err := coordinator.New(coordinator.Config{Name: "test", Tick: 20 * time.Millisecond}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})

	id := e.createDomain(0, key, map[string]any{"hostname": "shop.example"})
	shard := coordinator.ShardOf(id, events.DefaultShards)
	_, scheduleKey, err := coordinator.DomainKeys(context.Background(), e.rdb, id, events.DefaultShards)
	if err != nil {
		t.Fatal(err)
	}
	member, err := coordinator.Member(id)
	if err != nil {
		t.Fatal(err)
	}
	state := func() (scheduled, known bool) {
		known, scheduled, err := coordinator.DomainState(context.Background(), e.rdb, id, events.DefaultShards)
		if err != nil {
			t.Fatal(err)
		}
		return scheduled, known
	}
	waitFor := func(what string, wantScheduled, wantKnown bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, k := state()
			if s == wantScheduled && k == wantKnown {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got scheduled=%v known=%v, want %v %v", what, s, k, wantScheduled, wantKnown)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("after create", true, true)
	if r := e.call(1, http.MethodPut, "/api/v1/domains/"+id, key, `{"is_active":false}`); r.code != http.StatusOK {
		t.Fatalf("deactivate: got %d %v", r.code, r.body)
	}
	waitFor("after is_active false", false, true)
	if r := e.call(0, http.MethodPut, "/api/v1/domains/"+id, key, `{"is_active":true}`); r.code != http.StatusOK {
		t.Fatalf("activate: got %d %v", r.code, r.body)
	}
	waitFor("after is_active true", true, true)

	// A rename is scanned at once under the new name, though the next
	// scheduled scan is hours away.
	jobs := func(host string) int {
		evs, err := events.ReadAll(context.Background(), e.rdb, events.JobStream(shard))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range evs {
			var job events.ScanRequestedV1
			if err := ev.Decode(&job); err != nil {
				t.Fatal(err)
			}
			if job.DomainID == id && job.Host == host {
				n++
			}
		}
		return n
	}
	waitJob := func(host string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for jobs(host) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no job for %s", host)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitJob("shop.example")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		due := e.rdb.ZScore(context.Background(), scheduleKey, member).Val()
		if time.UnixMilli(int64(due)).After(time.Now().Add(time.Hour)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the jobs: due %s, want hours away", time.UnixMilli(int64(due)))
		}
	}
	if r := e.call(0, http.MethodPut, "/api/v1/domains/"+id, key, `{"hostname":"renamed.example"}`); r.code != http.StatusOK {
		t.Fatalf("rename: got %d %v", r.code, r.body)
	}
	waitJob("renamed.example")

	if r := e.call(1, http.MethodDelete, "/api/v1/domains/"+id, key, ""); r.code != http.StatusOK {
		t.Fatalf("delete: got %d %v", r.code, r.body)
	}
	waitFor("after delete", false, false)
}

// listFixture is a tenant with one domain in every status (and one never
// scanned), created a minute apart.
type listFixture struct {
	e   *keyEnv
	key string
	// id by hostname, and hostnames in creation order.
	id      map[string]string
	created []string
}

func newListFixture(t *testing.T) *listFixture {
	e := newKeyEnv(t, domainsConfig)
	f := &listFixture{e: e, key: e.bootstrapKey("ops@example.com", "read", "write"), id: map[string]string{}}
	hosts := []string{"valid.shop.example", "warn.example", "crit.example", "expired.example",
		"badchain.shop.example", "down.example", "never.example"}
	for i, h := range hosts {
		e.clock.Add(time.Minute)
		f.id[h] = e.createDomain(i%2, f.key, map[string]any{"hostname": h})
		f.created = append(f.created, h)
	}
	// Another tenant's domains never show.
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	e.createDomain(0, bob, map[string]any{"hostname": "valid.bob.example"})

	at := e.clock.Now()
	days := func(n int) time.Time { return at.Add(time.Duration(n)*24*time.Hour + time.Hour) }
	scans := map[string]events.IPResult{
		"valid.shop.example":    certResult(days(90), true),
		"warn.example":          certResult(days(20), true),
		"crit.example":          certResult(days(3), true),
		"expired.example":       certResult(days(-2), true),
		"badchain.shop.example": certResult(days(60), false),
		"down.example":          {IP: "192.0.2.9", Outcome: events.OutcomeTimeout},
	}
	for h, res := range scans {
		applyScan(t, e.rdb, f.id[h], h, 443, "eu-west", at.Add(-time.Minute), res)
	}
	return f
}

func (f *listFixture) list(i int, query string) v1Response {
	f.e.t.Helper()
	return f.e.call(i, http.MethodGet, "/api/v1/domains"+query, f.key, "")
}

// ids maps hostnames to ids; hostnames given as "~" + name are a tie,
// ordered by id and placed last.
func (f *listFixture) ids(hosts ...string) []string {
	out := []string{}
	var tied []string
	for _, h := range hosts {
		if name, ok := strings.CutPrefix(h, "~"); ok {
			tied = append(tied, f.id[name])
			continue
		}
		out = append(out, f.id[h])
	}
	slices.Sort(tied)
	return append(out, tied...)
}

func TestListDomainsStatusAndSearch(t *testing.T) {
	f := newListFixture(t)
	r := f.list(0, "?sort=hostname&order=asc")
	if r.code != http.StatusOK {
		t.Fatalf("list: got %d %v", r.code, r.body)
	}
	byHost := map[string]map[string]any{}
	for _, d := range r.body["data"].([]any) {
		m := d.(map[string]any)
		byHost[m["hostname"].(string)] = m
	}
	wantFacts := map[string][3]any{ // grade, days, status
		"valid.shop.example":    {"A", 90.0, "valid"},
		"warn.example":          {"A", 20.0, "warning"},
		"crit.example":          {"B", 3.0, "critical"},
		"expired.example":       {"F", -2.0, "expired"},
		"badchain.shop.example": {"F", 60.0, "error"},
		"down.example":          {nil, nil, "error"},
		"never.example":         {nil, nil, nil},
	}
	for h, w := range wantFacts {
		d := byHost[h]
		if got := [3]any{d["ssl_grade"], d["ssl_days_remaining"], d["ssl_status"]}; got != w {
			t.Errorf("%s: got grade, days, status %v, want %v", h, got, w)
		}
		if d["whois_days_remaining"] != nil {
			t.Errorf("%s: whois_days_remaining: got %v, want null", h, d["whois_days_remaining"])
		}
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"?status=all&sort=hostname&order=asc", []string{"badchain.shop.example", "crit.example", "down.example",
			"expired.example", "never.example", "valid.shop.example", "warn.example"}},
		{"?status=valid", []string{"valid.shop.example"}},
		{"?status=warning", []string{"warn.example"}},
		{"?status=critical", []string{"crit.example"}},
		{"?status=expired", []string{"expired.example"}},
		{"?status=error&sort=hostname&order=asc", []string{"badchain.shop.example", "down.example"}},
		{"?search=SHOP&sort=hostname&order=asc", []string{"badchain.shop.example", "valid.shop.example"}},
		{"?search=shop&status=error", []string{"badchain.shop.example"}},
		{"?search=" + url.QueryEscape(".shop") + "&status=valid", []string{"valid.shop.example"}},
		// A search matches from the start of the hostname or of a label
		// but the last, not inside a label.
		{"?search=hop", []string{}},
		{"?search=shop.example", []string{"badchain.shop.example", "valid.shop.example"}},
		{"?search=nothing", []string{}},
		// A hostname's first label is a label: a leading dot finds it
		// too, and a trailing one is the name's root.
		{"?search=" + url.QueryEscape(".valid"), []string{"valid.shop.example"}},
		{"?search=" + url.QueryEscape(".crit.example."), []string{"crit.example"}},
		{"?search=" + url.QueryEscape("Ünknown"), []string{}},
	}
	check := func() {
		t.Helper()
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				r := f.list(1, tc.query)
				if got, want := ids(t, r), f.ids(tc.want...); !reflect.DeepEqual(got, want) {
					t.Errorf("got %v, want %v (%v)", got, want, tc.want)
				}
				p := r.body["pagination"].(map[string]any)
				if p["total"] != float64(len(tc.want)) {
					t.Errorf("total: got %v, want %d", p["total"], len(tc.want))
				}
			})
		}
	}
	check()

	// The status lists asked the tenant's attention index built; a
	// server's sweeper (RunAttention) builds it, and the lists walk it.
	tenant := events.TenantID("ops@example.com")
	pre := domainindex.Prefix(tenant)
	built := func() bool { // every tier, swept to the end (wwarn last)
		return f.e.rdb.HExists(context.Background(), pre+"tiers", "wwarn").Val() && !f.e.rdb.HExists(context.Background(), pre+"tiers", "wwarnq").Val()
	}
	if n := f.e.rdb.Exists(context.Background(), pre+"tiers").Val(); n != 0 {
		t.Fatal("attention index built with no sweeper running")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.e.srv[0].RunAttention(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); !built(); {
		if r := f.list(0, "?status=critical"); r.code != http.StatusOK {
			t.Fatalf("list: got %d %v", r.code, r.body)
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper built no attention index in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for tier, hosts := range map[string][]string{
		"exp":  {"expired.example"},
		"crit": {"crit.example"},
		"warn": {"warn.example"},
		"err":  {"badchain.shop.example", "down.example"},
	} {
		m := f.e.rdb.ZRange(context.Background(), pre+tier+":created", 0, -1).Val()
		var got []string
		for _, id := range m {
			got = append(got, domainindex.IDOf(id))
		}
		slices.Sort(got)
		if want := slices.Sorted(slices.Values(f.ids(hosts...))); !slices.Equal(got, want) {
			t.Errorf("attention tier %s: got %v, want %v (%v)", tier, got, want, hosts)
		}
	}
	check()
}

func TestListDomainsSort(t *testing.T) {
	f := newListFixture(t)
	reversed := slices.Clone(f.created)
	slices.Reverse(reversed)
	nulls := []string{"~down.example", "~never.example"}
	all := make([]string, 0, len(f.created))
	for _, h := range f.created {
		all = append(all, "~"+h)
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", reversed},
		{"?order=desc", reversed},
		{"?sort=created_at", reversed},
		{"?sort=created_at&order=asc", f.created},
		{"?sort=hostname&order=asc", []string{"badchain.shop.example", "crit.example", "down.example",
			"expired.example", "never.example", "valid.shop.example", "warn.example"}},
		{"?sort=hostname&order=desc", []string{"warn.example", "valid.shop.example", "never.example",
			"expired.example", "down.example", "crit.example", "badchain.shop.example"}},
		{"?sort=ssl_days_remaining&order=asc", append([]string{"expired.example", "crit.example", "warn.example",
			"badchain.shop.example", "valid.shop.example"}, nulls...)},
		{"?sort=ssl_days_remaining&order=desc", append([]string{"valid.shop.example", "badchain.shop.example",
			"warn.example", "crit.example", "expired.example"}, nulls...)},
		// No WHOIS data yet: every domain ties, and ties go by id.
		{"?sort=whois_days_remaining&order=asc", all},
		{"?sort=whois_days_remaining&order=desc", all},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			if got, want := ids(t, f.list(0, tc.query)), f.ids(tc.want...); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v (%v)", got, want, tc.want)
			}
		})
	}
}

func TestListDomainsPagination(t *testing.T) {
	f := newListFixture(t)
	all := ids(t, f.list(0, "?sort=whois_days_remaining&per_page=100"))
	if len(all) != 7 {
		t.Fatalf("per_page=100: got %d domains, want 7", len(all))
	}
	// One per page, walking both replicas: every domain once, in order.
	var walked []string
	for page := 1; page <= 7; page++ {
		r := f.list(page%2, fmt.Sprintf("?sort=whois_days_remaining&per_page=1&page=%d", page))
		want := map[string]any{"page": float64(page), "per_page": 1.0, "total": 7.0, "total_pages": 7.0}
		if !reflect.DeepEqual(r.body["pagination"], want) {
			t.Errorf("page %d pagination: got %v, want %v", page, r.body["pagination"], want)
		}
		walked = append(walked, ids(t, r)...)
	}
	if !reflect.DeepEqual(walked, all) {
		t.Errorf("pages of one: got %v, want %v", walked, all)
	}
	tests := []struct {
		query      string
		wantIDs    []string
		wantPaging map[string]any
	}{
		{"", all[:7], map[string]any{"page": 1.0, "per_page": 20.0, "total": 7.0, "total_pages": 1.0}},
		{"?per_page=3&page=3", all[6:], map[string]any{"page": 3.0, "per_page": 3.0, "total": 7.0, "total_pages": 3.0}},
		{"?per_page=3&page=4", []string{}, map[string]any{"page": 4.0, "per_page": 3.0, "total": 7.0, "total_pages": 3.0}},
		{"?page=99", []string{}, map[string]any{"page": 99.0, "per_page": 20.0, "total": 7.0, "total_pages": 1.0}},
		{"?status=valid&search=none", []string{}, map[string]any{"page": 1.0, "per_page": 20.0, "total": 0.0, "total_pages": 0.0}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			sep := "?"
			if tc.query != "" {
				sep = "&"
			}
			r := f.list(1, tc.query+sep+"sort=whois_days_remaining")
			if got := ids(t, r); !reflect.DeepEqual(got, tc.wantIDs) {
				t.Errorf("ids: got %v, want %v", got, tc.wantIDs)
			}
			if !reflect.DeepEqual(r.body["pagination"], tc.wantPaging) {
				t.Errorf("pagination: got %v, want %v", r.body["pagination"], tc.wantPaging)
			}
		})
	}
	for _, tc := range []struct{ query, wantMsg string }{
		{"?per_page=0", "per_page"},
		{"?per_page=101", "per_page"},
		{"?per_page=x", "per_page"},
		{"?per_page=", "per_page"},
		{"?page=0", "page"},
		{"?page=-1", "page"},
		{"?page=x", "page"},
		{"?status=ok", "status"},
		{"?sort=grade", "sort"},
		{"?order=up", "order"},
		{"?search=" + strings.Repeat("a", 254), "search"},
		{"?tag=" + strings.Repeat("a", 51), "tag"},
	} {
		wantV1Error(t, f.list(0, tc.query), http.StatusBadRequest, tc.wantMsg)
	}
}

func TestDomainRequestErrors(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	readKey := e.bootstrapKey("ops@example.com", "read")
	id := e.createDomain(0, key, map[string]any{"hostname": "shop.example"})
	state := func() string {
		t.Helper()
		ctx := context.Background()
		tenant := events.TenantID("ops@example.com")
		tag := events.TenantTag(tenant)
		rec := e.rdb.HGetAll(ctx, "domain:"+tag+":"+id).Val()
		return fmt.Sprintf("events=%d domains=%v record=%v", e.rdb.XLen(ctx, events.EventStream(tenant)).Val(),
			e.rdb.ZRange(ctx, domainindex.HostKey(tenant), 0, -1).Val(), rec)
	}
	tags := func(n, size int) string {
		ts := make([]string, n)
		for i := range ts {
			ts[i] = strings.Repeat("t", size)
		}
		return jsonBody(t, ts)
	}
	tests := []struct {
		name, method, path, key, body string
		wantCode                      int
		wantMsg                       string
	}{
		{"no key", http.MethodPost, "/domains", "", `{"hostname":"a.example"}`, 401, "Missing or invalid API key"},
		{"unknown key", http.MethodGet, "/domains", "ssa_" + strings.Repeat("x", 32), "", 401, "Missing or invalid API key"},
		{"no key, list", http.MethodGet, "/domains", "", "", 401, "Missing or invalid API key"},
		{"read key posts", http.MethodPost, "/domains", readKey, `{"hostname":"a.example"}`, 403, "lacks the write permission"},
		{"read key puts", http.MethodPut, "/domains/" + id, readKey, `{"notes":"x"}`, 403, "lacks the write permission"},
		{"read key deletes", http.MethodDelete, "/domains/" + id, readKey, "", 403, "lacks the write permission"},
		{"unknown id", http.MethodGet, "/domains/" + uuid.NewString(), key, "", 404, "Domain not found"},
		{"id not a uuid", http.MethodGet, "/domains/shop.example", key, "", 404, "Domain not found"},
		{"put unknown id", http.MethodPut, "/domains/" + uuid.NewString(), key, `{"notes":"x"}`, 404, "Domain not found"},
		{"delete unknown id", http.MethodDelete, "/domains/" + uuid.NewString(), key, "", 404, "Domain not found"},
		{"duplicate", http.MethodPost, "/domains", key, `{"hostname":"SHOP.example","port":443}`, 409, "This domain is already being monitored"},
		{"unknown field", http.MethodPost, "/domains", key, `{"hostname":"a.example","hostnme":"b"}`, 400, `unknown field "hostnme"`},
		{"repeated field", http.MethodPost, "/domains", key, `{"hostname":"a.example","hostname":"b.example"}`, 400, `duplicate field "hostname"`},
		{"repeated field, escaped", http.MethodPost, "/domains", key, `{"hostname":"a.example","host\u006eame":"b.example"}`, 400, `duplicate field "hostname"`},
		{"put repeated field", http.MethodPut, "/domains/" + id, key, `{"notes":"a","is_active":true,"notes":"b"}`, 400, `duplicate field "notes"`},
		{"put unknown field", http.MethodPut, "/domains/" + id, key, `{"active":false}`, 400, `unknown field "active"`},
		{"port not a number", http.MethodPost, "/domains", key, `{"hostname":"a.example","port":"443"}`, 400, `field "port"`},
		{"tags not an array", http.MethodPost, "/domains", key, `{"hostname":"a.example","tags":"web"}`, 400, `field "tags"`},
		{"is_active not a boolean", http.MethodPut, "/domains/" + id, key, `{"is_active":"no"}`, 400, `field "is_active"`},
		{"missing hostname", http.MethodPost, "/domains", key, `{"port":443}`, 400, "hostname is required"},
		{"hostname with port", http.MethodPost, "/domains", key, `{"hostname":"a.example:8443"}`, 400, "must not contain a port"},
		{"put hostname with port", http.MethodPut, "/domains/" + id, key, `{"hostname":"a.example:443"}`, 400, "must not contain a port"},
		{"url", http.MethodPost, "/domains", key, `{"hostname":"https://a.example/"}`, 400, "URL"},
		{"ip", http.MethodPost, "/domains", key, `{"hostname":"192.0.2.1"}`, 400, "IP"},
		{"put empty hostname", http.MethodPut, "/domains/" + id, key, `{"hostname":""}`, 400, "empty"},
		{"port zero", http.MethodPost, "/domains", key, `{"hostname":"a.example","port":0}`, 400, "port must be from 1 to 65535"},
		{"port too big", http.MethodPut, "/domains/" + id, key, `{"port":65536}`, 400, "port must be from 1 to 65535"},
		{"notes too long", http.MethodPost, "/domains", key, jsonBody(t, map[string]any{"hostname": "a.example", "notes": strings.Repeat("n", 501)}), 400, "notes must be at most 500"},
		{"put notes too long", http.MethodPut, "/domains/" + id, key, jsonBody(t, map[string]any{"notes": strings.Repeat("n", 501)}), 400, "notes"},
		{"eleven tags", http.MethodPost, "/domains", key, `{"hostname":"a.example","tags":` + tags(11, 1) + `}`, 400, "tags must be at most 10"},
		{"tag too long", http.MethodPut, "/domains/" + id, key, `{"tags":` + tags(1, 51) + `}`, 400, "tags"},
		{"empty tag", http.MethodPost, "/domains", key, `{"hostname":"a.example","tags":[""]}`, 400, "tags"},
		{"tag with NUL", http.MethodPost, "/domains", key, `{"hostname":"a.example","tags":["ok","a\u0000b"]}`, 400, "tags [1] must not contain control characters"},
		{"put tag with ESC", http.MethodPut, "/domains/" + id, key, `{"tags":["\u001b[31mred"]}`, 400, "tags [0] must not contain control characters"},
		{"notes with NUL and ESC", http.MethodPost, "/domains", key, `{"hostname":"a.example","notes":"\u0000\u001b[31mred"}`, 400, "notes must not contain control characters"},
		{"put notes with NUL and ESC", http.MethodPut, "/domains/" + id, key, `{"tags":["a"],"notes":"\u0000\u001b[31mred"}`, 400, "notes must not contain control characters"},
		{"put notes with CR", http.MethodPut, "/domains/" + id, key, `{"notes":"line\rover"}`, 400, "notes must not contain control characters"},
		{"empty body", http.MethodPost, "/domains", key, ``, 400, "empty"},
		{"not an object", http.MethodPut, "/domains/" + id, key, `["notes"]`, 400, "JSON object"},
		{"broken json", http.MethodPost, "/domains", key, `{"hostname":`, 400, "not valid JSON"},
		{"body too large", http.MethodPost, "/domains", key, jsonBody(t, map[string]any{"hostname": "a.example", "notes": strings.Repeat("n", 70<<10)}), 413, "request body too large: at most 65536 bytes"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := state()
			r := e.call(i%2, tc.method, "/api/v1"+tc.path, tc.key, tc.body)
			if tc.wantCode == http.StatusConflict {
				// The 409 of an add names the domain the caller has.
				if want := (map[string]any{"error": tc.wantMsg, "id": id}); r.code != tc.wantCode || !reflect.DeepEqual(r.body, want) {
					t.Errorf("got %d %v, want %d %v", r.code, r.body, tc.wantCode, want)
				}
			} else {
				wantV1Error(t, r, tc.wantCode, tc.wantMsg)
			}
			if after := state(); after != before {
				t.Errorf("state after a refused request:\n got %s\nwant %s", after, before)
			}
		})
	}

	// Limits: notes and tags at their maximum are fine; characters, not
	// bytes, count.
	r := e.call(1, http.MethodPut, "/api/v1/domains/"+id, key,
		jsonBody(t, map[string]any{"notes": strings.Repeat("é", 500), "tags": json.RawMessage(tags(10, 50))}))
	if r.code != http.StatusOK {
		t.Errorf("notes and tags at the limits: got %d %v, want 200", r.code, r.body)
	}
	// Notes are free text: several lines and tabs are kept as sent.
	r = e.call(0, http.MethodPut, "/api/v1/domains/"+id, key, `{"notes":"first line\n\tsecond"}`)
	if r.code != http.StatusOK || r.body["notes"] != "first line\n\tsecond" {
		t.Errorf("notes of two lines: got %d %v, want 200 with the notes as sent", r.code, r.body)
	}

	// A record the server cannot read is a 500 that tells nothing.
	if err := e.rdb.HSet(context.Background(), "domain:"+events.TenantTag(events.TenantID("ops@example.com"))+":"+id, "port", "not-a-port").Err(); err != nil {
		t.Fatal(err)
	}
	wantV1Error(t, e.call(0, http.MethodGet, "/api/v1/domains/"+id, key, ""), http.StatusInternalServerError, "internal error")
	wantV1Error(t, e.call(1, http.MethodGet, "/api/v1/domains", key, ""), http.StatusInternalServerError, "internal error")
}

func TestDomainRateLimitAcrossReplicas(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitGeneral: 4})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range 4 {
		if r := e.call(i%2, http.MethodGet, "/api/v1/domains", key, ""); r.code != http.StatusOK {
			t.Fatalf("request %d: got %d %v, want 200", i+1, r.code, r.body)
		}
	}
	r := e.call(0, http.MethodPost, "/api/v1/domains", key, `{"hostname":"a.example"}`)
	wantV1Error(t, r, http.StatusTooManyRequests, "Rate limit exceeded. Try again in")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

// Another tenant's domain id is a 404 on every route that takes one, and
// nothing of it changes.
func TestDomainTenancy(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	id := e.createDomain(0, alice, map[string]any{"hostname": "alice.example", "notes": "mine"})
	at := e.clock.Now()
	applyScan(t, e.rdb, id, "alice.example", 443, "eu-west", at, certResult(at.Add(40*24*time.Hour), true))
	before := e.call(0, http.MethodGet, "/api/v1/domains/"+id, alice, "")

	for i, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/domains/" + id, ""},
		{http.MethodPut, "/domains/" + id, `{"notes":"bob was here"}`},
		{http.MethodDelete, "/domains/" + id, ""},
		{http.MethodGet, "/domains/" + id + "/ssl", ""},
		{http.MethodGet, "/domains/" + id + "/whois", ""},
		{http.MethodPost, "/check", `{"domain_id":"` + id + `"}`},
	} {
		wantV1Error(t, e.call(i%2, tc.method, "/api/v1"+tc.path, bob, tc.body), http.StatusNotFound, "Domain not found")
	}
	if got := ids(t, e.call(1, http.MethodGet, "/api/v1/domains", bob, "")); len(got) != 0 {
		t.Errorf("bob's list: got %v, want empty", got)
	}
	// Bob may monitor the same name: it is his own domain.
	if bobs := e.createDomain(1, bob, map[string]any{"hostname": "alice.example"}); bobs == id {
		t.Errorf("bob's alice.example: got alice's id %s", id)
	}
	if after := e.call(1, http.MethodGet, "/api/v1/domains/"+id, alice, ""); !reflect.DeepEqual(after.body, before.body) {
		t.Errorf("alice's domain after bob's attempts:\n got %v\nwant %v", after.body, before.body)
	}
}

// The KeyChest API and the v1 API manage the same domains.
func TestKeyChestAndV1ShareDomains(t *testing.T) {
	e := newKeyEnv(t, domainsConfig)
	const claimKey = "key-of-ops-0123456789"
	if r := e.call(0, http.MethodPost, "/api/v1.0/access/claim", "", jsonBody(t, map[string]string{"email": "ops@example.com", "api_key": claimKey})); r.code != http.StatusOK {
		t.Fatalf("claim: got %d %v", r.code, r.body)
	}
	key := e.bootstrapKey("ops@example.com", "read", "write")
	kcAdd := func(i int, domain string) string {
		t.Helper()
		r := e.call(i, http.MethodPost, "/api/v1.0/servers/add", "", jsonBody(t, map[string]string{"api_key": claimKey, "domain": domain}))
		if r.code != http.StatusOK {
			t.Fatalf("keychest add %s: got %d %v", domain, r.code, r.body)
		}
		return r.body["id"].(string)
	}

	kc := kcAdd(0, "kc.example")
	if r := e.call(1, http.MethodPost, "/api/v1/domains", key, `{"hostname":"kc.example"}`); r.code != http.StatusConflict ||
		!reflect.DeepEqual(r.body, map[string]any{"error": "This domain is already being monitored", "id": kc}) {
		t.Errorf("v1 add of a KeyChest domain: got %d %v, want 409 with id %s", r.code, r.body, kc)
	}
	r := e.call(1, http.MethodGet, "/api/v1/domains/"+kc, key, "")
	if r.code != http.StatusOK || r.body["hostname"] != "kc.example" || r.body["port"] != 443.0 || r.body["is_active"] != true {
		t.Errorf("keychest domain over v1: got %d %v, want kc.example:443 active", r.code, r.body)
	}

	rest := e.createDomain(0, key, map[string]any{"hostname": "rest.example", "port": 8443})
	if got := kcAdd(1, "rest.example:8443"); got != rest {
		t.Errorf("keychest add of a v1 domain: got id %s, want %s", got, rest)
	}
	if got := ids(t, e.call(0, http.MethodGet, "/api/v1/domains?sort=hostname&order=asc", key, "")); !reflect.DeepEqual(got, []string{kc, rest}) {
		t.Errorf("list: got %v, want [%s %s]", got, kc, rest)
	}
	// A domain deleted over v1 is gone for KeyChest too.
	if r := e.call(1, http.MethodDelete, "/api/v1/domains/"+kc, key, ""); r.code != http.StatusOK {
		t.Fatalf("delete: got %d %v", r.code, r.body)
	}
	if r := e.call(0, http.MethodGet, "/api/v1.0/servers/expiration/kc.example?api_key="+claimKey, "", ""); r.code != http.StatusNotFound {
		t.Errorf("keychest expiration after delete: got %d %v, want 404", r.code, r.body)
	}
	if again := kcAdd(0, "kc.example"); again == kc {
		t.Errorf("keychest re-add after delete: got the old id %s, want a new one", kc)
	}
}
