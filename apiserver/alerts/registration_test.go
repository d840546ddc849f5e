package alerts

import (
	"context"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
)

// lookup is a registration.looked_up.v1 of domain answered at at with
// status and expiry exp (nil: none).
func lookup(t *testing.T, domain, status string, at time.Time, exp *time.Time) events.Envelope {
	t.Helper()
	r := events.RegistrationV1{Domain: domain, Status: status, LookedUpAt: at, ExpiresAt: exp, Registrar: "Lab Registrar", Source: "rdap"}
	if status == events.RegistrationError {
		r = events.RegistrationV1{Domain: domain, Status: status, Detail: "timeout", LookedUpAt: at}
	}
	e, err := events.New(events.RegistrationLookedUp, "", domain, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDomainExpiryAlerts: the registration's thresholds (default
// 60/30/14/7/1) raised by lookups and by scans as time passes, only the
// tightest of those crossed at once, a failed lookup changing nothing,
// domain_expired, and a renewal resolving them all.
func TestDomainExpiryAlerts(t *testing.T) {
	f := newFixture(t, 1)
	exp := t0.Add(45 * day)
	ok := cert("192.0.2.1", "aaaa", t0.Add(300*day))
	first := lookup(t, "example.com", events.RegistrationOK, t0, &exp)
	f.step("44 days left", []string{"raised domain_expiry/60 warning"}, first)
	f.step("the lookup redelivered", nil, first)
	f.step("a scan, still 44 days", nil, scan(t, "eu", t0.Add(time.Hour), ok))
	f.step("28 days left at the next lookup", []string{"raised domain_expiry/30 warning"},
		lookup(t, "example.com", events.RegistrationOK, t0.Add(16*day), &exp))
	f.step("a scan 4 days before: 7 and 14 at once, 7 raised", []string{"raised domain_expiry/7 critical"},
		scan(t, "eu", t0.Add(40*day+time.Hour), ok))
	f.step("a failed lookup keeps the answer", nil, lookup(t, "example.com", events.RegistrationError, t0.Add(41*day), nil))
	f.step("expired", []string{"raised domain_expired critical"},
		lookup(t, "example.com", events.RegistrationOK, t0.Add(46*day), &exp))

	as := f.list()
	if len(as) != 4 || as[0].AlertType != events.AlertDomainExpired || as[0].Title != "Domain registration expired" {
		t.Fatalf("alerts: got %d, newest %+v; want 4, newest domain_expired", len(as), as[0])
	}
	if got, want := as[1].Message, "The registration of example.com (for example.com) expires on 2030-02-16. 4 days remaining (threshold 7 days). Registrar: Lab Registrar."; got != want {
		t.Errorf("message: got %q, want %q", got, want)
	}

	renewed := t0.Add(46*day + 365*day)
	f.step("renewed", []string{"resolved domain_expiry: registration renewed", "resolved domain_expiry: registration renewed",
		"resolved domain_expiry: registration renewed", "resolved domain_expired: registration renewed"},
		lookup(t, "example.com", events.RegistrationOK, t0.Add(47*day), &renewed))
	f.step("not found afterwards changes nothing", nil, lookup(t, "example.com", events.RegistrationNotFound, t0.Add(48*day), nil))
}

// TestDomainExpiryNoExpiry: a registry that publishes no expiry raises
// nothing.
func TestDomainExpiryNoExpiry(t *testing.T) {
	f := newFixture(t, 1)
	for _, status := range []string{events.RegistrationNoExpiry, events.RegistrationNotFound, events.RegistrationError} {
		f.step(status, nil, lookup(t, "example.com", status, t0.Add(time.Duration(len(status))*time.Minute), nil))
	}
}

// TestDomainExpiryEveryTenant: one lookup raises the alert on every
// monitored domain under the registrable domain, of every tenant, with
// each tenant's thresholds; a domain renamed away gets none.
func TestDomainExpiryEveryTenant(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	const bob, bobWWW, bobAway = "tenant-b", "0b0b0b0b-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"
	f.addDomain(bob, bobWWW, "www.example.com")
	f.addDomain(bob, bobAway, "shop.example.com")
	f.apply(tenantDomainEvent(t, events.DomainUpdated, bob, bobAway, "shop.example.net", t0))
	if _, err := f.engine.PutSettings(ctx, bob, Settings{ExpiryThresholdsDays: []int{30}, ScanFailingAfter: 3, DomainExpiryThresholdsDays: []int{90}}); err != nil {
		t.Fatal(err)
	}
	exp := t0.Add(50 * day)
	f.apply(lookup(t, "example.com", events.RegistrationOK, t0, &exp))

	for _, tc := range []struct {
		tenant, domain string
		want           int
	}{{tenant, domainID, 60}, {bob, bobWWW, 90}, {bob, bobAway, 0}} {
		as, _, err := f.engine.List(ctx, tc.tenant, tc.domain, 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.want == 0 && len(as) != 0:
			t.Errorf("%s %s: got %d alerts (%+v), want none", tc.tenant, tc.domain, len(as), as[0])
		case tc.want != 0 && (len(as) != 1 || as[0].AlertType != events.AlertDomainExpiry || *as[0].ThresholdDays != tc.want):
			t.Errorf("%s %s: got %+v, want one domain_expiry at %d days", tc.tenant, tc.domain, as, tc.want)
		}
	}
}

// TestDomainExpiryHeld: a domain a held key added raises no registration
// alert; approved, the next lookup raises it.
func TestDomainExpiryHeld(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	rec := accounts.DomainKey(tenant, domainID) // as in TestHeldDomainRaisesNothing
	if err := f.rdb.HSet(ctx, rec, "held_by", "key-1").Err(); err != nil {
		t.Fatal(err)
	}
	exp := t0.Add(20 * day)
	f.step("held: 20 days left", nil, lookup(t, "example.com", events.RegistrationOK, t0, &exp))
	if err := f.rdb.HDel(ctx, rec, "held_by").Err(); err != nil {
		t.Fatal(err)
	}
	f.step("approved: next lookup", []string{"raised domain_expiry/30 warning"},
		lookup(t, "example.com", events.RegistrationOK, t0.Add(time.Hour), &exp))
}
