package accounts

import (
	"context"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
)

// hmgetCounter counts the HMGET commands a client sends in pipelines: the
// record cache's reads (the list script's own are inside its EVALSHA, the
// test's own are sent one by one).
type hmgetCounter struct{ n atomic.Int64 }

func (h *hmgetCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *hmgetCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *hmgetCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "hmget" {
				h.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// A RecordCache answers what decoding every listed record whole answers,
// at every step of the records' life (added, unchanged, updated, listed
// by another tenant, removed), and reads a record whole only when its rev
// is not the kept one: an unchanged record is a hit. A record that
// changed between its page's read and its own shows changed.
func TestRecordCache(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	count := &hmgetCounter{}
	rdb.AddHook(count)
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")
	for _, h := range []string{"one.example", "two.example", "three.example"} {
		if _, _, err := s.AddDomain(ctx, a, NewDomain{Host: h, Port: 443, Tags: []string{"x"}, Notes: "n " + h}); err != nil {
			t.Fatal(err)
		}
	}
	bd, _, err := s.AddDomain(ctx, b, NewDomain{Host: "b.example", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	rc := NewRecordCache(0)
	// page lists tenant's domains as the API does, with RevFields (and
	// extra ids, listed as if the index held them).
	page := func(tenant string, extra ...string) ([]string, []map[string]string) {
		t.Helper()
		p, err := domainindex.List(ctx, rdb, tenant, DomainKeyPrefix(tenant), domainindex.Query{
			Sort: domainindex.SortHostname, Limit: 100, Now: time.Now(), Warning: 30, Critical: 7, Fields: RevFields})
		if err != nil {
			t.Fatal(err)
		}
		revs := make([]map[string]string, 0, len(p.Rows)+len(extra))
		for _, r := range p.Rows {
			revs = append(revs, r.Record)
		}
		for _, id := range extra {
			r := rdb.HMGet(ctx, domainKey(tenant, id), RevFields...).Val()
			rec := map[string]string{}
			for i, v := range r {
				if s, ok := v.(string); ok {
					rec[RevFields[i]] = s
				}
			}
			revs = append(revs, rec)
		}
		return append(p.IDs, extra...), revs
	}
	// check lists tenant's page through the cache and compares with
	// decoding each record whole now.
	check := func(step, tenant string, wantReads int, wantChanged bool, ids []string, revs []map[string]string) {
		t.Helper()
		count.n.Store(0)
		got, ok, changed, err := rc.Listed(ctx, rdb, tenant, ids, revs)
		if err != nil {
			t.Fatal(err)
		}
		if n := int(count.n.Load()); n != wantReads || changed != wantChanged {
			t.Errorf("%s: %d records read whole, changed %v; want %d, %v", step, n, changed, wantReads, wantChanged)
		}
		for i, id := range ids {
			want, wantOK, err := DecodeListed(tenant, id, recordMap(rdb.HMGet(ctx, domainKey(tenant, id), recordFields...).Val()))
			if err != nil {
				t.Fatal(err)
			}
			if ok[i] != wantOK || (wantOK && !reflect.DeepEqual(got[i], want)) {
				t.Errorf("%s: %s: got %+v (ok %v), want %+v (ok %v)", step, id, got[i], ok[i], want, wantOK)
			}
		}
	}
	ids, revs := page(a)
	check("first page", a, 3, false, ids, revs)
	ids, revs = page(a)
	check("unchanged", a, 0, false, ids, revs)
	// An update moves the record's rev: read again, the new notes shown.
	if _, err := s.UpdateDomain(ctx, a, ids[1], DomainPatch{Notes: ptr("changed")}); err != nil {
		t.Fatal(err)
	}
	ids, revs = page(a)
	check("updated", a, 1, false, ids, revs)
	check("updated, unchanged since", a, 0, false, ids, revs)
	// A record that changes after its page was read, and is not kept at
	// the page's rev: changed, the newer record shown.
	stale := slices.Clone(revs)
	if _, err := s.UpdateDomain(ctx, a, ids[2], DomainPatch{Tags: &[]string{"y"}}); err != nil {
		t.Fatal(err)
	}
	rc = NewRecordCache(0)
	check("changed after the page", a, 3, true, ids, stale)
	// Another tenant's domain in the page: never its, even when kept
	// (listed by its own tenant first).
	bids, brevs := page(b)
	check("the other tenant's page", b, 1, false, bids, brevs)
	ids, revs = page(a, bd.ID)
	check("another tenant's id", a, 1, false, ids, revs)
	// A removed domain: no longer listed; read whole when its stale page
	// asks (it is not kept at rev 0), and then not the tenant's.
	if _, err := s.RemoveDomain(ctx, a, ids[0]); err != nil {
		t.Fatal(err)
	}
	removed := ids[0]
	ids, revs = page(a)
	if slices.Contains(ids, removed) {
		t.Fatal("a removed domain listed")
	}
	check("after a removal", a, 0, false, ids, revs)
	check("a removed domain's stale row", a, 1, true, []string{removed}, []map[string]string{{"rev": "5", tenantField: storedTenant(a)}})
}
