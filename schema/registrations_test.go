package schema_test

import (
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

func registrationEvent(t *testing.T, r events.RegistrationV1) events.Envelope {
	t.Helper()
	e, err := events.NewWithID(events.RegistrationEventID(r.Domain, r.LookedUpAt), events.RegistrationLookedUp, "", r.Domain, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Every lookup is one row, however often stored; the history shows the
// expiry move and the registrar change, latest first, with dates exact and
// absent dates NULL.
func TestRegistrationHistory(t *testing.T) {
	ctx, db := migrated(t)
	conn := db.Conn(t)
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	first := events.RegistrationV1{Domain: "example.com", Status: events.RegistrationOK, Source: "rdap", Server: "https://rdap.example/",
		Registrar: "Old Registrar", CreatedAt: at("1995-08-14T04:00:00Z"), ExpiresAt: at("2026-12-20T04:00:00Z"),
		Statuses: []string{"client transfer prohibited"}, NameServers: []string{"a.iana-servers.net"}, LookedUpAt: *at("2026-11-01T10:00:00Z")}
	renewed := first
	renewed.Registrar, renewed.ExpiresAt, renewed.LookedUpAt = "New Registrar", at("2027-12-20T04:00:00Z"), *at("2026-12-02T10:00:00Z")
	failed := events.RegistrationV1{Domain: "example.com", Status: events.RegistrationRateLimited, Source: "rdap",
		LookedUpAt: *at("2026-12-03T10:00:00Z"), RetryAfter: at("2026-12-03T11:00:00Z")}
	other := events.RegistrationV1{Domain: "example.de", Status: events.RegistrationNoExpiry, Source: "whois", LookedUpAt: *at("2026-12-02T10:00:00Z")}

	var rows []schema.RegistrationRow
	for _, r := range []events.RegistrationV1{first, renewed, failed, other, renewed, first} { // the last two redelivered
		row, err := schema.RegistrationRowOf(registrationEvent(t, r), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
	}
	if err := schema.InsertRegistrations(ctx, conn, rows[:4]); err != nil {
		t.Fatal(err)
	}
	if err := schema.InsertRegistrations(ctx, conn, rows[4:]); err != nil {
		t.Fatal(err)
	}
	got, err := schema.RegistrationHistory(ctx, conn, "example.com", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("history: got %d rows, want 3", len(got))
	}
	str := func(p *time.Time) string {
		if p == nil {
			return "null"
		}
		return p.UTC().Format(time.RFC3339)
	}
	for _, c := range []struct{ what, got, want string }{
		{"latest status", got[0].Status, events.RegistrationRateLimited},
		{"latest retry after", str(got[0].RetryAfter), "2026-12-03T11:00:00Z"},
		{"latest expiry", str(got[0].ExpiresAt), "null"},
		{"renewed expiry", str(got[1].ExpiresAt), "2027-12-20T04:00:00Z"},
		{"renewed registrar", got[1].Registrar, "New Registrar"},
		{"first expiry", str(got[2].ExpiresAt), "2026-12-20T04:00:00Z"},
		{"first registrar", got[2].Registrar, "Old Registrar"},
		{"first created", str(got[2].CreatedAt), "1995-08-14T04:00:00Z"},
		{"first looked up", got[2].LookedUpAt.Format(time.RFC3339), "2026-11-01T10:00:00Z"},
		{"first statuses", got[2].Statuses[0], "client transfer prohibited"},
		{"first name servers", got[2].NameServers[0], "a.iana-servers.net"},
		{"first event id", got[2].EventID.String(), events.RegistrationEventID("example.com", first.LookedUpAt).String()},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	if got, err := schema.RegistrationHistory(ctx, conn, "example.com", 1); err != nil || len(got) != 1 || got[0].Status != events.RegistrationRateLimited {
		t.Errorf("limit 1: got %v, %v, want the latest lookup only", got, err)
	}
}

// A result the decoder refuses gets no row.
func TestRegistrationRowOfRefuses(t *testing.T) {
	e := registrationEvent(t, events.RegistrationV1{Domain: "example.com", Status: "fine", LookedUpAt: time.Now()})
	if _, err := schema.RegistrationRowOf(e, time.Now()); err == nil {
		t.Error("got nil, want an error")
	}
}
