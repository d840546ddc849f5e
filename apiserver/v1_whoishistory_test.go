package apiserver

import (
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

type whoisHistoryPage struct {
	DomainID   string                 `json:"domain_id"`
	Domain     *string                `json:"domain"`
	Data       []v1.WhoisHistoryEntry `json:"data"`
	Pagination struct {
		Page, PerPage, Total, TotalPages int
	} `json:"pagination"`
}

// TestWhoisHistory: GET /domains/{id}/whois/history reads every lookup of
// the registrable domain from ClickHouse, newest first and paged, and
// tells a renewal and a registrar change, also across a page boundary
// and past a failed lookup; another tenant's id is 404, a key without
// read scope 403, and an API server without ClickHouse 503.
func TestWhoisHistory(t *testing.T) {
	ctx := context.Background()
	h := newHistoryEnv(t)
	conn, rdb, srv, api, alice, bob := h.conn, h.rdb, h.srv, h.api, h.alice, h.bob
	id := addCheckDomain(t, srv, alice.id, "www.gandi-example.co.uk", 443)

	exp1, exp2 := now.Add(20*24*time.Hour).Truncate(time.Second), now.Add(385*24*time.Hour).Truncate(time.Second)
	type lookup struct {
		domain, status, registrar string
		ago                       time.Duration
		exp                       *time.Time
	}
	lookups := []lookup{
		{"gandi-example.co.uk", events.RegistrationOK, "Lab Registrar", 4 * time.Hour, &exp1},
		{"gandi-example.co.uk", events.RegistrationError, "", 3 * time.Hour, nil},
		{"gandi-example.co.uk", events.RegistrationOK, "Lab Registrar", 2 * time.Hour, &exp2},    // renewed
		{"gandi-example.co.uk", events.RegistrationOK, "Other Registrar", 1 * time.Hour, &exp2},  // transferred
		{"other-example.co.uk", events.RegistrationOK, "Lab Registrar", 30 * time.Minute, &exp1}, // not this domain's
	}
	var rows []schema.RegistrationRow
	ids := make([]string, len(lookups))
	for i, l := range lookups {
		e := lookupOf(t, l.domain, l.status, now.Add(-l.ago), l.exp)
		r, err := schema.RegistrationRowOf(e, now)
		if err != nil {
			t.Fatal(err)
		}
		if l.registrar != "" {
			r.Registrar = l.registrar
		}
		ids[i] = e.EventID.String()
		rows = append(rows, r, r) // delivered twice: listed once
	}
	if err := schema.InsertRegistrations(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}

	type want struct {
		id      string
		status  string
		changes []string
	}
	tests := []struct {
		name  string
		query string
		want  []want
		total int
	}{
		{"all", "", []want{
			{ids[3], "ok", []string{v1.ChangeRegistrar}},
			{ids[2], "ok", []string{v1.ChangeExpiryExtended}},
			{ids[1], "error", []string{}},
			{ids[0], "ok", []string{}},
		}, 4},
		// The newest alone: compared with the answer on the next page.
		{"page 1 of 1 each", "?per_page=1", []want{{ids[3], "ok", []string{v1.ChangeRegistrar}}}, 4},
		// The renewal alone: compared past nothing on its page.
		{"page 2 of 1 each", "?per_page=1&page=2", []want{{ids[2], "ok", []string{v1.ChangeExpiryExtended}}}, 4},
		{"second page of 2", "?per_page=2&page=2", []want{{ids[1], "error", []string{}}, {ids[0], "ok", []string{}}}, 4},
		{"past the end", "?per_page=2&page=3", nil, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p whoisHistoryPage
			if code := api.call(http.MethodGet, "/domains/"+id+"/whois/history"+tc.query, alice.read, "", &p); code != http.StatusOK {
				t.Fatalf("got HTTP %d, want 200", code)
			}
			if p.DomainID != id || p.Domain == nil || *p.Domain != "gandi-example.co.uk" || p.Pagination.Total != tc.total {
				t.Errorf("got domain_id %s domain %v total %d, want %s gandi-example.co.uk %d", p.DomainID, p.Domain, p.Pagination.Total, id, tc.total)
			}
			var got []want
			for _, e := range p.Data {
				got = append(got, want{e.ID, e.Status, e.Changes})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("entries: got %v, want %v", got, tc.want)
			}
		})
	}
	var p whoisHistoryPage
	api.call(http.MethodGet, "/domains/"+id+"/whois/history", alice.read, "", &p)
	if e := p.Data[1]; e.ExpiryDate == nil || !e.ExpiryDate.Equal(exp2) || orNil(e.Registrar) != "Lab Registrar" || orNil(e.Source) != "rdap" ||
		!e.LookedUpAt.Equal(now.Add(-2*time.Hour).Truncate(time.Millisecond).Truncate(time.Second)) || !reflect.DeepEqual(e.Statuses, []string{"client transfer prohibited"}) {
		t.Errorf("renewal entry: got %+v, want expiry %v, Lab Registrar, rdap, looked up 2h ago", e, exp2)
	}

	var e struct {
		Error string `json:"error"`
	}
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois/history", bob.read, "", &e); code != http.StatusNotFound {
		t.Errorf("bob reading alice's history: got HTTP %d %q, want 404", code, e.Error)
	}
	wk, err := srv.accounts.CreateKey(ctx, alice.id, "write only", []string{accounts.ScopeWrite}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois/history", wk.Key, "", &e); code != http.StatusForbidden {
		t.Errorf("write-only key: got HTTP %d %q, want 403", code, e.Error)
	}
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois/history?per_page=101", alice.read, "", &e); code != http.StatusBadRequest {
		t.Errorf("per_page=101: got HTTP %d %q, want 400", code, e.Error)
	}

	// Without ClickHouse: 503 with a clear error, the rest still served.
	srv2, api2 := newCheckReplica(t, rdb, Config{Now: func() time.Time { return now }})
	_ = srv2
	if code := api2.call(http.MethodGet, "/domains/"+id+"/whois/history", alice.read, "", &e); code != http.StatusServiceUnavailable || e.Error == "" {
		t.Errorf("no clickhouse: got HTTP %d %q, want 503 with an error", code, e.Error)
	}
}

// historyEnv is an API server reading ClickHouse (migrated) with two
// tenants, alice and bob, for the history routes' tests.
type historyEnv struct {
	conn       driver.Conn
	rdb        *redis.Client
	srv        *Server
	api        checkClient
	alice, bob checkTenant
}

func newHistoryEnv(t *testing.T) historyEnv {
	t.Helper()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(context.Background(), conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.Redis(t).Client(t)
	cfg := Config{Now: func() time.Time { return now }}
	cfg.Audit.Conn = conn
	srv, api := newCheckReplica(t, rdb, cfg)
	return historyEnv{conn: conn, rdb: rdb, srv: srv, api: api,
		alice: newCheckTenant(t, srv, "alice@example.com"), bob: newCheckTenant(t, srv, "bob@example.com")}
}
