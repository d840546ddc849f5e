package accounts

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
)

func ptr[T any](v T) *T { return &v }

// redisState is what a refused command must leave untouched.
func redisState(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			out[k] = strings.Join(sortedPairs(rdb.HGetAll(ctx, k).Val()), ",")
		case "stream":
			out[k] = fmt.Sprintf("stream of %d", rdb.XLen(ctx, k).Val())
		case "zset":
			out[k] = fmt.Sprint(rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		case "set":
			m := rdb.SMembers(ctx, k).Val()
			sort.Strings(m)
			out[k] = strings.Join(m, ",")
		default:
			out[k] = typ
		}
	}
	return out
}

func sortedPairs(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func TestAddDomainIsIdempotentAndPerTenant(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")

	d1, added, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443, Notes: "prod", Tags: []string{"web"}, Source: "api"})
	if err != nil || !added {
		t.Fatalf("first add: got added=%v err=%v, want added", added, err)
	}
	if u, err := uuid.Parse(d1.ID); err != nil || u.Version() != 4 {
		t.Errorf("domain id: got %s, want a random (v4) UUID", d1.ID)
	}
	d2, added, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443})
	if err != nil || added || d2.ID != d1.ID || d2.Notes != "prod" || d2.Source != "api" {
		t.Fatalf("second add: got %+v added=%v err=%v, want %s as first added, not added", d2, added, err, d1.ID)
	}
	dB, added, err := s.AddDomain(ctx, b, NewDomain{Host: "example.com", Port: 443})
	if err != nil || !added || dB.ID == d1.ID || dB.Source != Source || len(dB.Tags) != 0 || dB.Tags == nil {
		t.Fatalf("add by another tenant: got %+v added=%v err=%v, want a new keychest domain without tags", dB, added, err)
	}
	if got, err := s.LookupDomain(ctx, a, "example.com", 443); err != nil || got != d1.ID {
		t.Errorf("lookup by owner: got %q %v, want %s", got, err, d1.ID)
	}
	if _, err := s.LookupDomain(ctx, a, "example.com", 8443); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("lookup of another port: got %v, want ErrUnknownDomain", err)
	}
	got, err := s.GetDomain(ctx, a, d1.ID)
	if err != nil || !reflect.DeepEqual(got, d1) {
		t.Errorf("get: got %+v %v, want %+v", got, err, d1)
	}
	for _, tc := range []struct{ name, tenant, id string }{
		{"other tenant", b, d1.ID},
		{"unknown id", a, uuid.NewString()},
		{"not a uuid", a, "../" + d1.ID},
		{"no tenant", "", d1.ID},
	} {
		if _, err := s.GetDomain(ctx, tc.tenant, tc.id); !errors.Is(err, ErrUnknownDomain) {
			t.Errorf("get, %s: got %v, want ErrUnknownDomain", tc.name, err)
		}
	}

	evs := streamEvents(t, rdb)
	if len(evs) != 2 {
		t.Fatalf("events: got %d, want 2 (one domain.added per tenant)", len(evs))
	}
	// The two tenants' events are on two streams: of one millisecond,
	// they read in either order.
	ev := evs[0]
	if ev.TenantID != a {
		ev = evs[1]
	}
	var p events.DomainAddedV1
	if err := ev.Decode(&p); err != nil {
		t.Fatal(err)
	}
	want := events.DomainAddedV1{DomainID: d1.ID, Host: "example.com", Port: 443, Source: "api", Notes: "prod", Tags: []string{"web"}}
	if ev.Name != events.DomainAdded || ev.TenantID != a || ev.AggregateID != d1.ID || !reflect.DeepEqual(p, want) {
		t.Errorf("domain.added: got %+v %+v, want tenant %s %+v", ev, p, a, want)
	}
}

