package domainindex_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestMember: Member and IDOf are shortid.Bytes and FromBytes (tested and
// fuzzed there), with the index's word for a refused id.
func TestMember(t *testing.T) {
	const id = "ce4b8fcb-bf37-5359-bf44-24de995c8d4a"
	if m, err := domainindex.Member(id); err != nil || len(m) != 16 || domainindex.IDOf(m) != id {
		t.Errorf("Member(%q) = %q, %v: want 16 bytes that IDOf reads back", id, m, err)
	}
	if m, err := domainindex.Member("0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "index cannot keep it") {
		t.Errorf("Member of a 16-byte id = %q, %v: want the index's refusal", m, err)
	}
}

// TestBuildIndexesLayout2: an index of layout 2 (ids as text) lists, is
// rebuilt at start in this layout, keeps no member of the old one, and
// lists the same pages; a cursor issued before still pages on.
func TestBuildIndexesLayout2(t *testing.T) {
	l := newLab(t, 4)
	l.add(90)
	l.project()
	l.scanSome(50)
	qs := l.queries()
	// Searches read the label members, which carry created_at since
	// layout 4: an index of layout 2 answers them only once rebuilt,
	// which an API server does before it serves.
	pages := func(search bool) [][]string {
		var out [][]string
		for _, q := range qs {
			if q.Search != "" && !search {
				continue
			}
			q.Limit = 7
			p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p.IDs)
		}
		return out
	}
	before, beforeAll := pages(false), pages(true)
	q := baseQuery()
	q.Sort, q.Limit = domainindex.SortHostname, 10
	first, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil || first.NextCursor == "" {
		t.Fatalf("first page: %+v %v", first, err)
	}
	q.Cursor = first.NextCursor
	second, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil {
		t.Fatal(err)
	}
	l.toLayout2()
	if got := pages(false); !slices.EqualFunc(got, before, slices.Equal) {
		t.Fatalf("layout 2 lists otherwise: got %v, want %v", got, before)
	}
	if n, err := projector.BuildIndexes(l.ctx, l.rdb, false, testenv.Logger(t)); err != nil || n != 1 {
		t.Fatalf("start: built %d, %v; want 1", n, err)
	}
	n := len(l.rows())
	for _, key := range []string{domainindex.HostKey(l.tenant), domainindex.CreatedKey(l.tenant)} {
		ms := domainindex.OrderMembers(l.ctx, l.rdb, key)
		if len(ms) != n {
			t.Fatalf("%s: got %d members, want %d", key, len(ms), n)
		}
		for _, m := range ms {
			id := m
			if key == domainindex.HostKey(l.tenant) {
				id = m[strings.IndexByte(m, ' ')+7:]
			}
			if len(id) != 16 {
				t.Fatalf("%s: member %q of layout 2 left", key, m)
			}
		}
	}
	if got := pages(true); !slices.EqualFunc(got, beforeAll, slices.Equal) {
		t.Fatalf("rebuilt lists otherwise: got %v, want %v", got, before)
	}
	again, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil || !slices.Equal(again.IDs, second.IDs) {
		t.Fatalf("cursor of layout 2: got %v %v, want %v", again.IDs, err, second.IDs)
	}
	l.checkAll()
}

// toLayout2 rewrites the lab's tenant's index as layout 2 kept it: ids
// as text in every member, marked built with "2".
func (l *lab) toLayout2() {
	l.t.Helper()
	pre := domainindex.Prefix(l.tenant)
	keys, err := l.rdb.Keys(l.ctx, pre+"*").Result()
	if err != nil {
		l.t.Fatal(err)
	}
	// Layout 2 kept every order plain.
	var plain []string
	for _, k := range keys {
		if strings.Contains(k, "\x01") {
			continue
		}
		if err := domainindex.Unbucket(l.ctx, l.rdb, k); err != nil {
			l.t.Fatal(err)
		}
		plain = append(plain, k)
	}
	keys = plain
	text := func(key, m string) string {
		switch strings.TrimPrefix(key, pre) {
		case "host":
			i := strings.IndexByte(m, ' ') + 7
			return m[:i] + domainindex.IDOf(m[i:])
		case "sfx": // layout 2's had no created_at
			i := strings.IndexByte(m, ' ') + 1
			return m[:i] + domainindex.IDOf(m[i+6:])
		case "tags":
			return m
		}
		return domainindex.IDOf(m)
	}
	for _, k := range keys {
		rest := strings.TrimPrefix(k, pre)
		if rest == "tiers" || slices.ContainsFunc(domainindex.Tiers(), func(t domainindex.TierDef) bool {
			return strings.HasPrefix(rest, t.Name+":")
		}) { // layout 2 had no attention index
			l.rdb.Del(l.ctx, k)
			continue
		}
		switch l.rdb.Type(l.ctx, k).Val() {
		case "zset":
			zs := l.rdb.ZRangeWithScores(l.ctx, k, 0, -1).Val()
			l.rdb.Del(l.ctx, k)
			for _, z := range zs {
				l.rdb.ZAdd(l.ctx, k, redis.Z{Score: z.Score, Member: text(k, z.Member.(string))})
			}
		case "set":
			ms := l.rdb.SMembers(l.ctx, k).Val()
			l.rdb.Del(l.ctx, k)
			for _, m := range ms {
				l.rdb.SAdd(l.ctx, k, text(k, m))
			}
		}
	}
	if err := l.rdb.Set(l.ctx, pre+"built", "2", 0).Err(); err != nil {
		l.t.Fatal(err)
	}
}

// TestLookupAnyByte: a name whose id's member starts with any byte, 0xff
// too, is found, and only for its own host:port.
func TestLookupAnyByte(t *testing.T) {
	l := newLab(t, 5)
	for i, id := range []string{"ffffffff-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000"} {
		m, err := domainindex.Member(id)
		if err != nil {
			t.Fatal(err)
		}
		host := []string{"a.example", "b.example"}[i]
		l.rdb.ZAdd(l.ctx, domainindex.HostKey(l.tenant), redis.Z{Member: host + " 00443 " + m})
		if got := domainindex.LookupID(domainindex.LookupCmd(l.ctx, l.rdb, l.tenant, host, 443)); got != id {
			t.Errorf("lookup of %s: got %q, want %q", host, got, id)
		}
		if got := domainindex.LookupID(domainindex.LookupCmd(l.ctx, l.rdb, l.tenant, host, 44)); got != "" {
			t.Errorf("lookup of %s:44: got %q, want none", host, got)
		}
	}
}
