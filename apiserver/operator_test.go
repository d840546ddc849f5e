package apiserver

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/operator"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// operatorToken writes an operator token file and returns its path and
// the token.
func operatorToken(t *testing.T) (string, string) {
	t.Helper()
	tok := "op-" + strings.Repeat("0123456789", 4)
	path := filepath.Join(t.TempDir(), "operator-token")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, tok
}

// TestOperatorDeleteTenant: DELETE /api/operator/tenants/{email} needs the
// operator token (not a tenant's key), deletes what the CLI deletes and
// answers its report, records tenant.deleted.v1 with the API as source,
// answers a second call with existed false, an unknown account 404, a bad
// email 400, is rate limited per address, and is not served without a
// token.
func TestOperatorDeleteTenant(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.Redis(t).Client(t)
	path, tok := operatorToken(t)
	const rate = 9
	cfg := Config{Operator: OperatorConfig{TokenFile: path, RateLimit: rate}}
	cfg.Audit.Conn = conn
	srv, api := newCheckReplica(t, rdb, cfg)
	op := checkClient{t: t, base: strings.TrimSuffix(api.base, "/api/v1") + "/api/operator"}
	alice, bob := newCheckTenant(t, srv, "alice@example.com"), newCheckTenant(t, srv, "bob@example.com")
	addCheckDomain(t, srv, alice.id, "www.example.com", 443)
	addCheckDomain(t, srv, bob.id, "www.example.com", 443)
	calls := 0
	del := func(email, key string, out any) int {
		t.Helper()
		calls++
		return op.call(http.MethodDelete, "/tenants/"+url.PathEscape(email), key, "", out)
	}

	var e struct {
		Error string `json:"error"`
	}
	for _, key := range []string{"", tok + "x", tok[:len(tok)-1], alice.write} {
		if code := del("alice@example.com", key, &e); code != http.StatusUnauthorized {
			t.Errorf("token %q: got HTTP %d %q, want 401", key, code, e.Error)
		}
	}
	if code := api.call(http.MethodGet, "/domains", alice.read, "", &e); code != http.StatusOK {
		t.Fatalf("alice before: got HTTP %d, want 200", code)
	}

	var rep operator.Report
	if code := del("alice@example.com", tok, &rep); code != http.StatusOK {
		t.Fatalf("delete alice: got HTTP %d %+v, want 200", code, rep)
	}
	if !rep.Existed || rep.TenantID != alice.id || rep.EventID == nil || !rep.CaughtUp ||
		rep.Removed["domains"] != 1 || rep.Removed["api_keys"] != 2 || rep.Removed["account"] != 1 ||
		!reflect.DeepEqual(rep.ClickHouseTables, schema.TenantTables) {
		t.Errorf("report: got %+v, want alice's domain, 2 keys and account, every tenant table", rep)
	}
	if code := api.call(http.MethodGet, "/domains", alice.read, "", &e); code != http.StatusUnauthorized {
		t.Errorf("alice's key after: got HTTP %d, want 401", code)
	}
	if code := api.call(http.MethodGet, "/domains", bob.read, "", &e); code != http.StatusOK {
		t.Errorf("bob's key after: got HTTP %d, want 200", code)
	}
	// The audit record is the CLI's, with the API as its source.
	evs, err := events.ReadAllEvents(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	var recorded []events.TenantDeletedV1
	for _, ev := range evs {
		if ev.Name == events.TenantDeleted {
			// What the sink would write: a later run finds it there.
			if err := schema.InsertEvents(ctx, conn, []schema.StoredEvent{{Event: ev, InsertedAt: time.Now()}}); err != nil {
				t.Fatal(err)
			}
			var p events.TenantDeletedV1
			if err := ev.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if ev.TenantID != alice.id || ev.EventID.String() != *rep.EventID {
				t.Errorf("tenant.deleted.v1: got tenant %s event %s, want %s %s", ev.TenantID, ev.EventID, alice.id, *rep.EventID)
			}
			recorded = append(recorded, p)
		}
	}
	if len(recorded) != 1 || recorded[0].Source != operator.Source || !reflect.DeepEqual(recorded[0].Removed, rep.Removed) {
		t.Errorf("tenant.deleted.v1: got %+v, want one with source %s and the report's counts %v", recorded, operator.Source, rep.Removed)
	}

	var again operator.Report
	if code := del("alice@example.com", tok, &again); code != http.StatusOK || again.Existed || again.EventID != nil {
		t.Errorf("second delete: got HTTP %d %+v, want 200, existed false, no record", code, again)
	}
	if code := del("nobody@example.com", tok, &e); code != http.StatusNotFound {
		t.Errorf("unknown account: got HTTP %d %q, want 404", code, e.Error)
	}
	if code := del("not an email", tok, &e); code != http.StatusBadRequest || e.Error == "" {
		t.Errorf("bad email: got HTTP %d %q, want 400", code, e.Error)
	}
	// Rate limited per address, before the token is checked.
	for calls < rate {
		del("nobody@example.com", "", &e)
	}
	if code := del("bob@example.com", tok, &e); code != http.StatusTooManyRequests {
		t.Errorf("request %d of a limit of %d a minute: got HTTP %d %q, want 429", calls, rate, code, e.Error)
	}
	if code := api.call(http.MethodGet, "/domains", bob.read, "", &e); code != http.StatusOK {
		t.Errorf("bob after the limited request: got HTTP %d, want 200", code)
	}

	// Without a token the route is not served.
	_, plain := newCheckReplica(t, rdb, Config{})
	plainOp := checkClient{t: t, base: strings.TrimSuffix(plain.base, "/api/v1") + "/api/operator"}
	if code := plainOp.call(http.MethodDelete, "/tenants/bob@example.com", tok, "", &e); code != http.StatusNotFound {
		t.Errorf("no operator token configured: got HTTP %d, want 404", code)
	}
}

// TestOperatorToken: a short or missing token file stops the server.
func TestOperatorToken(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{short, filepath.Join(t.TempDir(), "missing")} {
		if _, err := New(Config{Operator: OperatorConfig{TokenFile: path}}, testenv.Redis(t).Client(t), testenv.Logger(t)); err == nil {
			t.Errorf("token file %s: got no error", path)
		}
	}
}
