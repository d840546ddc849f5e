package projector

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
)

// filled sets every field of v (a pointer to a struct) to a value that is
// not its zero, so that a field the view's layout forgets shows.
func filled(t *testing.T, v any) {
	t.Helper()
	s := reflect.ValueOf(v).Elem()
	for i := range s.NumField() {
		f := s.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 7))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a", s.Type().Field(i).Name}))
		case reflect.Struct:
			if f.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("field %s: a struct the test cannot fill", s.Type().Field(i).Name)
			}
			f.Set(reflect.ValueOf(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC).Add(time.Duration(i) * time.Hour)))
		default:
			t.Fatalf("field %s: kind %s the test cannot fill", s.Type().Field(i).Name, f.Kind())
		}
	}
}

// Every field of a scan result comes back from the view as it went in,
// whatever field events.IPResult gains: the view's short layout must carry
// it (encodeResults, decodeEntries).
func TestEntryLayoutKeepsEveryField(t *testing.T) {
	var r events.IPResult
	filled(t, &r)
	r.IP, r.Outcome = "192.0.2.1", events.OutcomeOK
	other := r
	other.IP, other.ConnectMS = "192.0.2.2", 99 // the same leaf at another IP
	failed := events.IPResult{IP: "", Outcome: events.OutcomeNXDomain, Detail: "no such host"}
	fields, err := encodeResults(8443, []events.IPResult{r, other, failed})
	if err != nil {
		t.Fatal(err)
	}
	finished := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	all := map[string]string{"@eu": "1893456000000|evt-1"}
	for i := 0; i < len(fields); i += 2 {
		all["eu|"+fields[i].(string)] = fields[i+1].(string)
	}
	if len(all) != 1+3+1 {
		t.Errorf("got %d fields, want the meta, 3 entries and the one leaf's facts: %v", len(all), all)
	}
	got, err := decodeView("dom", all)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []events.IPResult{failed, r, other} {
		w := ExpEntry{Region: "eu", Port: 8443, ScannedAt: finished, EventID: "evt-1", IPResult: want}
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("entry %d:\ngot  %+v\nwant %+v", i, got[i], w)
		}
	}
}

// A view written before the short layout (whole ExpEntry JSON objects)
// reads as it did.
func TestEntryLayoutReadsOldEntries(t *testing.T) {
	old := ExpEntry{Region: "us", Port: 443, ScannedAt: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), EventID: "evt-0",
		IPResult: events.IPResult{IP: "192.0.2.9", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "ab",
			Subject: "CN=a", NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}}
	body, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeView("dom", map[string]string{"@us": "1777593600000|evt-0", "us|192.0.2.9": string(body)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], old) {
		t.Errorf("got %+v, want %+v", got, old)
	}
}

// Two certificates without a fingerprint (results fed by hand) keep their
// own facts (TestSSLCheck found them sharing one).
func TestEntryLayoutUnnamedLeaves(t *testing.T) {
	a := events.IPResult{IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, Serial: "aa"}
	b := events.IPResult{IP: "192.0.2.2", Outcome: events.OutcomeOK, CertificateFound: true, Serial: "bb"}
	fields, err := encodeResults(443, []events.IPResult{a, b})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{}
	for i := 0; i < len(fields); i += 2 {
		all["eu|"+fields[i].(string)] = fields[i+1].(string)
	}
	got, err := decodeView("dom", all)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Serial != "aa" || got[1].Serial != "bb" {
		t.Errorf("got %+v, want serials aa and bb", got)
	}
}
