package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestHeldClaim(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{HoldClaims: true, HeldQuota: 2}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	const email = "victim@example.com"
	tenant, err := s.EnsureAccount(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "private.example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}

	key, err := s.ClaimNew(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, key)
	if err != nil || !p.Held || p.TenantID != tenant {
		t.Fatalf("authenticate claimed key: got %+v %v, want a held key of %s", p, err, tenant)
	}

	// The account's own domain, even re-added by the held key, stays unreadable.
	again, added, err := s.AddDomain(ctx, tenant, NewDomain{Host: "private.example.com", Port: 443, HeldBy: p.KeyID})
	if err != nil || added || again.ID != own.ID {
		t.Fatalf("re-add by held key: got %+v added=%v %v, want the existing domain, not added", again, added, err)
	}
	if err := s.CanRead(ctx, p, own.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("held key reads the account's domain: got %v, want ErrUnknownDomain", err)
	}

	// Its own domains are readable, held, and count against its quota.
	var mine []string
	for i := range 2 {
		d, added, err := s.AddDomain(ctx, tenant, NewDomain{Host: fmt.Sprintf("h%d.example.com", i), Port: 443, HeldBy: p.KeyID})
		if err != nil || !added || d.HeldBy != p.KeyID {
			t.Fatalf("add %d by held key: got %+v added=%v %v", i, d, added, err)
		}
		if err := s.CanRead(ctx, p, d.ID); err != nil {
			t.Fatalf("held key reads its own domain: %v", err)
		}
		mine = append(mine, d.ID)
	}
	var hq *HeldQuotaError
	if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "h2.example.com", Port: 443, HeldBy: p.KeyID}); !errors.As(err, &hq) || hq.Limit != 2 {
		t.Fatalf("third add by held key with quota 2: got %v, want HeldQuotaError{2}", err)
	}
	held, err := s.IsHeld(ctx, tenant, append([]string{own.ID}, mine...))
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, true, true}; fmt.Sprint(held) != fmt.Sprint(want) {
		t.Fatalf("held: got %v, want %v", held, want)
	}

	// Listed as claimed and held; approval lifts both limits.
	keys, err := s.ListKeys(ctx, tenant)
	if err != nil || len(keys) != 1 || keys[0].Kind != KindClaimed || !keys[0].Held {
		t.Fatalf("list keys: got %+v %v, want one held claimed key", keys, err)
	}
	if _, err := s.ApproveKey(ctx, events.TenantID("other@example.com"), p.KeyID); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("approve by another tenant: got %v, want ErrUnknownKeyID", err)
	}
	k, err := s.ApproveKey(ctx, tenant, p.KeyID)
	if err != nil || k.Held || k.Kind != KindClaimed {
		t.Fatalf("approve: got %+v %v, want an approved claimed key", k, err)
	}
	if _, err := s.ApproveKey(ctx, tenant, p.KeyID); err != nil {
		t.Fatalf("approve again: %v", err)
	}
	p, err = s.Authenticate(ctx, key)
	if err != nil || p.Held {
		t.Fatalf("authenticate after approval: got %+v %v, want not held", p, err)
	}
	if err := s.CanRead(ctx, p, own.ID); err != nil {
		t.Fatalf("approved key reads the account's domain: %v", err)
	}
	held, err = s.IsHeld(ctx, tenant, mine)
	if err != nil || held[0] || held[1] {
		t.Fatalf("held after approval: got %v %v, want none", held, err)
	}
	var approved []events.APIKeyApprovedV1
	for _, e := range streamEvents(t, rdb) {
		if e.Name == events.APIKeyApproved {
			var a events.APIKeyApprovedV1
			if err := e.Decode(&a); err != nil {
				t.Fatal(err)
			}
			approved = append(approved, a)
		}
	}
	if len(approved) != 1 || len(approved[0].Domains) != 2 {
		t.Fatalf("approved events: got %+v, want one naming the two domains", approved)
	}
}

func TestOpenClaimIsNotHeld(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	key, err := s.ClaimNew(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, key)
	if err != nil || p.Held {
		t.Fatalf("got %+v %v, want a key that is not held", p, err)
	}
	keys, err := s.ListKeys(ctx, p.TenantID)
	if err != nil || len(keys) != 1 || keys[0].Kind != KindClaimed || keys[0].Held {
		t.Fatalf("list: got %+v %v, want one approved claimed key", keys, err)
	}
}