func TestDomainLimits(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a := events.TenantID("a@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		notes     string
		tags      []string
		wantField string
	}{
		{"notes at the limit (characters, not bytes)", strings.Repeat("é", MaxNotesLen), nil, ""},
		{"notes too long", strings.Repeat("n", MaxNotesLen+1), nil, "notes"},
		{"ten tags of 50", "", strings.Split(strings.Repeat(strings.Repeat("t", MaxTagLen)+",", MaxTags-1)+"x", ","), ""},
		{"eleven tags", "", strings.Split("a,b,c,d,e,f,g,h,i,j,k", ","), "tags"},
		{"tag too long", "", []string{strings.Repeat("t", MaxTagLen+1)}, "tags"},
		{"empty tag", "", []string{"ok", ""}, "tags"},
		{"notes of several lines and tabs", "first\n\tsecond\n", nil, ""},
		{"notes with NUL", "a\x00b", nil, "notes"},
		{"notes with escape sequences", "\x1b[31mred\a", nil, "notes"},
		{"notes with CR", "line\rover", nil, "notes"},
		{"notes with C1 CSI", "\u009b2J", nil, "notes"},
		{"tag with NUL", "", []string{"a\x00b"}, "tags"},
		{"tag with line feed", "", []string{"ok", "a\nb"}, "tags"},
		{"tag with DEL", "", []string{"a\x7f"}, "tags"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := redisState(t, rdb)
			_, _, err := s.AddDomain(ctx, a, NewDomain{Host: "other.example", Port: 443, Notes: tc.notes, Tags: tc.tags})
			_, uerr := s.UpdateDomain(ctx, a, d.ID, DomainPatch{Notes: &tc.notes, Tags: &tc.tags})
			if tc.wantField == "" {
				if err != nil || uerr != nil {
					t.Fatalf("add, update: got %v, %v, want nil", err, uerr)
				}
				if _, err := s.RemoveDomain(ctx, a, mustLookup(t, s, a, "other.example")); err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, err := range []error{err, uerr} {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.wantField {
					t.Errorf("got %v, want a FieldError on %s", err, tc.wantField)
				}
			}
			if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
				t.Errorf("refused add/update wrote to redis:\n got %v\nwant %v", after, before)
			}
		})
	}
}

