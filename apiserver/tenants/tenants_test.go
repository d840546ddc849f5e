package tenants_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/apiserver/tenants"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const pass = "tenant-delete-test-passphrase"

// fleet is one deployment's stores on a fresh Redis and ClickHouse.
type fleet struct {
	rdb  *redis.Client
	acc  *accounts.Store
	chs  *channels.Store
	ca   *clientca.Store
	mc   *managedcert.Store
	eng  *alerts.Engine
	del  *tenants.Deleter
	conn driver.Conn
}

// tenantData is what one tenant was given.
type tenantData struct {
	email, id string
	key       string
	domains   []accounts.Domain
	cert      clientca.Cert
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	ctx := context.Background()
	log := testenv.Logger(t)
	f := &fleet{rdb: testenv.Redis(t).Client(t)}
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, log); err != nil {
		t.Fatal(err)
	}
	f.conn = conn
	var err error
	if f.acc, err = accounts.New(accounts.Config{HoldClaims: true}, f.rdb, log); err != nil {
		t.Fatal(err)
	}
	if f.chs, err = channels.New(channels.Config{}, f.rdb, log); err != nil {
		t.Fatal(err)
	}
	if f.ca, err = clientca.New(clientca.Config{Passphrase: pass, PublicURL: "http://ca.example"}, f.rdb, log); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ca.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if f.mc, err = managedcert.New(managedcert.Config{Passphrase: pass,
		DNSTargets: guard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, f.rdb, log); err != nil {
		t.Fatal(err)
	}
	if f.eng, err = alerts.New(alerts.Config{}, f.rdb, log); err != nil {
		t.Fatal(err)
	}
	f.del = &tenants.Deleter{RDB: f.rdb, Accounts: f.acc, Channels: f.chs, CA: f.ca, CH: conn,
		Source: "test", Logger: log}
	return f
}