func TestQuotas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{Quotas: quota.Limits{quota.Domains: 2, quota.APIKeys: 1}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := s.EnsureAccount(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: fmt.Sprintf("d%d.example.com", i), Port: 443}); err != nil {
			t.Fatal(err)
		}
	}
	var ex *quota.Exceeded
	if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "d2.example.com", Port: 443}); !errors.As(err, &ex) || ex.Resource != quota.Domains || ex.Limit != 2 {
		t.Fatalf("third domain: got %v, want quota.Exceeded{domains, 2}", err)
	}
	// Re-adding an existing one is not a new domain.
	if _, added, err := s.AddDomain(ctx, tenant, NewDomain{Host: "d1.example.com", Port: 443}); err != nil || added {
		t.Fatalf("re-add at quota: got added=%v %v, want the existing domain", added, err)
	}
	// A tenant's override wins over the default, in both directions.
	if err := quota.Set(ctx, rdb, tenant, quota.Limits{quota.Domains: 3}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "d2.example.com", Port: 443}); err != nil {
		t.Fatalf("third domain with override 3: %v", err)
	}
	if _, err := s.CreateKey(ctx, tenant, "one", []string{"read"}, nil, SourceCLI); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateKey(ctx, tenant, "two", []string{"read"}, nil, SourceCLI)
	if !errors.As(err, &ex) || ex.Resource != quota.APIKeys || ex.Limit != 1 {
		t.Fatalf("second key: got %v, want quota.Exceeded{api_keys, 1}", err)
	}
	if keys, _ := s.ListKeys(ctx, tenant); len(keys) != 1 {
		t.Fatalf("keys after refusal: got %d, want 1", len(keys))
	}
	// The refused key's reservation is released: no pending record is left.
	n, err := rdb.Keys(ctx, "apikey:*").Result()
	if err != nil || len(n) != 1 {
		t.Fatalf("apikey records: got %v %v, want 1", n, err)
	}
	if err := quota.Set(ctx, rdb, tenant, quota.Limits{quota.APIKeys: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, tenant, "two", []string{"read"}, nil, SourceCLI); err != nil {
		t.Fatalf("second key with override 0 (unlimited): %v", err)
	}
}

