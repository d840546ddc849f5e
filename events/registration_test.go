package events_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

func TestDecodeRegistration(t *testing.T) {
	for _, tc := range []struct {
		name, event, payload string
		wantErr              string // "" when accepted
	}{
		{"job", events.RegistrationRequested, `{"domain":"example.com","scheduled_at":"2026-12-05T16:00:00Z"}`, ""},
		{"job without domain", events.RegistrationRequested, `{"scheduled_at":"2026-12-05T16:00:00Z"}`, "domain is required"},
		{"job upper case", events.RegistrationRequested, `{"domain":"Example.com","scheduled_at":"2026-12-05T16:00:00Z"}`, "not a lower-case name"},
		{"job without time", events.RegistrationRequested, `{"domain":"example.com"}`, "scheduled_at is required"},
		{"job not json", events.RegistrationRequested, `{"domain":`, "decode registration.requested.v1 payload"},
		{"result", events.RegistrationLookedUp, `{"domain":"example.com","status":"ok","expires_at":"9999-12-31T00:00:00Z","looked_up_at":"2026-12-05T16:00:00Z"}`, ""},
		{"result unknown status", events.RegistrationLookedUp, `{"domain":"example.com","status":"fine","looked_up_at":"2026-12-05T16:00:00Z"}`, `status "fine"`},
		{"result looked up after 2106", events.RegistrationLookedUp, `{"domain":"example.com","status":"ok","looked_up_at":"2200-01-01T00:00:00Z"}`, "looked_up_at 2200"},
		{"result retry after 1960", events.RegistrationLookedUp, `{"domain":"example.com","status":"error","looked_up_at":"2026-12-05T16:00:00Z","retry_after":"1960-01-01T00:00:00Z"}`, "retry_after 1960"},
		{"result domain too long", events.RegistrationLookedUp, `{"domain":"` + strings.Repeat("a", 254) + `","status":"ok","looked_up_at":"2026-12-05T16:00:00Z"}`, "longer than 253"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := events.Envelope{EventID: uuid.New(), Name: tc.event, Payload: json.RawMessage(tc.payload)}
			var err error
			if tc.event == events.RegistrationRequested {
				_, err = events.DecodeRegistrationRequested(e)
			} else {
				_, err = events.DecodeRegistrationLookedUp(e)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("wrong name", func(t *testing.T) {
		e := events.Envelope{EventID: uuid.New(), Name: events.ScanRequested, Payload: json.RawMessage(`{}`)}
		if _, err := events.DecodeRegistrationLookedUp(e); err == nil {
			t.Error("got nil, want an error")
		}
		if _, err := events.DecodeRegistrationRequested(e); err == nil {
			t.Error("got nil, want an error")
		}
	})
}

// FuzzDecodeRegistrationRequested feeds arbitrary payloads to the lookup
// job decoder: it never panics, and a job it accepts names a domain and a
// due time, and decodes the same after a round trip.
func FuzzDecodeRegistrationRequested(f *testing.F) {
	f.Add([]byte(`{"domain":"example.com","scheduled_at":"2026-12-05T16:00:00Z"}`))
	f.Add([]byte(`{"domain":"","scheduled_at":"0001-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e := events.Envelope{EventID: uuid.New(), Name: events.RegistrationRequested, Payload: json.RawMessage(payload)}
		j, err := events.DecodeRegistrationRequested(e)
		if err != nil {
			return
		}
		if j.Domain == "" || j.ScheduledAt.IsZero() {
			t.Fatalf("accepted bad job %+v", j)
		}
		body, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e.Payload = body
		if _, err := events.DecodeRegistrationRequested(e); err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
	})
}

// FuzzDecodeRegistrationLookedUp does the same for lookup results.
func FuzzDecodeRegistrationLookedUp(f *testing.F) {
	f.Add([]byte(`{"domain":"example.com","status":"ok","source":"rdap","server":"https://rdap.example/","registrar":"R",` +
		`"created_at":"1995-08-14T04:00:00Z","expires_at":"2027-08-13T04:00:00Z","statuses":["client transfer prohibited"],` +
		`"name_servers":["a.iana-servers.net"],"looked_up_at":"2026-12-05T16:00:00Z"}`))
	f.Add([]byte(`{"domain":"example.de","status":"rate-limited","looked_up_at":"2026-12-05T16:00:00Z","retry_after":"2026-12-05T17:00:00Z"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e := events.Envelope{EventID: uuid.New(), Name: events.RegistrationLookedUp, Payload: json.RawMessage(payload)}
		r, err := events.DecodeRegistrationLookedUp(e)
		if err != nil {
			return
		}
		if r.Domain == "" || r.LookedUpAt.IsZero() || r.Status == "" {
			t.Fatalf("accepted bad result %+v", r)
		}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e.Payload = body
		if _, err := events.DecodeRegistrationLookedUp(e); err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
	})
}