// populate gives email an account with everything a tenant can keep.
func (f *fleet) populate(t *testing.T, email string) tenantData {
	t.Helper()
	ctx := context.Background()
	id, err := f.acc.EnsureAccount(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	td := tenantData{email: email, id: id}
	k, err := f.acc.CreateKey(ctx, id, "ci", []string{"read", "write"}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	td.key = k.Key
	// A second key, revoked: its record stays under apikey:<hash> unlisted.
	k2, err := f.acc.CreateKey(ctx, id, "old", []string{"read"}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.acc.RevokeKey(ctx, id, k2.ID); err != nil {
		t.Fatal(err)
	}
	prefix := strings.Split(email, "@")[0]
	for _, h := range []string{"www." + prefix + ".example.com", "api." + prefix + ".example.com"} {
		d, _, err := f.acc.AddDomain(ctx, id, accounts.NewDomain{Host: h, Port: 443, Source: "api"})
		if err != nil {
			t.Fatal(err)
		}
		td.domains = append(td.domains, d)
		// What the projector and the alert engine would have written.
		if err := f.rdb.HSet(ctx, projector.ViewKey(d.ID), "@tenant", id, "@name", h+":443").Err(); err != nil {
			t.Fatal(err)
		}
		f.rdb.Set(ctx, projector.VersionKey(d.ID), 3, 0)
		f.rdb.HSet(ctx, projector.RegistrationIndexKey("example.com"), d.ID, time.Now().UnixMilli())
		// The alert state: in the domain's record (its fields beginning
		// with "@"), and for the second domain in its key of the layout
		// before (with the tenant, as before the short layout).
		if len(td.domains) == 1 {
			f.rdb.HSet(ctx, accounts.DomainKey(id, d.ID), "@v", 3, "@n", h+":443")
		} else {
			f.rdb.HSet(ctx, "alerts:state:"+events.TenantTag(id)+":"+d.ID, "@tenant", id, "@ver", 3)
		}
	}
	settings := alerts.DefaultSettings()
	settings.ExpiryThresholdsDays = []int{10, 5}
	if _, err := f.eng.PutSettings(ctx, id, settings); err != nil {
		t.Fatal(err)
	}
	if _, err := f.chs.Create(ctx, id, channels.ChannelInput{Type: channels.TypeEmail, Name: "ops",
		To: []string{"ops@" + prefix + ".example.com"}}); err != nil {
		t.Fatal(err)
	}
	if err := quota.Set(ctx, f.rdb, id, quota.Limits{quota.Domains: 500}); err != nil {
		t.Fatal(err)
	}
	if td.cert, err = f.ca.Create(ctx, id, clientca.CreateRequest{CommonName: "laptop." + prefix, GenerateKey: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mc.PutDNSAccount(ctx, id, managedcert.ProviderRFC2136, "lab", map[string]string{
		"RFC2136_NAMESERVER": "127.0.0.1:5353", "RFC2136_TSIG_KEY": "lab.",
		"RFC2136_TSIG_SECRET": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mc.Create(ctx, id, managedcert.CreateRequest{Domain: "tls." + prefix + ".example.com",
		DNSProvider: managedcert.ProviderRFC2136, AccountID: "lab"}); err != nil {
		t.Fatal(err)
	}
	// ClickHouse rows, as the sink would have written them.
	insert := func(q string, rows ...[]any) {
		b, err := f.conn.PrepareBatch(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if err := b.Append(r...); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	var evs, scans, audits, views [][]any
	for i := range 3 {
		d := td.domains[i%2].ID
		evs = append(evs, []any{uuid.New(), events.DomainAdded, now, id, d, "{}"})
		scans = append(scans, []any{uuid.New(), id, d, now})
		audits = append(audits, []any{uuid.New(), now, id, "create"})
		views = append(views, []any{uint64(i + 1), d, id})
	}
	insert("INSERT INTO view_snapshot_rows (snapshot_id, domain_id, tenant_id)", views...)
	insert("INSERT INTO events (event_id, name, occurred_at, tenant_id, aggregate_id, payload)", evs...)
	insert("INSERT INTO scan_results (event_id, tenant_id, domain_id, scheduled_at)", scans...)
	insert("INSERT INTO audit_log (event_id, occurred_at, tenant_id, operation)", audits...)
	return td
}

// keysNaming lists every Redis key whose name contains one of needles.
func keysNaming(t *testing.T, rdb *redis.Client, needles ...string) []string {
	t.Helper()
	var out []string
	iter := rdb.Scan(context.Background(), 0, "*", 1000).Iterator()
	for iter.Next(context.Background()) {
		for _, n := range needles {
			if strings.Contains(iter.Val(), n) {
				out = append(out, iter.Val())
				break
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func rowsOf(t *testing.T, f *fleet, table, tenant string) uint64 {
	t.Helper()
	var n uint64
	if err := f.del.CH.QueryRow(context.Background(), "SELECT count() FROM "+table+" WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitMutations(t *testing.T, f *fleet) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		done, err := schema.MutationsDone(context.Background(), f.del.CH)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("clickhouse mutations not done after 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestDeleteTenant(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t)
	leaver := f.populate(t, "leaver@example.org")
	stayer := f.populate(t, "stayer@example.org")

	// A projector that reads the leaver's stream: the views are dropped
	// only once it has read the removals (a "sink" group the stream does
	// not have is not waited for).
	stream := events.EventStream(leaver.id)
	if err := f.rdb.XGroupCreate(ctx, stream, "projector", "$").Err(); err != nil {
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer close(consumed)
		for cctx.Err() == nil {
			res, err := f.rdb.XReadGroup(cctx, &redis.XReadGroupArgs{Group: "projector", Consumer: "p1",
				Streams: []string{stream, ">"}, Count: 100, Block: 100 * time.Millisecond}).Result()
			if err != nil {
				continue
			}
			for _, st := range res {
				for _, m := range st.Messages {
					// What the projector's domain.removed does: a tombstone,
					// which names the tenant as the view did.
					if strings.Contains(fmt.Sprint(m.Values["payload"]), events.DomainRemoved) {
						for _, d := range leaver.domains {
							f.rdb.HSet(cctx, projector.ViewKey(d.ID), "@removed", time.Now().UnixMilli(), "@tenant", leaver.id)
						}
					}
					f.rdb.XAck(cctx, stream, "projector", m.ID)
				}
			}
		}
	}()
	// A domain removed on its own just before the tenant leaves, whose
	// removal the alert engine has not evaluated: its record is gone but
	// for its alert state, which the tenant's deletion removes too.
	gone, _, err := f.acc.AddDomain(ctx, leaver.id, accounts.NewDomain{Host: "gone.leaver.example.org", Port: 443, Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	f.rdb.HSet(ctx, accounts.DomainKey(leaver.id, gone.ID), "@v", 2, "@n", "gone.leaver.example.org:443", "@l", "0123456789abcdef=192.0.2.1")
	if _, err := f.acc.RemoveDomain(ctx, leaver.id, gone.ID); err != nil {
		t.Fatal(err)
	}
	if left := f.rdb.HGetAll(ctx, accounts.DomainKey(leaver.id, gone.ID)).Val(); left["@l"] == "" || left[accounts.RemovedTenantField] != leaver.id || accounts.RecordExists(left) {
		t.Fatalf("what the removal left: %v, want the alert state naming the tenant", left)
	}
	leaver.domains = append(leaver.domains, gone)
	// A claimed key still held, and a server it added: revoking the key
	// removes the server, which the report counts with the domains.
	claimed, err := f.acc.ClaimNew(ctx, leaver.email)
	if err != nil {
		t.Fatal(err)
	}
	held, err := f.acc.Authenticate(ctx, claimed)
	if err != nil || !held.Held {
		t.Fatalf("claimed key: %+v %v, want held", held, err)
	}
	heldDomain, _, err := f.acc.AddDomain(ctx, leaver.id, accounts.NewDomain{Host: "held.leaver.example.org", Port: 443, HeldBy: held.KeyID})
	if err != nil {
		t.Fatal(err)
	}
	leaver.domains = append(leaver.domains, heldDomain)

	f.del.Groups, f.del.Wait = []string{"projector", "sink"}, 20*time.Second
	rep, err := f.del.Delete(ctx, leaver.email)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	<-consumed
	if !rep.CaughtUp {
		t.Error("the deletion did not see the projector catch up")
	}
	t.Logf("report: %v, clickhouse %v", rep.Removed, rep.ClickHouseTables)
	want := map[string]int64{
		"domains": 3, "api_keys": 3, "account": 1, "channels": 1, "quota_overrides": 1,
		"alert_settings": 1, "alert_states": 3, "domain_views": 8, "dns_accounts": 1, "managed_certificates": 1, "managed_certificate_keys": 3,
		"client_certificates_revoked": 1, "client_certificate_keys": 1, "client_certificate_lists": 1,
	}
	for k, v := range want {
		if rep.Removed[k] != v {
			t.Errorf("removed %s = %d, want %d (report %v)", k, rep.Removed[k], v, rep.Removed)
		}
	}
	if !rep.Existed || rep.EventID == "" || !reflect.DeepEqual(rep.ClickHouseTables, schema.TenantTables) {
		t.Errorf("report %+v", rep)
	}

	// No key names the tenant or its domains.
	needles := []string{leaver.id}
	for _, d := range leaver.domains {
		needles = append(needles, d.ID)
	}
	if left := keysNaming(t, f.rdb, needles...); len(left) > 0 {
		t.Errorf("keys of the deleted tenant left: %v", left)
	}
	// Its key no longer authenticates; the other's does.
	if _, err := f.acc.Authenticate(ctx, leaver.key); err == nil {
		t.Error("the deleted tenant's key still authenticates")
	}
	if _, err := f.acc.AuthenticateBearer(ctx, leaver.key); err == nil {
		t.Error("the deleted tenant's key still authenticates as a bearer token")
	}
	p, err := f.acc.AuthenticateBearer(ctx, stayer.key)
	if err != nil || p.TenantID != stayer.id {
		t.Fatalf("the other tenant's key: %+v, %v", p, err)
	}
	// Its client certificate is revoked (OCSP answers it); the other's is good.
	st, err := f.ca.Status(ctx, leaver.cert.Serial)
	if err != nil || st.Status != clientca.StatusRevoked {
		t.Errorf("deleted tenant's certificate: %+v, %v", st, err)
	}
	if st, err := f.ca.Status(ctx, stayer.cert.Serial); err != nil || st.Status != clientca.StatusGood {
		t.Errorf("other tenant's certificate: %+v, %v", st, err)
	}
	revs, err := f.ca.Revocations(ctx)
	if err != nil || len(revs) != 1 {
		t.Errorf("revocation list: %v, %v", revs, err)
	}
	// The deletion is recorded on the tenant's stream.
	last, err := f.rdb.XRevRangeN(ctx, events.EventStream(leaver.id), "+", "-", 1).Result()
	if err != nil || len(last) != 1 || !strings.Contains(fmt.Sprint(last[0].Values["payload"]), `"name":"`+events.TenantDeleted+`"`) {
		t.Errorf("last event of the tenant's stream: %v, %v", last, err)
	}

	// The other tenant is intact and still works.
	ds, err := f.acc.ListDomains(ctx, stayer.id)
	if err != nil || len(ds) != 2 {
		t.Errorf("other tenant's domains: %v, %v", ds, err)
	}
	if chs, err := f.chs.List(ctx, stayer.id); err != nil || len(chs) != 1 {
		t.Errorf("other tenant's channels: %v, %v", chs, err)
	}
	if o, err := quota.Overrides(ctx, f.rdb, stayer.id); err != nil || o[quota.Domains] != 500 {
		t.Errorf("other tenant's quota: %v, %v", o, err)
	}
	if s, err := f.eng.Settings(ctx, stayer.id); err != nil || len(s.ExpiryThresholdsDays) != 2 {
		t.Errorf("other tenant's settings: %v, %v", s, err)
	}
	if cs, _, err := f.mc.List(ctx, stayer.id, 0, 10); err != nil || len(cs) != 1 {
		t.Errorf("other tenant's managed certificates: %v, %v", cs, err)
	}
	if as, err := f.mc.ListDNSAccounts(ctx, stayer.id); err != nil || len(as) != 1 {
		t.Errorf("other tenant's dns accounts: %v, %v", as, err)
	}
	if _, _, err := f.acc.AddDomain(ctx, stayer.id, accounts.NewDomain{Host: "new.stayer.example.com", Port: 443, Source: "api"}); err != nil {
		t.Errorf("other tenant adds a domain: %v", err)
	}
	if n := len(keysNaming(t, f.rdb, stayer.id)); n == 0 {
		t.Error("no key names the other tenant")
	}

	// ClickHouse: the rows go when the mutations are done.
	waitMutations(t, f)
	for _, table := range schema.TenantTables {
		if n := rowsOf(t, f, table, leaver.id); n != 0 {
			t.Errorf("%s keeps %d rows of the deleted tenant", table, n)
		}
		if slices.Contains(schema.RollupTables, table) {
			// Rolled up by the hour from scan_results' rows.
			if n := rowsOf(t, f, table, stayer.id); table == "scan_outcomes_hourly" && n == 0 {
				t.Errorf("%s has no rows of the other tenant", table)
			}
			continue
		}
		if n := rowsOf(t, f, table, stayer.id); n != 3 {
			t.Errorf("%s has %d rows of the other tenant, want 3", table, n)
		}
	}

	// The sink writes tenant.deleted.v1 later; a second run keeps it and
	// removes nothing.
	ev := events.Envelope{EventID: uuid.MustParse(rep.EventID), Name: events.TenantDeleted,
		OccurredAt: time.Now().UTC(), TenantID: leaver.id, AggregateID: leaver.id, Payload: []byte(`{}`)}
	if err := schema.InsertEvents(ctx, f.del.CH, []schema.StoredEvent{{Event: ev, InsertedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	f.del.Groups = nil // the test's projector is gone
	rep2, err := f.del.Delete(ctx, leaver.email)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if rep2.Existed || rep2.Total() != 0 || rep2.EventID != "" {
		t.Errorf("second run: %+v", rep2)
	}
	waitMutations(t, f)
	if n := rowsOf(t, f, "events", leaver.id); n != 1 {
		t.Errorf("events keeps %d rows of the deleted tenant, want its tenant.deleted.v1", n)
	}

	// An email never seen is an error.
	if _, err := f.del.Delete(ctx, "nobody@example.org"); !errors.Is(err, tenants.ErrUnknownAccount) {
		t.Errorf("unknown email: %v", err)
	}
}
