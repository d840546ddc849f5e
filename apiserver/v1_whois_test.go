package apiserver

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// lookupOf is a registration.looked_up.v1 of domain, as the lookup worker
// publishes it: status at at, with exp as expiry when the status has one.
func lookupOf(t *testing.T, domain, status string, at time.Time, exp *time.Time) events.Envelope {
	t.Helper()
	r := events.RegistrationV1{Domain: domain, Status: status, LookedUpAt: at.UTC().Truncate(time.Millisecond)}
	switch status {
	case events.RegistrationOK, events.RegistrationNoExpiry:
		created, updated := at.AddDate(-5, 0, 0).UTC().Truncate(time.Second), at.AddDate(0, -1, 0).UTC().Truncate(time.Second)
		r.Source, r.Server, r.Registrar = "rdap", "https://rdap.lab.example/domain/"+domain, "Lab Registrar"
		r.CreatedAt, r.UpdatedAt, r.ExpiresAt = &created, &updated, exp
		r.Statuses = []string{"client transfer prohibited"}
		r.NameServers = []string{"ns1." + domain, "ns2." + domain}
	case events.RegistrationError:
		r.Detail = "timeout"
	}
	e, err := events.New(events.RegistrationLookedUp, "", domain, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// publishLookup plays the lookup worker: it publishes the lookup on its
// domain's partition of the event stream and applies it to the views (as
// a running projector would; applying twice is harmless), so it shows when
// publishLookup returns.
func publishLookup(t *testing.T, rdb *redis.Client, domain, status string, at time.Time, exp *time.Time) events.Envelope {
	t.Helper()
	ev := lookupOf(t, domain, status, at, exp)
	pub, err := events.NewPublisher(rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(events.EventStream(domain), ev); err != nil {
		t.Fatal(err)
	}
	if err := applyEvent(context.Background(), rdb, ev); err != nil {
		t.Fatalf("apply lookup: %v", err)
	}
	return ev
}

// TestWhoisDaysRemaining: whois_days_remaining and whois_status of every
// case, the sort with nulls last and the whois_status filter.
func TestWhoisDaysRemaining(t *testing.T) {
	f := newListFixture(t)
	at := f.e.clock.Now()
	days := func(n int) *time.Time { d := at.Add(time.Duration(n)*24*time.Hour + time.Hour); return &d }
	lookups := []struct {
		domain, status string
		exp            *time.Time
	}{
		{"shop.example", events.RegistrationOK, days(100)}, // valid.shop and badchain.shop share it
		{"warn.example", events.RegistrationOK, days(10)},
		{"warn.example", events.RegistrationError, nil}, // a later failure keeps the 10 days
		{"crit.example", events.RegistrationNoExpiry, nil},
		{"expired.example", events.RegistrationOK, days(-3)},
		{"down.example", events.RegistrationNotFound, nil},
		// never.example: never looked up.
	}
	for i, l := range lookups {
		publishLookup(t, f.e.rdb, l.domain, l.status, at.Add(time.Duration(i-10)*time.Minute), l.exp)
	}
	want := map[string][2]any{ // whois_days_remaining, whois_status
		"valid.shop.example":    {100.0, "valid"},
		"badchain.shop.example": {100.0, "valid"},
		"warn.example":          {10.0, "warning"},
		"crit.example":          {nil, "no-expiry"},
		"expired.example":       {-3.0, "expired"},
		"down.example":          {nil, "not-found"},
		"never.example":         {nil, "pending"},
	}
	r := f.list(0, "?per_page=100")
	for _, d := range r.body["data"].([]any) {
		m := d.(map[string]any)
		h := m["hostname"].(string)
		if got := [2]any{m["whois_days_remaining"], m["whois_status"]}; got != want[h] {
			t.Errorf("%s: got whois_days_remaining, whois_status %v, want %v", h, got, want[h])
		}
	}
	// GET /domains/{id} says the same.
	g := f.e.call(1, http.MethodGet, "/api/v1/domains/"+f.id["warn.example"], f.key, "")
	if got := [2]any{g.body["whois_days_remaining"], g.body["whois_status"]}; got != want["warn.example"] {
		t.Errorf("get warn.example: got %v, want %v", got, want["warn.example"])
	}

	nulls := []string{"~crit.example", "~down.example", "~never.example"}
	tests := []struct {
		query string
		want  []string
	}{
		{"?sort=whois_days_remaining&order=asc", append([]string{"expired.example", "warn.example", "~badchain.shop.example", "~valid.shop.example", ""}, nulls...)},
		{"?sort=whois_days_remaining&order=desc", append([]string{"^badchain.shop.example", "^valid.shop.example", ""}, append([]string{"warn.example", "expired.example"}, nulls...)...)},
		{"?whois_status=expired", []string{"expired.example"}},
		{"?whois_status=pending", []string{"never.example"}},
		{"?whois_status=no-expiry", []string{"crit.example"}},
		{"?whois_status=valid&sort=hostname&order=asc", []string{"badchain.shop.example", "valid.shop.example"}},
		{"?whois_status=valid&status=error", []string{"badchain.shop.example"}},
		{"?whois_status=all&sort=hostname&order=asc&search=shop", []string{"badchain.shop.example", "valid.shop.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			// Ties are by id: "~" names in one group sort among themselves
			// (descending for "^").
			got := ids(t, f.list(1, tc.query))
			if w := f.idsGrouped(tc.want); !reflect.DeepEqual(got, w) {
				t.Errorf("got %v, want %v (%v)", got, w, tc.want)
			}
		})
	}
	wantV1Error(t, f.list(0, "?whois_status=soon"), http.StatusBadRequest,
		`whois_status must be one of all, valid, warning, critical, expired, no-expiry, not-found, rate-limited, error, pending, not-registrable, got "soon"`)
}

// idsGrouped is ids for lists where "~" names tie among the run of "~"
// names around them (ties go by id), wherever the run stands; "" ends a
// run.
func (f *listFixture) idsGrouped(hosts []string) []string {
	out := []string{}
	var run []string
	down := false
	flush := func() {
		slices.Sort(run)
		if down {
			slices.Reverse(run)
		}
		out = append(out, run...)
		run, down = nil, false
	}
	for _, h := range hosts {
		if h == "" {
			flush()
			continue
		}
		if h[0] == '~' || h[0] == '^' {
			// "^": a tie in a descending sort, which is the exact reverse
			// of the ascending one: by id, descending.
			down = h[0] == '^'
			run = append(run, f.id[h[1:]])
			continue
		}
		flush()
		out = append(out, f.id[h])
	}
	flush()
	return out
}

// TestWhoisCheck: GET /domains/{id}/whois against SSLTrackr's documented
// shape, field by field, with certfleet's additions; a failure after an
// answer; no expiry; and tenant isolation.
func TestWhoisCheck(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	srv, api := newCheckReplica(t, rdb, Config{Now: func() time.Time { return now }})
	alice := newCheckTenant(t, srv, "alice@example.com")
	bob := newCheckTenant(t, srv, "bob@example.com")
	id := addCheckDomain(t, srv, alice.id, "www.gandi-example.co.uk", 443)
	de := addCheckDomain(t, srv, alice.id, "shop.example.de", 443)
	ip := addCheckDomain(t, srv, alice.id, "192.0.2.10", 443)

	exp := now.Add(320*24*time.Hour + 5*time.Hour)
	answer := publishLookup(t, rdb, "gandi-example.co.uk", events.RegistrationOK, now.Add(-2*time.Hour), &exp)
	failedAt := now.Add(-time.Hour)
	publishLookup(t, rdb, "gandi-example.co.uk", events.RegistrationError, failedAt, nil)

	var w v1.WhoisCheck
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois", alice.read, "", &w); code != http.StatusOK {
		t.Fatalf("whois: got HTTP %d, want 200", code)
	}
	ans := lookupOf(t, "gandi-example.co.uk", events.RegistrationOK, now.Add(-2*time.Hour), &exp)
	var r events.RegistrationV1
	if err := ans.Decode(&r); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		// SSLTrackr's fields.
		{"id", orNil(w.ID), answer.EventID.String()},
		{"domain_id", w.DomainID, id},
		{"registrar", orNil(w.Registrar), "Lab Registrar"},
		{"created_date", w.CreatedDate.Equal(*r.CreatedAt), true},
		{"expiry_date", w.ExpiryDate.Equal(exp), true},
		{"days_remaining", *w.DaysRemaining, 320},
		{"dnssec", w.DNSSEC == nil, true},
		{"nameservers", w.Nameservers, []string{"ns1.gandi-example.co.uk", "ns2.gandi-example.co.uk"}},
		{"checked_at", w.CheckedAt.Equal(now.Add(-2 * time.Hour)), true},
		// certfleet's.
		{"hostname", w.Hostname, "www.gandi-example.co.uk"},
		{"domain", orNil(w.Domain), "gandi-example.co.uk"},
		{"updated_date", w.UpdatedDate.Equal(*r.UpdatedAt), true},
		{"statuses", w.Statuses, []string{"client transfer prohibited"}},
		{"source", orNil(w.Source), "rdap"},
		{"server", orNil(w.Server), "https://rdap.lab.example/domain/gandi-example.co.uk"},
		{"status", w.Status, "valid"},
		{"looked_up_at", w.LookedUpAt.Equal(failedAt), true},
		{"lookup_status", orNil(w.LookupStatus), "error"},
		{"lookup_detail", orNil(w.LookupDetail), "timeout"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}

	// .de publishes no expiry: null with the reason, never a number.
	publishLookup(t, rdb, "example.de", events.RegistrationNoExpiry, now.Add(-time.Hour), nil)
	w = v1.WhoisCheck{}
	if code := api.call(http.MethodGet, "/domains/"+de+"/whois", alice.read, "", &w); code != http.StatusOK ||
		w.Status != "no-expiry" || w.DaysRemaining != nil || w.ExpiryDate != nil || orNil(w.Registrar) != "Lab Registrar" {
		t.Errorf(".de: got HTTP %d status %q days %v expiry %v registrar %s, want 200 no-expiry, nulls, Lab Registrar",
			code, w.Status, w.DaysRemaining, w.ExpiryDate, orNil(w.Registrar))
	}
	// An IP address has no registration.
	w = v1.WhoisCheck{}
	if code := api.call(http.MethodGet, "/domains/"+ip+"/whois", alice.read, "", &w); code != http.StatusOK || w.Status != "not-registrable" || w.Domain != nil {
		t.Errorf("ip: got HTTP %d status %q domain %v, want 200 not-registrable null", code, w.Status, w.Domain)
	}

	// Bob monitors a host under the same registrable domain: he reads the
	// registration through his own domain, never through alice's.
	bobs := addCheckDomain(t, srv, bob.id, "gandi-example.co.uk", 443)
	var e struct {
		Error string `json:"error"`
	}
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois", bob.read, "", &e); code != http.StatusNotFound || e.Error != "Domain not found" {
		t.Errorf("bob reading alice's whois: got HTTP %d %q, want 404 Domain not found", code, e.Error)
	}
	w = v1.WhoisCheck{}
	if code := api.call(http.MethodGet, "/domains/"+bobs+"/whois", bob.read, "", &w); code != http.StatusOK || w.DomainID != bobs || *w.DaysRemaining != 320 {
		t.Errorf("bob's own: got HTTP %d domain %s days %v, want 200 %s 320", code, w.DomainID, w.DaysRemaining, bobs)
	}
}

// TestManualCheckWhois: POST /check answers a registration looked up
// within the hour as stored, and otherwise waits for a fresh lookup (the
// test plays the agent and the lookup worker), or times out saying so.
func TestManualCheckWhois(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	srv, api := newCheckReplica(t, rdb, Config{CheckTimeout: 10 * time.Second, RateLimitCheck: 100})
	_, short := newCheckReplica(t, rdb, Config{CheckTimeout: 1500 * time.Millisecond, RateLimitCheck: 100})
	alice := newCheckTenant(t, srv, "alice@example.com")
	fresh := addCheckDomain(t, srv, alice.id, "www.fresh.example", 443)
	stale := addCheckDomain(t, srv, alice.id, "www.stale.example", 443)
	never := addCheckDomain(t, srv, alice.id, "www.never.example", 443)
	exp := time.Now().AddDate(1, 0, 0)
	stored := publishLookup(t, rdb, "fresh.example", events.RegistrationOK, time.Now().Add(-10*time.Minute), &exp)
	publishLookup(t, rdb, "stale.example", events.RegistrationOK, time.Now().Add(-2*time.Hour), &exp)

	// check sends POST /check for id on c and, once the request is on the
	// stream, plays the agent (a scan) and, when lookup, the worker.
	check := func(c checkClient, id, host, reg string, lookup bool) (int, checkAnswer, events.Envelope) {
		t.Helper()
		type answer struct {
			code int
			a    checkAnswer
		}
		done := make(chan answer, 1)
		go func() {
			var a checkAnswer
			code := c.call(http.MethodPost, "/check", alice.write, `{"domain_id":"`+id+`"}`, &a)
			done <- answer{code, a}
		}()
		waitCheckRequested(t, rdb, alice.id, id)
		res := certResult(time.Now().AddDate(0, 0, 60), true)
		if err := applyEvent(ctx, rdb, scanEventOf(t, id, host, "eu", time.Now(), res)); err != nil {
			t.Fatal(err)
		}
		var ev events.Envelope
		if lookup {
			ev = publishLookup(t, rdb, reg, events.RegistrationOK, time.Now(), &exp)
		}
		a := <-done
		return a.code, a.a, ev
	}

	code, a, _ := check(api, fresh, "www.fresh.example", "fresh.example", false)
	if code != http.StatusOK || a.Whois == nil || orNil(a.Whois.ID) != stored.EventID.String() || a.WhoisPending {
		t.Errorf("fresh: got HTTP %d %q whois %+v, want 200 with the stored lookup %s", code, a.Error, a.Whois, stored.EventID)
	}
	code, a, ev := check(api, stale, "www.stale.example", "stale.example", true)
	if code != http.StatusOK || a.Whois == nil || orNil(a.Whois.ID) != ev.EventID.String() || a.Whois.DaysRemaining == nil {
		t.Errorf("stale: got HTTP %d %q whois %+v, want 200 with the fresh lookup %s", code, a.Error, a.Whois, ev.EventID)
	}
	code, a, ev = check(api, never, "www.never.example", "never.example", true)
	if code != http.StatusOK || a.Whois == nil || orNil(a.Whois.ID) != ev.EventID.String() || a.Whois.Status != "valid" {
		t.Errorf("never looked up: got HTTP %d %q whois %+v, want 200 with the fresh lookup %s", code, a.Error, a.Whois, ev.EventID)
	}
	// A stale registration whose lookup does not come in time.
	never2 := addCheckDomain(t, srv, alice.id, "api.stale2.example", 443)
	publishLookup(t, rdb, "stale2.example", events.RegistrationOK, time.Now().Add(-3*time.Hour), &exp)
	code, a, _ = check(short, never2, "api.stale2.example", "stale2.example", false)
	if code != http.StatusGatewayTimeout || a.Error != "Timed out waiting for a fresh registration lookup within 1.5s" ||
		!a.WhoisPending || a.SSL == nil || a.Whois == nil || a.Whois.Status != "valid" {
		t.Errorf("no lookup comes: got HTTP %d %q whois_pending %v ssl %v whois %+v, want 504 saying so, with the stored whois and the scan",
			code, a.Error, a.WhoisPending, a.SSL != nil, a.Whois)
	}
}

// waitCheckRequested waits until the check request of domainID is on its
// tenant's event stream.
func waitCheckRequested(t *testing.T, rdb *redis.Client, tenant, domainID string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := events.ReadAll(context.Background(), rdb, events.EventStream(tenant))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Name == events.DomainCheckRequested && e.AggregateID == domainID {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no check request of %s within 5s", domainID)
}

// scanEventOf is a scan.completed of the domain host:443 from region.
func scanEventOf(t *testing.T, domainID, host, region string, finished time.Time, results ...events.IPResult) events.Envelope {
	t.Helper()
	ev := scanEvent(t, domainID, region, finished, 443, results...)
	var p events.ScanCompletedV1
	if err := ev.Decode(&p); err != nil {
		t.Fatal(err)
	}
	p.Host = host
	out, err := events.NewWithID(ev.EventID, ev.Name, ev.TenantID, ev.AggregateID, p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
