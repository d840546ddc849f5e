package accounts

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// recordReads counts the record reads a client sends in pipelines and
// transactions (the record cache's; the test's own are sent one by
// one): HMGETs of every record field (whole) and of revFields (checks).
type recordReads struct{ whole, checks atomic.Int64 }

func (h *recordReads) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *recordReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *recordReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() != "hmget" {
				continue
			}
			switch len(c.Args()) - 2 {
			case len(recordFields):
				h.whole.Add(1)
			case len(revFields):
				h.checks.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// A RecordCache answers what decoding every listed record whole when the
// page was listed answers, at every step of the records' life (added,
// unchanged, updated, released by an approval, listed by another tenant,
// removed): a page at the generation its domains are kept at reads
// nothing; after the generation moved, a kept domain's rev is read
// again, and a record is read whole only when that moved too; a record
// that may have changed between its page's list and its own read shows
// changed, with the newer record.
func TestRecordCache(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{HoldClaims: true}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	reads := &recordReads{}
	rdb.AddHook(reads)
	a, err := s.EnsureAccount(ctx, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	b := events.TenantID("b@example.com")
	for _, h := range []string{"one.example", "two.example", "three.example"} {
		if _, _, err := s.AddDomain(ctx, a, NewDomain{Host: h, Port: 443, Tags: []string{"x"}, Notes: "n " + h}); err != nil {
			t.Fatal(err)
		}
	}
	bd, _, err := s.AddDomain(ctx, b, NewDomain{Host: "b.example", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rc := NewRecordCache(0)
	rc.now = func() time.Time { return now }
	// decode is what each of ids decodes to now, read whole.
	decode := func(tenant string, ids []string) ([]Domain, []bool) {
		t.Helper()
		out, ok := make([]Domain, len(ids)), make([]bool, len(ids))
		for i, id := range ids {
			var err error
			if out[i], ok[i], err = DecodeListed(tenant, id, recordMap(rdb.HMGet(ctx, domainKey(tenant, id), recordFields...).Val())); err != nil {
				t.Fatal(err)
			}
		}
		return out, ok
	}
	// listed is a page as the API lists it: its generation, its ids (and
	// extra ids, as if the index held them) and their records then.
	type listed struct {
		gen  string
		ids  []string
		want []Domain
		ok   []bool
	}
	page := func(tenant string, extra ...string) listed {
		t.Helper()
		p, err := domainindex.List(ctx, rdb, tenant, DomainKeyPrefix(tenant), domainindex.Query{
			Sort: domainindex.SortHostname, Limit: 100, Now: time.Now(), Warning: 30, Critical: 7})
		if err != nil {
			t.Fatal(err)
		}
		if p.Gen == "" {
			t.Fatal("a page without the record generation")
		}
		l := listed{gen: p.Gen, ids: append(p.IDs, extra...)}
		l.want, l.ok = decode(tenant, l.ids)
		return l
	}
	// check lists page l of tenant through the cache: with changed, the
	// records as they are now, else as l listed them.
	check := func(step, tenant string, l listed, wantChecks, wantWhole int, wantChanged bool) {
		t.Helper()
		reads.whole.Store(0)
		reads.checks.Store(0)
		got, ok, changed, err := rc.Listed(ctx, rdb, tenant, l.gen, l.ids)
		if err != nil {
			t.Fatal(err)
		}
		if c, w := int(reads.checks.Load()), int(reads.whole.Load()); c != wantChecks || w != wantWhole || changed != wantChanged {
			t.Errorf("%s: %d revs read, %d records read whole, changed %v; want %d, %d, %v", step, c, w, changed, wantChecks, wantWhole, wantChanged)
		}
		want, wantOK := l.want, l.ok
		if changed {
			want, wantOK = decode(tenant, l.ids)
		}
		for i, id := range l.ids {
			if ok[i] != wantOK[i] || (ok[i] && !reflect.DeepEqual(got[i], want[i])) {
				t.Errorf("%s: %s: got %+v (ok %v), want %+v (ok %v)", step, id, got[i], ok[i], want[i], wantOK[i])
			}
		}
	}
	l := page(a)
	check("first page", a, l, 0, 3, false)
	check("unchanged", a, page(a), 0, 0, false)
	// An update moves the generation: each kept domain's rev is read, the
	// updated one read whole with its new notes.
	if _, err := s.UpdateDomain(ctx, a, l.ids[1], DomainPatch{Notes: ptr("changed")}); err != nil {
		t.Fatal(err)
	}
	l = page(a)
	if l.want[1].Notes != "changed" {
		t.Fatalf("the update not listed: %+v", l.want[1])
	}
	check("updated", a, l, 3, 1, false)
	check("updated, unchanged since", a, page(a), 0, 0, false)
	// A record that changes after its page was listed: the page shows
	// what it listed, as kept at its generation...
	l = page(a)
	if _, err := s.UpdateDomain(ctx, a, l.ids[2], DomainPatch{Tags: &[]string{"y"}}); err != nil {
		t.Fatal(err)
	}
	check("changed after the page, kept", a, l, 0, 0, false)
	// ... and when not kept, the newer record, changed.
	warm := rc
	rc = NewRecordCache(0)
	rc.now = warm.now
	check("changed after the page, not kept", a, l, 0, 3, true)
	rc = warm
	// Past RecordRecheck a kept domain's rev is read again, even at its
	// generation.
	l = page(a)
	check("after the update", a, l, 3, 1, false)
	now = now.Add(RecordRecheck)
	check("past the recheck", a, page(a), 3, 0, false)
	// An approval releases a held key's domain: its held_by goes, the
	// generation moves.
	key, err := s.ClaimNew(ctx, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, key)
	if err != nil || !p.Held {
		t.Fatalf("a held key: %+v %v", p, err)
	}
	if _, _, err := s.AddDomain(ctx, a, NewDomain{Host: "held.example", Port: 443, HeldBy: p.KeyID}); err != nil {
		t.Fatal(err)
	}
	// An add makes a new id and leaves the generation: the others stay
	// kept.
	check("a held domain added", a, page(a), 0, 1, false)
	if _, err := s.ApproveKey(ctx, a, p.KeyID); err != nil {
		t.Fatal(err)
	}
	l = page(a)
	for _, d := range l.want {
		if d.HeldBy != "" {
			t.Fatalf("approved, still held: %+v", d)
		}
	}
	check("approved", a, l, 4, 1, false)
	// Another tenant's domain in the page: never its, even when kept
	// (listed by its own tenant first).
	check("the other tenant's page", b, page(b), 0, 1, false)
	check("another tenant's id", a, page(a, bd.ID), 0, 1, false)
	// A removed domain: no longer listed; a page listed before the removal
	// shows it as listed; once the generation moved, it is gone.
	before := page(a)
	removed := before.ids[0]
	if _, err := s.RemoveDomain(ctx, a, removed); err != nil {
		t.Fatal(err)
	}
	for _, id := range page(a).ids {
		if id == removed {
			t.Fatal("a removed domain listed")
		}
	}
	check("removed after its page", a, before, 0, 0, false)
	if _, err := s.UpdateDomain(ctx, a, before.ids[1], DomainPatch{Notes: ptr("again")}); err != nil {
		t.Fatal(err)
	}
	gone := page(a, removed)
	if gone.ok[len(gone.ok)-1] {
		t.Fatal("a removed domain decodes")
	}
	check("a removed domain, the generation moved", a, gone, 4, 2, false)
}
