package events_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

func scanEnvelope(t testing.TB, payload string) events.Envelope {
	t.Helper()
	return events.Envelope{EventID: uuid.New(), Name: events.ScanCompleted, Payload: json.RawMessage(payload)}
}

func TestDecodeScanCompleted(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		wantErr string // "" when the event must be accepted
	}{
		{"valid", `{"port":443,"started_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:04:06Z",
			"results":[{"ip":"192.0.2.1","outcome":"ok","chain_length":3,"key_bits":2048,"http_status":200}]}`, ""},
		{"valid without scheduled_at or times (older agents)", `{"port":0,"results":[]}`, ""},
		{"no expiry certificate", `{"port":443,"results":[{"ip":"192.0.2.1","outcome":"ok","certificate_found":true,
			"not_after":"9999-12-31T23:59:59Z"}]}`, ""},
		{"chain of 255", `{"port":443,"results":[{"chain_length":255}]}`, ""},
		{"port 70000", `{"port":70000,"results":[]}`, "port 70000 is outside 0..65535"},
		{"negative port", `{"port":-1,"results":[]}`, "port -1 is outside"},
		{"chain of 300", `{"port":443,"results":[{"chain_length":300}]}`, "result 0: chain_length 300 is outside 0..255"},
		{"key bits", `{"port":443,"results":[{"key_bits":65536}]}`, "key_bits 65536"},
		{"http status", `{"port":443,"results":[{"http_status":1000}]}`, "http_status 1000"},
		{"connect ms", `{"port":443,"results":[{"connect_ms":4294967296}]}`, "connect_ms 4294967296"},
		{"negative handshake ms", `{"port":443,"results":[{"handshake_ms":-5}]}`, "handshake_ms -5"},
		{"negative hsts", `{"port":443,"results":[{"hsts_max_age":-5}]}`, "hsts_max_age -5"},
		{"finished after 2106", `{"port":443,"finished_at":"2200-01-01T00:00:00Z","results":[]}`, "finished_at 2200-01-01T00:00:00Z is outside"},
		{"scheduled before 1970", `{"port":443,"scheduled_at":"1960-01-01T00:00:00Z","results":[]}`, "scheduled_at 1960"},
		{"not json", `{"port":`, "decode scan.completed.v1 payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.DecodeScanCompleted(scanEnvelope(t, tc.payload))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("every problem named", func(t *testing.T) {
		_, err := events.DecodeScanCompleted(scanEnvelope(t, `{"port":70000,"results":[{"chain_length":300}]}`))
		if err == nil || !strings.Contains(err.Error(), "port 70000") || !strings.Contains(err.Error(), "chain_length 300") {
			t.Fatalf("got %v, want both the port and the chain length named", err)
		}
	})
	t.Run("wrong name", func(t *testing.T) {
		e := scanEnvelope(t, `{}`)
		e.Name = events.DomainAdded
		if _, err := events.DecodeScanCompleted(e); err == nil {
			t.Fatal("got no error for a domain.added event, want one")
		}
	})
}

func TestDecodeScanRequested(t *testing.T) {
	job := uuid.New().String()
	tests := []struct {
		name, payload, wantErr string
	}{
		{"valid", `{"job_id":"` + job + `","host":"example.com","port":8443,"scheduled_at":"2026-01-02T03:04:05Z"}`, ""},
		{"default port", `{"job_id":"` + job + `","host":"example.com"}`, ""},
		{"port 70000", `{"job_id":"` + job + `","host":"example.com","port":70000}`, "port 70000 is outside 0..65535"},
		{"no job id", `{"host":"example.com"}`, "job id is required"},
		{"no host", `{"job_id":"` + job + `"}`, "host is required"},
		{"not json", `[`, "decode scan.requested.v1 payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := events.Envelope{EventID: uuid.New(), Name: events.ScanRequested, Payload: json.RawMessage(tc.payload)}
			_, err := events.DecodeScanRequested(e)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHasNoExpiry(t *testing.T) {
	tests := []struct {
		name string
		r    events.IPResult
		want bool
	}{
		{"99991231235959Z", events.IPResult{CertificateFound: true, NotAfter: events.NoExpiry}, true},
		{"ordinary date", events.IPResult{CertificateFound: true, NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
		{"past 2106, still a date", events.IPResult{CertificateFound: true, NotAfter: time.Date(2126, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
		{"no certificate", events.IPResult{NotAfter: events.NoExpiry}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.HasNoExpiry(); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzDecodeScanCompleted feeds arbitrary payloads to the scan result
// decoder: it must never panic, and a result it accepts has every value
// within its field's limits and decodes to the same after a round trip.
func FuzzDecodeScanCompleted(f *testing.F) {
	f.Add([]byte(`{"job_id":"6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90","domain_id":"d1","host":"example.com","port":443,"region":"eu",` +
		`"scheduled_at":"2026-01-02T03:04:00Z","started_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:04:06Z",` +
		`"results":[{"ip":"192.0.2.1","outcome":"ok","certificate_found":true,"not_after":"9999-12-31T23:59:59Z","chain_length":2}]}`))
	f.Add([]byte(`{"port":70000,"results":[{"chain_length":300}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		p, err := events.DecodeScanCompleted(scanEnvelope(t, string(payload)))
		if err != nil {
			return
		}
		if p.Port < 0 || p.Port > events.MaxPort {
			t.Fatalf("accepted port %d", p.Port)
		}
		for _, r := range p.Results {
			if r.ChainLength < 0 || r.ChainLength > events.MaxChainLength || r.KeyBits < 0 || r.KeyBits > events.MaxKeyBits ||
				r.ConnectMS < 0 || r.ConnectMS > events.MaxMillis || r.HandshakeMS < 0 || r.HandshakeMS > events.MaxMillis {
				t.Fatalf("accepted out-of-range result %+v", r)
			}
		}
		body, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := events.DecodeScanCompleted(scanEnvelope(t, string(body))); err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
	})
}

// FuzzDecodeScanRequested does the same for scan jobs.
func FuzzDecodeScanRequested(f *testing.F) {
	f.Add([]byte(`{"job_id":"6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90","domain_id":"d1","host":"example.com","port":443,"scheduled_at":"2026-01-02T03:04:00Z"}`))
	f.Add([]byte(`{"job_id":"6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90","host":"example.com","port":70000}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e := events.Envelope{EventID: uuid.New(), Name: events.ScanRequested, Payload: json.RawMessage(payload)}
		j, err := events.DecodeScanRequested(e)
		if err != nil {
			return
		}
		if j.Port < 0 || j.Port > events.MaxPort || j.Host == "" || j.JobID == uuid.Nil {
			t.Fatalf("accepted bad job %+v", j)
		}
	})
}
