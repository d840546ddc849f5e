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