// TestHeldKeysOutsideOwnerQuotas: claims (anyone who knows the email can
// make them) count against the held quotas only, never against the
// owner's api_keys and domains; approval moves a key and its domains into
// those, refused when it would pass them.
func TestHeldKeysOutsideOwnerQuotas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{HoldClaims: true, HeldQuota: 3,
		Quotas: quota.Limits{quota.APIKeys: 2, quota.Domains: 3, quota.HeldAPIKeys: 3, quota.HeldDomains: 4}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	const email = "victim@example.com"
	tenant, err := s.EnsureAccount(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, tenant, "owner", []string{"read", "write"}, nil, SourceCLI); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: fmt.Sprintf("own%d.example.com", i), Port: 443}); err != nil {
			t.Fatal(err)
		}
	}
	wantExceeded := func(what string, err error, r quota.Resource, limit int64) {
		t.Helper()
		var ex *quota.Exceeded
		if !errors.As(err, &ex) || ex.Resource != r || ex.Limit != limit {
			t.Fatalf("%s: got %v, want quota.Exceeded{%s, %d}", what, err, r, limit)
		}
	}
	wantUsage := func(what string, want Usage) {
		t.Helper()
		if got, err := s.Usage(ctx, tenant); err != nil || got != want {
			t.Fatalf("usage %s: got %+v %v, want %+v", what, got, err, want)
		}
	}

	// The attacker claims up to held_api_keys, then is refused.
	var held []Principal
	for i := range 3 {
		key, err := s.ClaimNew(ctx, email)
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		p, err := s.Authenticate(ctx, key)
		if err != nil || !p.Held {
			t.Fatalf("claim %d: got %+v %v, want a held key", i, p, err)
		}
		held = append(held, p)
	}
	records, _ := rdb.Keys(ctx, "apikey:*").Result()
	_, err = s.ClaimNew(ctx, email)
	wantExceeded("fourth claim", err, quota.HeldAPIKeys, 3)
	if after, _ := rdb.Keys(ctx, "apikey:*").Result(); len(after) != len(records) {
		t.Fatalf("refused claim left a key record: %d, want %d", len(after), len(records))
	}
	// Held keys fill held_domains (and each key its own quota), not domains.
	for i := range 3 {
		if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: fmt.Sprintf("a%d.example.com", i), Port: 443, HeldBy: held[0].KeyID}); err != nil {
			t.Fatalf("held add %d: %v", i, err)
		}
	}
	b0, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "b0.example.com", Port: 443, HeldBy: held[1].KeyID})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.AddDomain(ctx, tenant, NewDomain{Host: "b1.example.com", Port: 443, HeldBy: held[1].KeyID})
	wantExceeded("held add past held_domains", err, quota.HeldDomains, 4)
	wantUsage("after the claims", Usage{Domains: 2, APIKeys: 1, HeldDomains: 4, HeldAPIKeys: 3})

	// The owner still has all of its own room.
	if _, err := s.CreateKey(ctx, tenant, "second", []string{"read"}, nil, SourceCLI); err != nil {
		t.Fatalf("owner's second key with 3 held keys: %v", err)
	}
	if _, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "own2.example.com", Port: 443}); err != nil {
		t.Fatalf("owner's third domain with 4 held domains: %v", err)
	}
	_, _, err = s.AddDomain(ctx, tenant, NewDomain{Host: "own3.example.com", Port: 443})
	wantExceeded("owner's fourth domain", err, quota.Domains, 3)
	wantUsage("after the owner's adds", Usage{Domains: 3, APIKeys: 2, HeldDomains: 4, HeldAPIKeys: 3})

	// Approval moves the key and its domain into the owner's quotas.
	_, err = s.ApproveKey(ctx, tenant, held[1].KeyID)
	wantExceeded("approve past api_keys", err, quota.APIKeys, 2)
	if err := quota.Set(ctx, rdb, tenant, quota.Limits{quota.APIKeys: 5}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ApproveKey(ctx, tenant, held[1].KeyID)
	wantExceeded("approve past domains", err, quota.Domains, 3)
	if hs, err := s.IsHeld(ctx, tenant, []string{b0.ID}); err != nil || !hs[0] {
		t.Fatalf("refused approval released the domain: held %v %v", hs, err)
	}
	wantUsage("after refused approvals", Usage{Domains: 3, APIKeys: 2, HeldDomains: 4, HeldAPIKeys: 3})
	if err := quota.Set(ctx, rdb, tenant, quota.Limits{quota.Domains: 4}); err != nil {
		t.Fatal(err)
	}
	if k, err := s.ApproveKey(ctx, tenant, held[1].KeyID); err != nil || k.Held {
		t.Fatalf("approve within the quotas: got %+v %v", k, err)
	}
	wantUsage("after the approval", Usage{Domains: 4, APIKeys: 3, HeldDomains: 3, HeldAPIKeys: 2})

	// Revoking a held key and removing a held domain free their room.
	if err := s.RevokeKey(ctx, tenant, held[2].KeyID); err != nil {
		t.Fatal(err)
	}
	ds, err := s.ListDomains(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Host == "a0.example.com" {
			if _, err := s.RemoveDomain(ctx, tenant, d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantUsage("after revoke and removal", Usage{Domains: 4, APIKeys: 3, HeldDomains: 2, HeldAPIKeys: 1})

	// Revoking a held key turns its claim down: the servers it still
	// holds go with it, the approved key's stay.
	if err := s.RevokeKey(ctx, tenant, held[0].KeyID); err != nil {
		t.Fatal(err)
	}
	wantUsage("after revoking a held key with servers", Usage{Domains: 4, APIKeys: 3, HeldDomains: 0, HeldAPIKeys: 0})
	if ds, err = s.ListDomains(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, d := range ds {
		hosts = append(hosts, d.Host)
	}
	sort.Strings(hosts)
	if want := []string{"b0.example.com", "own0.example.com", "own1.example.com", "own2.example.com"}; !slices.Equal(hosts, want) {
		t.Fatalf("domains after revoking a held key: %v, want %v", hosts, want)
	}
	if n, _ := rdb.Exists(ctx, heldDomainsKey(tenant, held[0].KeyID)).Result(); n != 0 {
		t.Fatal("a revoked held key's set of servers is left")
	}
	if err := s.RevokeKey(ctx, tenant, held[0].KeyID); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("second revocation: %v, want ErrUnknownKeyID", err)
	}

	if _, err := s.ClaimNew(ctx, email); err != nil {
		t.Fatalf("claim after a revocation: %v", err)
	}
	// held_api_keys is overridden per tenant like every quota.
	if err := quota.Set(ctx, rdb, tenant, quota.Limits{quota.HeldAPIKeys: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ClaimNew(ctx, email)
	wantExceeded("claim past the override", err, quota.HeldAPIKeys, 1)
}
