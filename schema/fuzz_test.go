package schema_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// FuzzScanRows feeds arbitrary scan.completed payloads to the conversion
// into scan_results rows: it must never panic, and every row it returns
// carries the event's values unchanged (nothing wrapped or clamped).
func FuzzScanRows(f *testing.F) {
	f.Add([]byte(`{"job_id":"6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90","domain_id":"d1","host":"example.com","port":443,"region":"eu",` +
		`"scheduled_at":"2026-01-02T03:04:00Z","started_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:04:06Z",` +
		`"results":[{"ip":"192.0.2.1","outcome":"ok","certificate_found":true,"not_after":"9999-12-31T23:59:59Z","chain_length":2}]}`))
	f.Add([]byte(`{"port":70000,"results":[{"chain_length":300}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e := events.Envelope{EventID: uuid.New(), Name: events.ScanCompleted, Payload: json.RawMessage(payload)}
		rows, err := schema.ScanRows(e)
		if err != nil {
			return
		}
		var p events.ScanCompletedV1
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatalf("rows from a payload that does not decode: %v", err)
		}
		if len(rows) != len(p.Results) {
			t.Fatalf("got %d rows, want %d", len(rows), len(p.Results))
		}
		for i, r := range rows {
			in := p.Results[i]
			if int(r.Port) != p.Port || int(r.ChainLength) != in.ChainLength || int(r.KeyBits) != in.KeyBits ||
				int64(r.ConnectMS) != in.ConnectMS || int64(r.HandshakeMS) != in.HandshakeMS || int(r.HTTPStatus) != in.HTTPStatus {
				t.Fatalf("row %d changed a value: got %+v from %+v", i, r, in)
			}
			if !in.NotAfter.IsZero() && (r.NotAfter == nil || r.NotAfter.Unix() != in.NotAfter.Unix()) {
				t.Fatalf("row %d: not_after %v, want %s", i, r.NotAfter, in.NotAfter)
			}
		}
	})
}
