package accounts

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestEnsureAccount(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	for range 2 {
		tenant, err := s.EnsureAccount(ctx, "ops@example.com")
		if err != nil || tenant != events.TenantID("ops@example.com") {
			t.Fatalf("ensure: got %q %v, want %s", tenant, err, events.TenantID("ops@example.com"))
		}
	}
	// Once created, an account of another spelling is the same.
	if tenant, err := s.EnsureAccount(ctx, "OPS@example.com"); err != nil || tenant != events.TenantID("ops@example.com") {
		t.Errorf("other case: got %q %v, want the same account", tenant, err)
	}
	evs := streamEvents(t, rdb)
	if len(evs) != 1 || evs[0].Name != events.AccountCreated {
		t.Errorf("events: got %v, want one %s", evs, events.AccountCreated)
	}
	if _, err := s.EnsureAccount(ctx, "not an email"); !errors.Is(err, ErrBadEmail) {
		t.Errorf("bad email: got %v, want ErrBadEmail", err)
	}
}

func TestCreateKey(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	if _, err := s.CreateKey(ctx, "no-such-tenant", "x", []string{"read"}, nil, SourceCLI); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("key of a missing account: got %v, want ErrUnknownAccount", err)
	}
	tenant, err := s.EnsureAccount(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	tests := []struct {
		name    string
		label   string
		scopes  []string
		expires *time.Time
		wantErr error
	}{
		{"empty label", "", []string{"read"}, nil, ErrBadLabel},
		{"long label", strings.Repeat("a", 101), []string{"read"}, nil, ErrBadLabel},
		{"label with escape sequences", "x\x1b]0;pwned\a\x1b[2J\nfake: row", []string{"read"}, nil, ErrLabelControl},
		{"label with NUL", "a\x00", []string{"read"}, nil, ErrLabelControl},
		{"label with tab", "a\tb", []string{"read"}, nil, ErrLabelControl},
		{"no scopes", "x", nil, nil, ErrBadScopes},
		{"unknown scope", "x", []string{"read", "admin"}, nil, ErrBadScopes},
		{"expired already", "x", []string{"read"}, &past, ErrBadExpiry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.CreateKey(ctx, tenant, tc.label, tc.scopes, tc.expires, SourceCLI); !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
	if n := len(streamEvents(t, rdb)); n != 1 {
		t.Errorf("events after refused creates: got %d, want 1 (the account)", n)
	}

	k, err := s.CreateKey(ctx, tenant, "ops", []string{"write", "read", "write"}, nil, SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k.Scopes, []string{"read", "write"}) || k.Prefix != k.Key[:8] {
		t.Errorf("key: got %+v, want scopes [read write] and prefix of the key", k.APIKey)
	}
	p, err := s.AuthenticateBearer(ctx, k.Key)
	if err != nil || p.TenantID != tenant || p.KeyID != k.ID || !p.Can(ScopeWrite) {
		t.Errorf("authenticate: got %+v %v, want tenant %s key %s with write", p, err, tenant, k.ID)
	}
	if err := s.RevokeKey(ctx, "other-tenant", k.ID); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("revoke by another tenant: got %v, want ErrUnknownKeyID", err)
	}
	if err := s.RevokeKey(ctx, tenant, k.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := s.AuthenticateBearer(ctx, k.Key); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("revoked key: got %v, want ErrUnknownKey", err)
	}
	// A late last-used write does not bring a revoked key back.
	u := s.NewKeyUsage()
	u.Seen(ctx, p)
	if _, err := s.AuthenticateBearer(ctx, k.Key); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("revoked key after a last-used write: got %v, want ErrUnknownKey", err)
	}
	if keys, err := s.ListKeys(ctx, tenant); err != nil || len(keys) != 0 {
		t.Errorf("list after revoke: got %v %v, want none", keys, err)
	}
	evs := streamEvents(t, rdb)
	if len(evs) != 3 || evs[1].Name != events.APIKeyCreated || evs[2].Name != events.APIKeyRevoked || evs[2].AggregateID != k.ID {
		t.Errorf("events: got %v, want account, key created, key revoked", evs)
	}
}

// TestKeyUsageBounded: the map of written times drops old entries.
func TestKeyUsageBounded(t *testing.T) {
	s, _ := newStore(t)
	u := s.NewKeyUsage()
	t0 := time.Now()
	for i := range 5000 {
		u.due(strconv.Itoa(i), t0)
	}
	if !u.due("late", t0.Add(2*time.Minute)) {
		t.Fatal("due: got false for a new key, want true")
	}
	if n := len(u.written); n != 1 {
		t.Errorf("entries: got %d, want 1 once the old ones are dropped", n)
	}
}

