package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

func newStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return s, rdb
}

func streamEvents(t *testing.T, rdb *redis.Client) []events.Envelope {
	t.Helper()
	evs, err := events.ReadAllEvents(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestParseEmail(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"ops@example.com", true},
		{"Ops.Team+tls@example.co.uk", true},
		{"", false},
		{"ops", false},
		{"ops@", false},
		{"@example.com", false},
		{"Ops <ops@example.com>", false},
		{"<ops@example.com>", false},
		{"ops@example.com, dev@example.com", false},
		{" ops@example.com", false},
		{strings.Repeat("a", 250) + "@example.com", false},
		{"é@example.com", true},
		// C1 controls and bidi overrides pass net/mail (any non-ASCII is
		// atext) but would drive a terminal or reorder a listing.
		{"o\u009bps@example.com", false},
		{"ops@exam\u009bple.com", false},
		{"o\u202eps@example.com", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseEmail(tc.in)
			if got := err == nil; got != tc.ok {
				t.Errorf("ParseEmail(%q): got ok=%v (%v), want ok=%v", tc.in, got, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadEmail) {
				t.Errorf("ParseEmail(%q): got %v, want ErrBadEmail", tc.in, err)
			}
		})
	}
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"5b9b6aceb95011e7bb9f7fca73a26228", true},
		{"my-own-key-0123456789", true},
		{strings.Repeat("a", 16), true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 15), false},
		{strings.Repeat("a", 65), false},
		{"has_underscore_0123", false},
		{"has space 0123456789", false},
		{"ünicode-0123456789", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := CheckKey(tc.in) == nil; got != tc.ok {
				t.Errorf("CheckKey(%q): got ok=%v, want %v", tc.in, got, tc.ok)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != GeneratedKeyLen || CheckKey(k) != nil || strings.Contains(k, "-") {
			t.Fatalf("GenerateKey: got %q, want %d characters of [a-zA-Z0-9]", k, GeneratedKeyLen)
		}
		if seen[k] {
			t.Fatalf("GenerateKey: %q twice", k)
		}
		seen[k] = true
	}
}

func TestClaim(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	const key = "my-own-key-0123456789"

	created, err := s.Claim(ctx, "ops@example.com", key)
	if err != nil || !created {
		t.Fatalf("first claim: got created=%v err=%v, want created", created, err)
	}
	// The same key for the same account (in another case) is known.
	created, err = s.Claim(ctx, "OPS@example.com", key)
	if err != nil || created {
		t.Fatalf("second claim: got created=%v err=%v, want success", created, err)
	}
	// Another account cannot take it.
	if _, err := s.Claim(ctx, "eve@example.com", key); !errors.Is(err, ErrKeyTaken) {
		t.Fatalf("claim by another account: got %v, want ErrKeyTaken", err)
	}
	ap, err := s.Authenticate(ctx, key)
	tenant := ap.TenantID
	if err != nil || tenant != events.TenantID("ops@example.com") {
		t.Fatalf("authenticate: got %q %v, want %s", tenant, err, events.TenantID("ops@example.com"))
	}
	// A second key of the same account: no second account.created.
	key2, err := s.ClaimNew(ctx, "ops@example.com")
	if err != nil {
		t.Fatalf("claim new: %v", err)
	}
	if p2, _ := s.Authenticate(ctx, key2); p2.TenantID != tenant {
		t.Errorf("generated key's tenant: got %q, want %q", p2.TenantID, tenant)
	}

	evs := streamEvents(t, rdb)
	var names []string
	for _, e := range evs {
		names = append(names, e.Name)
	}
	want := []string{events.AccountCreated, events.APIKeyCreated, events.APIKeyCreated}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("events: got %v, want %v", names, want)
	}
	var p events.APIKeyCreatedV1
	if err := evs[1].Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Hash != HashKey(key) || p.Source != "keychest" || strings.Join(p.Scopes, ",") != "read,write" || evs[1].TenantID != tenant {
		t.Errorf("apikey.created: got %+v tenant %s, want hash %s, source keychest, scopes read,write", p, evs[1].TenantID, HashKey(key))
	}
	// No key is stored in the clear anywhere.
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if strings.Contains(k, key) {
			t.Errorf("redis key %q contains the api key", k)
		}
	}
	for _, e := range evs {
		if strings.Contains(string(e.Payload), key) || strings.Contains(string(e.Payload), key2) {
			t.Errorf("event %s carries an api key in the clear: %s", e.Name, e.Payload)
		}
	}

	if _, err := s.Authenticate(ctx, "unknown-key-0123456789"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("authenticate unknown key: got %v, want ErrUnknownKey", err)
	}
	if _, err := s.Authenticate(ctx, "x"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("authenticate malformed key: got %v, want ErrUnknownKey", err)
	}
}

func TestClaimRejectsBadInputAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	tests := []struct {
		name, email, key string
		want             error
	}{
		{"bad email", "not-an-email", "my-own-key-0123456789", ErrBadEmail},
		{"short key", "ops@example.com", "short", ErrBadKey},
		{"bad character", "ops@example.com", "my_own_key_0123456789", ErrBadKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Claim(ctx, tc.email, tc.key); !errors.Is(err, tc.want) {
				t.Errorf("claim: got %v, want %v", err, tc.want)
			}
		})
	}
	if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
		t.Errorf("redis keys after rejected claims: got %d, want 0", n)
	}
}

// Two servers racing to claim one key for different accounts: exactly one
// wins, and the key is never reassigned.
func TestConcurrentClaimsOfOneKey(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	const key = "contested-key-0123456789"
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Claim(ctx, fmt.Sprintf("user%d@example.com", i), key)
			errs <- err
		}()
	}
	won := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrKeyTaken):
			t.Errorf("claim: got %v, want nil or ErrKeyTaken", err)
		}
	}
	if won != 1 {
		t.Errorf("winners: got %d, want 1", won)
	}
	var keyEvents int
	for _, e := range streamEvents(t, rdb) {
		if e.Name == events.APIKeyCreated {
			keyEvents++
		}
	}
	if keyEvents != 1 {
		t.Errorf("apikey.created events: got %d, want 1", keyEvents)
	}
}