func mustLookup(t *testing.T, s *Store, tenant, host string) string {
	t.Helper()
	id, err := s.LookupDomain(context.Background(), tenant, host, 443)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestUpdateDomain(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "old.example", Port: 443, Notes: "n", Tags: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := s.AddDomain(ctx, a, NewDomain{Host: "taken.example", Port: 8443})
	if err != nil {
		t.Fatal(err)
	}

	// Rename: the id stays, the old name is free, the new one points here.
	got, err := s.UpdateDomain(ctx, a, d.ID, DomainPatch{Host: ptr("new.example"), Port: ptr(8443), Active: ptr(false)})
	if err != nil {
		t.Fatalf("rename: %v", err)
	}
	if got.ID != d.ID || got.Host != "new.example" || got.Port != 8443 || got.Active || got.Notes != "n" ||
		!reflect.DeepEqual(got.Tags, []string{"x"}) || !got.CreatedAt.Equal(d.CreatedAt) {
		t.Errorf("renamed: got %+v, want new.example:8443 inactive, notes and tags kept", got)
	}
	if read, err := s.GetDomain(ctx, a, d.ID); err != nil || !reflect.DeepEqual(read, got) {
		t.Errorf("read after rename: got %+v %v, want %+v", read, err, got)
	}
	if _, err := s.LookupDomain(ctx, a, "old.example", 443); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("old name after rename: got %v, want ErrUnknownDomain", err)
	}
	if id, err := s.LookupDomain(ctx, a, "new.example", 8443); err != nil || id != d.ID {
		t.Errorf("new name after rename: got %s %v, want %s", id, err, d.ID)
	}
	evs := streamEvents(t, rdb)
	last := evs[len(evs)-1]
	var p events.DomainUpdatedV1
	if err := last.Decode(&p); err != nil {
		t.Fatal(err)
	}
	want := events.DomainUpdatedV1{DomainID: d.ID, Host: "new.example", Port: 8443, Active: false, Notes: "n", Tags: []string{"x"}}
	if last.Name != events.DomainUpdated || last.AggregateID != d.ID || last.TenantID != a || !reflect.DeepEqual(p, want) {
		t.Errorf("domain.updated: got %s %+v, want %+v", last.Name, p, want)
	}

	// Refusals write nothing.
	before := redisState(t, rdb)
	for _, tc := range []struct {
		name   string
		tenant string
		id     string
		patch  DomainPatch
		want   error
	}{
		{"rename onto another domain", a, d.ID, DomainPatch{Host: ptr("taken.example")}, ErrDomainExists},
		{"other tenant", b, d.ID, DomainPatch{Notes: ptr("mine")}, ErrUnknownDomain},
		{"unknown id", a, uuid.NewString(), DomainPatch{Notes: ptr("x")}, ErrUnknownDomain},
	} {
		if _, err := s.UpdateDomain(ctx, tc.tenant, tc.id, tc.patch); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A patch that changes nothing writes nothing either.
	if same, err := s.UpdateDomain(ctx, a, d.ID, DomainPatch{Host: ptr("new.example"), Notes: ptr("n")}); err != nil || !reflect.DeepEqual(same, got) {
		t.Errorf("no-op update: got %+v %v, want %+v", same, err, got)
	}
	if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
		t.Errorf("refused updates wrote to redis:\n got %v\nwant %v", after, before)
	}

	// The old name can be added again, as a new domain.
	again, added, err := s.AddDomain(ctx, a, NewDomain{Host: "old.example", Port: 443})
	if err != nil || !added || again.ID == d.ID {
		t.Errorf("add old name again: got %+v added=%v err=%v, want a new domain", again, added, err)
	}
	list, err := s.ListDomains(ctx, a)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: got %d domains %v, want 3", len(list), err)
	}
	ids := map[string]bool{}
	for _, l := range list {
		ids[l.ID] = true
	}
	if !ids[d.ID] || !ids[other.ID] || !ids[again.ID] {
		t.Errorf("list: got %v, want %s, %s and %s", ids, d.ID, other.ID, again.ID)
	}
	if l, err := s.ListDomains(ctx, b); err != nil || len(l) != 0 {
		t.Errorf("list of another tenant: got %v %v, want none", l, err)
	}
}