// BenchmarkAuthenticateBearer: every refusal costs what an accepted key
// does (one SHA-256 and one HGETALL). The cases take turns within one
// loop, so load from elsewhere on the machine hits them alike; each
// reports its mean as <case>-ns/op.
func BenchmarkAuthenticateBearer(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	now := time.Now()
	s, err := New(Config{Now: func() time.Time { return now }}, rdb, testenv.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	tenant, err := s.EnsureAccount(ctx, "ops@example.com")
	if err != nil {
		b.Fatal(err)
	}
	mk := func(expires *time.Time) string {
		k, err := s.CreateKey(ctx, tenant, "bench", []string{ScopeRead}, expires, SourceCLI)
		if err != nil {
			b.Fatal(err)
		}
		return k.Key
	}
	valid := mk(nil)
	soon := now.Add(time.Second)
	expired := mk(&soon)
	revoked := mk(nil)
	keys, _ := s.ListKeys(ctx, tenant)
	for _, k := range keys {
		if strings.HasPrefix(revoked, k.Prefix) {
			if err := s.RevokeKey(ctx, tenant, k.ID); err != nil {
				b.Fatal(err)
			}
		}
	}
	now = now.Add(time.Minute) // expired has expired
	cases := []struct {
		name, key string
		wantErr   bool
	}{
		{"valid", valid, false},
		{"unknown", "ssa_" + strings.Repeat("A", 32), true},
		{"expired", expired, true},
		{"revoked", revoked, true},
		{"malformed", "x", true},
	}
	spent := make([]time.Duration, len(cases))
	n := 0
	for b.Loop() {
		for i, tc := range cases {
			start := time.Now()
			_, err := s.AuthenticateBearer(ctx, tc.key)
			spent[i] += time.Since(start)
			if (err != nil) != tc.wantErr {
				b.Fatalf("%s: got %v, want error %v", tc.name, err, tc.wantErr)
			}
		}
		n++
	}
	for i, tc := range cases {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(n), tc.name+"-ns/op")
	}
}

// TestClaimRace: tenants claiming one key at once end with exactly one
// owner and one apikey.created event, on Redis Cluster's slot rules.
func TestClaimRace(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.RedisCluster(t).Client(t)
	s, err := New(Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("k", MinKeyLen)
	const n = 8
	var wg sync.WaitGroup
	created := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created[i], errs[i] = s.Claim(ctx, fmt.Sprintf("ops%d@example.com", i), key)
		}()
	}
	wg.Wait()
	wins := 0
	for i := range n {
		switch {
		case errs[i] == nil && created[i]:
			wins++
		case !errors.Is(errs[i], ErrKeyTaken):
			t.Errorf("claim %d: got %v, want created or ErrKeyTaken", i, errs[i])
		}
	}
	if wins != 1 {
		t.Fatalf("got %d winners, want 1", wins)
	}
	evs, err := events.ReadAllEvents(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	keyEvents := 0
	for _, e := range evs {
		if e.Name == events.APIKeyCreated {
			keyEvents++
		}
	}
	if keyEvents != 1 {
		t.Errorf("got %d apikey.created events, want 1", keyEvents)
	}
}

// TestClaimCrashConverges: a reservation whose commit never ran (the
// process died between the two scripts) does not authenticate, and the
// same claim again completes it under the reserved key id.
func TestClaimCrashConverges(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.RedisCluster(t).Client(t)
	s, err := New(Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("c", MinKeyLen)
	tenant := events.TenantID("ops@example.com")
	hash := HashKey(key)
	// Step 1 alone, as a crash after the reservation leaves it.
	if err := reserveKeyScript.Run(ctx, rdb, []string{apiKeyKey(hash)}, tenant, 1,
		"tenant_id", tenant, "key_id", "reserved-id", "scopes", "read", "created_at", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, key); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("pending key: got %v, want ErrUnknownKey", err)
	}
	if _, err := s.Claim(ctx, "other@example.com", key); !errors.Is(err, ErrKeyTaken) {
		t.Fatalf("claim of a pending key by another tenant: got %v, want ErrKeyTaken", err)
	}
	for i, want := range []bool{true, false} {
		created, err := s.Claim(ctx, "ops@example.com", key)
		if err != nil || created != want {
			t.Fatalf("retry %d: got created=%v %v, want %v", i, created, err, want)
		}
	}
	if got, err := s.Authenticate(ctx, key); err != nil || got.TenantID != tenant {
		t.Fatalf("after retry: got %q %v, want %q", got.TenantID, err, tenant)
	}
	evs, err := events.ReadAllEvents(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range evs {
		names = append(names, e.Name+"/"+e.AggregateID)
	}
	want := []string{events.AccountCreated + "/" + tenant, events.APIKeyCreated + "/reserved-id"}
	if !slices.Equal(names, want) {
		t.Errorf("events: got %v, want %v", names, want)
	}
}
