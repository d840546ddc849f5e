package claimlink

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestTokenRoundTrip(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	issuer := New("correct horse battery staple", rdb, clock)
	// Another replica with the same passphrase opens what the first sealed.
	reader := New("correct horse battery staple", rdb, clock)
	c := Claim{TenantID: "t1", KeyID: "k1", ExpiresAt: now.Add(time.Hour)}
	tok, err := issuer.Token(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := reader.Open(ctx, tok)
	if err != nil || got != c {
		t.Fatalf("open: got %+v %v, want %+v", got, err, c)
	}

	tests := []struct {
		name  string
		links *Links
		token string
		want  error
	}{
		{"altered", reader, tok[:len(tok)-2] + "AA", ErrInvalid},
		{"not a token", reader, "hello", ErrInvalid},
		{"huge", reader, "v1." + strings.Repeat("A", 5000), ErrInvalid},
		{"other passphrase", New("another passphrase, long enough", rdb, clock), tok, ErrInvalid},
		{"expired", New("correct horse battery staple", rdb, func() time.Time { return now.Add(time.Hour) }), tok, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.links.Open(ctx, tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// A recipient's token opens only as the recipient it was sealed for: not
// altered, not past its expiry, not with another passphrase, and a claim's
// token (sealed with the same key) is no recipient's.
func TestRecipientToken(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	links := New("correct horse battery staple", rdb, clock)
	r := Recipient{TenantID: "5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a01", Address: "oncall@example.com", ExpiresAt: now.Add(time.Hour)}
	tok, err := links.RecipientToken(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := New("correct horse battery staple", rdb, clock).OpenRecipient(ctx, tok); err != nil || got != r {
		t.Fatalf("open: got %+v %v, want %+v", got, err, r)
	}
	claim, err := links.Token(ctx, Claim{TenantID: r.TenantID, KeyID: "k1", ExpiresAt: r.ExpiresAt})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		links *Links
		token string
		want  error
	}{
		{"altered", links, tok[:len(tok)-2] + "AA", ErrRecipientInvalid},
		{"a claim's token", links, claim, ErrRecipientInvalid},
		{"other passphrase", New("another passphrase, long enough", rdb, clock), tok, ErrRecipientInvalid},
		{"expired", New("correct horse battery staple", rdb, func() time.Time { return now.Add(time.Hour) }), tok, ErrRecipientExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.links.OpenRecipient(ctx, tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := links.Open(ctx, tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("a recipient's token opened as a claim: got %v, want ErrInvalid", err)
	}
}