// Replicas patching different fields of one domain at once: every patch
// lands, none overwrites another's field with the value it read.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	s2, err := New(Config{}, s.rdb, s.logger)
	if err != nil {
		t.Fatal(err)
	}
	a := events.TenantID("a@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	patches := []DomainPatch{
		{Host: ptr("renamed.example")},
		{Port: ptr(8443)},
		{Active: ptr(false)},
		{Notes: ptr("notes")},
		{Tags: &[]string{"tag"}},
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(patches))
	for i, p := range patches {
		store := []*Store{s, s2}[i%2]
		wg.Go(func() {
			_, err := store.UpdateDomain(ctx, a, d.ID, p)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("update: %v", err)
		}
	}
	got, err := s.GetDomain(ctx, a, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != "renamed.example" || got.Port != 8443 || got.Active || got.Notes != "notes" || !reflect.DeepEqual(got.Tags, []string{"tag"}) {
		t.Errorf("after concurrent patches: got %+v, want every patch applied", got)
	}
	if got.rev != int64(len(patches)) { // a new record has none (0), each update counts one
		t.Errorf("rev: got %d, want %d", got.rev, len(patches))
	}
	if id, err := s.LookupDomain(ctx, a, "renamed.example", 8443); err != nil || id != d.ID {
		t.Errorf("index: got %s %v, want renamed.example:8443 -> %s", id, err, d.ID)
	}
	if n := s.rdb.ZCard(ctx, domainindex.HostKey(a)).Val(); n != 1 {
		t.Errorf("index entries: got %d, want 1", n)
	}
}

func TestRemoveDomain(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 8443})
	if err != nil {
		t.Fatal(err)
	}
	before := redisState(t, rdb)
	if _, err := s.RemoveDomain(ctx, b, d.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("remove by other tenant: got %v, want ErrUnknownDomain", err)
	}
	if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
		t.Errorf("refused remove wrote to redis:\n got %v\nwant %v", after, before)
	}
	if got, err := s.RemoveDomain(ctx, a, d.ID); err != nil || got.ID != d.ID {
		t.Fatalf("remove: got %+v %v", got, err)
	}
	if _, err := s.GetDomain(ctx, a, d.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("get after remove: got %v, want ErrUnknownDomain", err)
	}
	if _, err := s.RemoveDomain(ctx, a, d.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("second remove: got %v, want ErrUnknownDomain", err)
	}
	if n := rdb.Exists(ctx, domainKey(a, d.ID), domainindex.HostKey(a), domainindex.CreatedKey(a)).Val(); n != 0 {
		t.Errorf("keys left after remove: got %d, want 0", n)
	}
	evs := streamEvents(t, rdb)
	last := evs[len(evs)-1]
	var p events.DomainRemovedV1
	if err := last.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if last.Name != events.DomainRemoved || p != (events.DomainRemovedV1{DomainID: d.ID, Host: "example.com", Port: 8443}) {
		t.Errorf("domain.removed: got %s %+v", last.Name, p)
	}
	if len(evs) != 2 {
		t.Errorf("events: got %d, want added and removed", len(evs))
	}
}

// Replicas adding one name at once: one domain, one event, one id for all.
func TestConcurrentAddsOfOneDomain(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a := events.TenantID("a@example.com")
	const n = 20
	type result struct {
		id    string
		added bool
		err   error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			d, added, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443})
			results <- result{d.ID, added, err}
		})
	}
	wg.Wait()
	close(results)
	ids, added := map[string]bool{}, 0
	for r := range results {
		if r.err != nil {
			t.Fatalf("add: %v", r.err)
		}
		ids[r.id] = true
		if r.added {
			added++
		}
	}
	if len(ids) != 1 || added != 1 {
		t.Errorf("got %d ids and %d adds, want 1 and 1", len(ids), added)
	}
	if evs := streamEvents(t, rdb); len(evs) != 1 {
		t.Errorf("events: got %d, want 1", len(evs))
	}
}

func TestRequestCheck(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")
	d, _, err := s.AddDomain(ctx, a, NewDomain{Host: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	off, _, err := s.AddDomain(ctx, a, NewDomain{Host: "off.example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateDomain(ctx, a, off.ID, DomainPatch{Active: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, tenant, id string
		want             error
	}{
		{"other tenant", b, d.ID, ErrUnknownDomain},
		{"unknown", a, "no-such-domain", ErrUnknownDomain},
		{"inactive", a, off.ID, ErrDomainInactive},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			before := redisState(t, rdb)
			if err := s.RequestCheck(ctx, tc.tenant, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if after := redisState(t, rdb); !reflect.DeepEqual(after, before) {
				t.Errorf("refused request wrote to redis:\n got %v\nwant %v", after, before)
			}
		})
	}
	if err := s.RequestCheck(ctx, a, d.ID); err != nil {
		t.Fatalf("request check: %v", err)
	}
	evs := streamEvents(t, rdb)
	last := evs[len(evs)-1]
	var p events.DomainCheckRequestedV1
	if err := last.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if last.Name != events.DomainCheckRequested || last.TenantID != a || last.AggregateID != d.ID || p.DomainID != d.ID {
		t.Errorf("check requested: got %s tenant %s aggregate %s %+v, want %s tenant %s aggregate %s",
			last.Name, last.TenantID, last.AggregateID, p, events.DomainCheckRequested, a, d.ID)
	}
}
