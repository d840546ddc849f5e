package claimlink

import (
	"encoding/json"
	"errors"
	"net/mail"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/internal/printable"
)

// FuzzParseRecipient feeds opened recipient tokens of any content to
// ParseRecipient: it accepts a tenant UUID, a bare printable address and
// an expiry after now, which seal back to the same recipient, or refuses
// with one of its two errors.
func FuzzParseRecipient(f *testing.F) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Add([]byte(`{"t":"5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a01","a":"oncall@example.com","e":"2030-01-04T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		r, err := ParseRecipient(plain, now)
		if err != nil {
			if !errors.Is(err, ErrRecipientInvalid) && !errors.Is(err, ErrRecipientExpired) {
				t.Fatalf("refused with %v, want ErrRecipientInvalid or ErrRecipientExpired", err)
			}
			return
		}
		if _, err := uuid.Parse(r.TenantID); err != nil {
			t.Fatalf("accepted tenant %q: %v", r.TenantID, err)
		}
		if a, err := mail.ParseAddress(r.Address); err != nil || a.Address != r.Address || printable.HasControl(r.Address) || len(r.Address) > 254 {
			t.Fatalf("accepted address %q, not a bare printable one", r.Address)
		}
		if !r.ExpiresAt.After(now) {
			t.Fatalf("accepted expiry %s, not after %s", r.ExpiresAt, now)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseRecipient(again, now); err != nil || back.TenantID != r.TenantID || back.Address != r.Address || !back.ExpiresAt.Equal(r.ExpiresAt) {
			t.Fatalf("round trip: got %+v %v, want %+v", back, err, r)
		}
	})
}
