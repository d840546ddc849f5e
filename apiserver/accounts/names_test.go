package accounts

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestNamesFromIndex: the index's names alone keep one domain per
// host:port, names that share a prefix or a port's digits stay apart,
// and no hash of names is written.
func TestNamesFromIndex(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a := events.TenantID("a@example.com")
	names := []struct {
		host string
		port int
	}{
		{"example.com", 443}, {"example.com", 4430}, {"example.com", 44}, {"example.co", 443},
		{"example.com.au", 443}, {"www.example.com", 443}, {"192.0.2.1", 443},
	}
	ids := map[string]string{}
	for _, n := range names {
		d, added, err := s.AddDomain(ctx, a, NewDomain{Host: n.host, Port: n.port})
		if err != nil || !added {
			t.Fatalf("add %s:%d: got added=%v %v, want added", n.host, n.port, added, err)
		}
		ids[d.Name()] = d.ID
	}
	for _, n := range names {
		name := Domain{Host: n.host, Port: n.port}.Name()
		if id, err := s.LookupDomain(ctx, a, n.host, n.port); err != nil || id != ids[name] {
			t.Errorf("lookup %s: got %q %v, want %s", name, id, err, ids[name])
		}
		before := redisState(t, rdb)
		d, added, err := s.AddDomain(ctx, a, NewDomain{Host: n.host, Port: n.port})
		if err != nil || added || d.ID != ids[name] {
			t.Errorf("second add of %s: got %s added=%v %v, want %s not added", name, d.ID, added, err, ids[name])
		}
		if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
			t.Errorf("second add of %s wrote to redis:\n got %v\nwant %v", name, after, before)
		}
	}
	for _, n := range []struct {
		host string
		port int
	}{{"example.c", 443}, {"example.com", 4}, {"example.com", 44300}, {"xample.com", 443}} {
		if _, ok := ids[Domain{Host: n.host, Port: n.port}.Name()]; ok {
			continue
		}
		if id, err := s.LookupDomain(ctx, a, n.host, n.port); !errors.Is(err, ErrUnknownDomain) {
			t.Errorf("lookup %s:%d: got %q %v, want ErrUnknownDomain", n.host, n.port, id, err)
		}
	}
	// A rename onto a name the tenant has conflicts and writes nothing; a
	// rename to a free one frees the old name.
	moving := ids["www.example.com:443"]
	before := redisState(t, rdb)
	host, port := "example.com", 4430
	if _, err := s.UpdateDomain(ctx, a, moving, DomainPatch{Host: &host, Port: &port}); !errors.Is(err, ErrDomainExists) {
		t.Errorf("rename onto example.com:4430: got %v, want ErrDomainExists", err)
	}
	if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
		t.Errorf("refused rename wrote to redis:\n got %v\nwant %v", after, before)
	}
	host = "shop.example.com"
	if _, err := s.UpdateDomain(ctx, a, moving, DomainPatch{Host: &host}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupDomain(ctx, a, "www.example.com", 443); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("old name after rename: got %v, want ErrUnknownDomain", err)
	}
	if d, added, err := s.AddDomain(ctx, a, NewDomain{Host: "www.example.com", Port: 443}); err != nil || !added || d.ID == moving {
		t.Errorf("add of the freed name: got %s added=%v %v, want a new domain", d.ID, added, err)
	}
	if n := rdb.Exists(ctx, legacyDomainsKey(a)).Val(); n != 0 {
		t.Errorf("hash of names: got %d keys, want none", n)
	}
	if u, err := s.Usage(ctx, a); err != nil || u.Domains != int64(len(names))+1 {
		t.Errorf("count: got %d %v, want %d", u.Domains, err, len(names)+1)
	}
	ds, err := s.ListDomains(ctx, a)
	if err != nil || len(ds) != len(names)+1 {
		t.Errorf("list: got %d %v, want %d", len(ds), err, len(names)+1)
	}
	// Names with white space would be ambiguous in the index: refused.
	for _, h := range []string{"exa mple.com", "example.com\t"} {
		if _, _, err := s.AddDomain(ctx, a, NewDomain{Host: h, Port: 443}); err == nil {
			t.Errorf("add %q: got nil, want an error", h)
		}
	}
}

// TestDomainCountIsQuota: the domains quota counts the index's ids; a
// removal frees a place.
func TestDomainCountIsQuota(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{Quotas: quota.Limits{quota.Domains: 2}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	a := events.TenantID("a@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "one.example", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.AddDomains(ctx, a, []NewDomain{{Host: "two.example", Port: 443}, {Host: "three.example", Port: 443}})
	if err != nil {
		t.Fatal(err)
	}
	var ex *quota.Exceeded
	if !res[0].Added || !errors.As(res[1].Err, &ex) || ex.Limit != 2 {
		t.Fatalf("bulk add at the quota: got %+v, want the first added, the second over quota 2", res)
	}
	if u, err := s.Usage(ctx, a); err != nil || u.Domains != 2 {
		t.Fatalf("count: got %d %v, want 2", u.Domains, err)
	}
	if _, err := s.RemoveDomain(ctx, a, d.ID); err != nil {
		t.Fatal(err)
	}
	if u, err := s.Usage(ctx, a); err != nil || u.Domains != 1 {
		t.Fatalf("count after removal: got %d %v, want 1", u.Domains, err)
	}
	if _, added, err := s.AddDomain(ctx, a, NewDomain{Host: "three.example", Port: 443}); err != nil || !added {
		t.Fatalf("add after removal: got added=%v %v, want added", added, err)
	}
}

// TestDomainTenants: a tenant is found by its index of ids, or by its
// hash of names of layout 1 until the index build deletes it; a tenant
// whose domains are all gone is not, nor are other keys of the family.
func TestDomainTenants(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a, b, c, gone := events.TenantID("a@example.com"), events.TenantID("b@example.com"),
		events.TenantID("c@example.com"), events.TenantID("gone@example.com")
	if _, _, err := s.AddDomain(ctx, a, NewDomain{Host: "a.example", Port: 443, Tags: []string{"created", "domains"}}); err != nil {
		t.Fatal(err)
	}
	// Both families for b: listed once.
	if _, _, err := s.AddDomain(ctx, b, NewDomain{Host: "b.example", Port: 443}); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{b, c} {
		if err := rdb.HSet(ctx, legacyDomainsKey(tenant), "legacy.example:443", "5f8b1b1e-54b8-4c4e-9c1a-000000000001").Err(); err != nil {
			t.Fatal(err)
		}
	}
	d, _, err := s.AddDomain(ctx, gone, NewDomain{Host: "gone.example", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveDomain(ctx, gone, d.ID); err != nil {
		t.Fatal(err)
	}
	got, err := DomainTenants(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{a, b, c}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("tenants: got %v, want %v", got, want)
	}
	if n := rdb.Exists(ctx, domainindex.TagKey(a, "created"), domainindex.TagKey(a, "domains")).Val(); n != 2 {
		t.Fatalf("tag keys: got %d, want 2 (the test needs them)", n)
	}
}
