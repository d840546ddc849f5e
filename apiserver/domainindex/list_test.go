package domainindex_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

var (
	now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	th  = grade.Thresholds{Warning: 30, Critical: 7}
)

// lab is one tenant's domains on a real Redis (a one-node cluster, which
// refuses any script that crosses slots), with the projector applying
// their events as a running one does.
type lab struct {
	t      *testing.T
	ctx    context.Context
	rdb    *redis.Client
	store  *accounts.Store
	proj   *projector.Projector
	tenant string
	rng    *rand.Rand
	// applied counts the stream's events already applied.
	applied int
	// chosen counts the pages listed under each plan the script chose;
	// walked counts the pages that walked a tier of the attention index,
	// by "<sort> <tier> <plan>" (the plan forced, or "chosen").
	chosen, walked map[string]int
	// tagOrders counts the tags' orders checkTagOrders found: by
	// hostname, certificate and registration expiry.
	tagOrders [3]int
}

func newLab(t *testing.T, seed uint64) *lab {
	t.Helper()
	rdb := testenv.RedisCluster(t).Client(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	// created_at ties: the clock moves by whole seconds, often not at all.
	clock := now.Add(-400 * 24 * time.Hour)
	store, err := accounts.New(accounts.Config{Now: func() time.Time {
		clock = clock.Add(time.Duration(rng.IntN(3)) * time.Second)
		return clock
	}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	proj, err := projector.New(projector.Config{Consumer: "test"}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &lab{t: t, ctx: context.Background(), rdb: rdb, store: store, proj: proj,
		tenant: events.TenantID("lab@example.com"), rng: rng, chosen: map[string]int{}, walked: map[string]int{}}
}

var (
	labels = []string{"api", "www", "shop", "mail", "app", "a", "ab", "shopping"}
	regs   = []string{"alpha.example", "beta.example", "shop.example", "gamma.co.uk"}
)

// randomHost is a host from a small vocabulary, so searches and
// registrations are shared.
func (l *lab) randomHost() string {
	if l.rng.IntN(25) == 0 {
		return fmt.Sprintf("192.0.2.%d", l.rng.IntN(250)+1)
	}
	h := regs[l.rng.IntN(len(regs))]
	for range l.rng.IntN(3) {
		h = labels[l.rng.IntN(len(labels))] + "." + h
	}
	return h
}

// add adds n domains in one bulk add and returns their ids.
// labTags are the tags the lab's domains carry, none to two each.
var labTags = []string{"prod", "edge", "team a", `naïve "q" <&>`}

func (l *lab) randomTags() []string {
	var tags []string
	for _, t := range labTags {
		if l.rng.IntN(3) == 0 {
			tags = append(tags, t)
		}
	}
	return tags
}

func (l *lab) add(n int) {
	nds := make([]accounts.NewDomain, n)
	for i := range nds {
		nds[i] = accounts.NewDomain{Host: l.randomHost(), Port: []int{443, 443, 8443}[l.rng.IntN(3)], Tags: l.randomTags()}
	}
	res, err := l.store.AddDomains(l.ctx, l.tenant, nds)
	if err != nil {
		l.t.Fatal(err)
	}
	// As the handler does: the new domains' registrations show at once.
	var ids []string
	for _, r := range res {
		if r.Added {
			ids = append(ids, r.Domain.ID)
		}
	}
	if err := projector.SyncTenantIndex(l.ctx, l.rdb, l.tenant, ids); err != nil {
		l.t.Fatal(err)
	}
}

// project applies the stream's events not applied yet, then extra.
func (l *lab) project(extra ...events.Envelope) {
	l.t.Helper()
	all, err := events.ReadAllEvents(l.ctx, l.rdb)
	if err != nil {
		l.t.Fatal(err)
	}
	batch := append(all[l.applied:], extra...)
	l.applied = len(all)
	for from := 0; from < len(batch); from += 200 {
		if err := l.proj.ApplyBatch(l.ctx, batch[from:min(from+200, len(batch))]); err != nil {
			l.t.Fatal(err)
		}
	}
}

// notAfters are shared by many domains: ties in the ssl sort; some are
// before 1970 (negative scores).
func (l *lab) notAfter() time.Time {
	switch l.rng.IntN(13) {
	case 0:
		return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	case 12:
		return time.Date(1965, 1, 1+l.rng.IntN(3), 0, 0, 0, 0, time.UTC)
	case 1, 2, 3:
		return now.Add(time.Duration(l.rng.IntN(5)-2) * 24 * time.Hour)
	}
	return now.Add(time.Duration(l.rng.IntN(120*24)-10*24) * time.Hour).Add(time.Duration(l.rng.IntN(3)) * time.Minute)
}

// scan is a scan of d: some IPs with certificates (some invalid), some
// without, or nothing but failures.
func (l *lab) scan(d accounts.Domain, region string, at time.Time) events.Envelope {
	var results []events.IPResult
	for i := range 1 + l.rng.IntN(3) {
		r := events.IPResult{IP: fmt.Sprintf("198.51.100.%d", i+1), Outcome: events.OutcomeOK}
		if l.rng.IntN(6) == 0 {
			r.Outcome = events.OutcomeConnectionRefused
		} else {
			na := l.notAfter()
			r.CertificateFound, r.LeafSHA256 = true, fmt.Sprintf("%x", na.UnixNano())
			r.NotBefore, r.NotAfter = now.Add(-90*24*time.Hour), na
			r.KeyType, r.KeyBits, r.SignatureAlgorithm, r.TLSVersion = "ECDSA", 256, "ECDSA-SHA256", "TLS 1.3"
			r.ChainValid, r.HostnameValid = l.rng.IntN(8) != 0, l.rng.IntN(10) != 0
		}
		results = append(results, r)
	}
	job := uuid.New()
	ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, l.tenant, d.ID, events.ScanCompletedV1{
		JobID: job, DomainID: d.ID, Host: d.Host, Port: d.Port, Region: region,
		StartedAt: at.Add(-time.Second), FinishedAt: at, Results: results,
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return ev
}

// lookups are registration lookups of every registrable domain, some
// answered with an expiry, some without, some failed.
func (l *lab) lookups(at time.Time) []events.Envelope {
	var out []events.Envelope
	for _, reg := range regs {
		r := events.RegistrationV1{Domain: reg, LookedUpAt: at.UTC().Truncate(time.Millisecond)}
		switch l.rng.IntN(5) {
		case 0:
			r.Status = events.RegistrationNotFound
		case 1:
			r.Status = events.RegistrationRateLimited
		case 2:
			r.Status, r.Source = events.RegistrationNoExpiry, "rdap"
		default:
			exp := now.Add(time.Duration(l.rng.IntN(60*24)-5*24) * time.Hour).UTC().Truncate(time.Second)
			r.Status, r.Source, r.ExpiresAt = events.RegistrationOK, "rdap", &exp
		}
		ev, err := events.New(events.RegistrationLookedUp, "", reg, r)
		if err != nil {
			l.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// scanSome scans a share of the domains from two regions.
func (l *lab) scanSome(share int) {
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		l.t.Fatal(err)
	}
	var evs []events.Envelope
	for i, d := range ds {
		if l.rng.IntN(100) < share {
			evs = append(evs, l.scan(d, "eu", now.Add(-time.Duration(i+1)*time.Minute)))
			if l.rng.IntN(2) == 0 {
				evs = append(evs, l.scan(d, "us", now.Add(-time.Duration(i+1)*time.Minute)))
			}
		}
	}
	l.project(append(evs, l.lookups(now.Add(-time.Duration(l.rng.IntN(1000))*time.Second))...)...)
}

// row is the brute-force answer's view of one domain: what GET
// /domains shows, computed from the records and views as the handler
// does.
type row struct {
	id, host string
	port     int
	member   string
	created  int64
	// ssl, whois: the sort keys (ms), nil when the domain has no days.
	ssl, whois      *int64
	status, wstatus string
	tags            []string
}

func (l *lab) rows() []row { return l.rowsAt(now) }

// rowsAt is rows with days and statuses counted at the instant at.
func (l *lab) rowsAt(at time.Time) []row {
	l.t.Helper()
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		l.t.Fatal(err)
	}
	ids := make([]string, len(ds))
	hosts := make([]string, len(ds))
	for i, d := range ds {
		ids[i], hosts[i] = d.ID, projector.RegistrableOf(d.Host)
	}
	views, err := projector.Views(l.ctx, l.rdb, ids)
	if err != nil {
		l.t.Fatal(err)
	}
	regsByName, err := projector.ReadRegistrations(l.ctx, l.rdb, hosts)
	if err != nil {
		l.t.Fatal(err)
	}
	out := make([]row, len(ds))
	for i, d := range ds {
		sum := grade.Summarize(views[d.ID].For(d.Name()), at, th)
		r := row{id: d.ID, host: d.Host, port: d.Port, created: d.CreatedAt.UnixMilli(), status: sum.Status, tags: d.Tags,
			member: fmt.Sprintf("%s %05d %s", d.Host, d.Port, d.ID)}
		if d.CreatedAt.IsZero() {
			r.created = 0
		}
		if sum.DaysRemaining != nil {
			ms := sum.First.NotAfter.UnixMilli()
			r.ssl = &ms
		}
		exp, reason := projector.WhoisExpiry(d.Host, regsByName)
		if exp != nil {
			ms := exp.UnixMilli()
			r.whois = &ms
			switch days := grade.DaysUntil(*exp, at); {
			case days < 0:
				r.wstatus = grade.StatusExpired
			case days <= th.Critical:
				r.wstatus = grade.StatusCritical
			case days <= th.Warning:
				r.wstatus = grade.StatusWarning
			default:
				r.wstatus = grade.StatusValid
			}
		} else {
			r.wstatus = reason
		}
		out[i] = r
	}
	return out
}

// matches is the brute force's search: the hostname, or a label suffix
// that still has two labels, starts with the term.
func matches(host, term string) bool {
	if strings.HasPrefix(host, term) {
		return true
	}
	parts := strings.Split(host, ".")
	for i := 1; i < len(parts)-1; i++ {
		if strings.HasPrefix(strings.Join(parts[i:], "."), term) {
			return true
		}
	}
	return false
}

// want is the brute-force answer to q over rows.
func want(rows []row, q domainindex.Query) []string {
	var sel []row
	for _, r := range rows {
		if (q.Status == "" || r.status == q.Status) && (q.WhoisStatus == "" || r.wstatus == q.WhoisStatus) &&
			(q.Search == "" || matches(r.host, q.Search)) && (q.Tag == "" || slices.Contains(r.tags, q.Tag)) {
			sel = append(sel, r)
		}
	}
	dir := func(n int) int {
		if q.Desc {
			return -n
		}
		return n
	}
	nullable := func(a, b *int64, ida, idb string) int {
		switch {
		case a == nil && b == nil:
			return cmp.Compare(ida, idb)
		case a == nil:
			return 1
		case b == nil:
			return -1
		}
		return dir(cmp.Or(cmp.Compare(*a, *b), cmp.Compare(ida, idb)))
	}
	slices.SortFunc(sel, func(a, b row) int {
		switch q.Sort {
		case domainindex.SortHostname:
			return dir(cmp.Compare(a.member, b.member))
		case domainindex.SortCreated:
			return dir(cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.id, b.id)))
		case domainindex.SortSSLDays:
			return nullable(a.ssl, b.ssl, a.id, b.id)
		}
		return nullable(a.whois, b.whois, a.id, b.id)
	})
	out := make([]string, len(sel))
	for i, r := range sel {
		out[i] = r.id
	}
	return out
}

// check lists q to its end by cursor, in pages of random sizes, under
// each plan, and by offset, and compares with the brute force.
func (l *lab) check(rows []row, q domainindex.Query) {
	l.t.Helper()
	w := want(rows, q)
	byID := make(map[string]row, len(rows))
	for _, r := range rows {
		byID[r.id] = r
	}
	// "mixed" takes each page with another plan, and every other page
	// off the attention index: a cursor of one plan continues under any
	// other, and one of a walk of a tier in the walk of the whole index
	// and back.
	plans := []string{"read", "walk", "semi", "label", "semiread", "walkread"}
	for _, plan := range []string{"", "read", "walk", "semi", "label", "semiread", "walkread", "mixed"} {
		q := domainindex.WithPlan(q, plan)
		var got []string
		q.Cursor = ""
		for pages := 0; ; pages++ {
			q.Limit = 1 + l.rng.IntN(40)
			lq := q
			if plan == "mixed" {
				lq = domainindex.WithPlan(q, plans[pages%len(plans)])
				if pages%2 == 1 {
					lq = domainindex.WithoutAttention(lq)
				}
			}
			p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), lq)
			if err != nil {
				l.t.Fatalf("%+v: %v", q, err)
			}
			if plan == "" {
				l.chosen[domainindex.PlanOf(p)]++
			}
			if tier := domainindex.TierOf(p); tier != "" {
				// A tier, or on the created_at sort a tag's or a reason's
				// zset (kept in that order).
				want := []string{domainindex.AttentionTier(lq)}
				if lq.Sort == domainindex.SortCreated {
					want = append(want, "tag:"+lq.Tag, "wr:"+lq.WhoisStatus)
				}
				want = append(want, map[string]string{domainindex.SortHostname: "th:", domainindex.SortSSLDays: "ts:",
					domainindex.SortWhoisDays: "tw:"}[lq.Sort]+lq.Tag)
				if !slices.Contains(want, tier) {
					l.t.Fatalf("%s %+v: walked %q, want one of %q", plan, q, tier, want)
				}
				if strings.HasPrefix(tier, "tag:") || strings.HasPrefix(tier, "wr:") || strings.HasPrefix(tier, "th:") ||
					strings.HasPrefix(tier, "ts:") || strings.HasPrefix(tier, "tw:") {
					tier, _, _ = strings.Cut(tier, ":")
				}
				l.walked[q.Sort+" "+tier+" "+cmp.Or(plan, "chosen")]++
			}
			// The rows: the registration facts the brute force derives.
			if len(p.Rows) != len(p.IDs) {
				l.t.Fatalf("%+v: %d rows for %d ids", q, len(p.Rows), len(p.IDs))
			}
			for j, row := range p.Rows {
				r := byID[p.IDs[j]]
				if r.whois != nil && (row.WhoisMS != *r.whois || row.WhoisReason != "") ||
					r.whois == nil && (row.WhoisMS != 0 || row.WhoisReason != r.wstatus) {
					l.t.Fatalf("%+v: row of %s: whois %d %q, want %v %q", q, r.id, row.WhoisMS, row.WhoisReason, r.whois, r.wstatus)
				}
			}
			if p.Total != len(w) {
				l.explain(rows, q)
				l.t.Fatalf("%s %+v: total: got %d, want %d", plan, q, p.Total, len(w))
			}
			if len(p.IDs) > q.Limit || (p.NextCursor != "" && len(p.IDs) != q.Limit) {
				l.t.Fatalf("%s %+v: got %d ids and next cursor %q", plan, q, len(p.IDs), p.NextCursor)
			}
			got = append(got, p.IDs...)
			if p.NextCursor == "" || pages > len(w) {
				break
			}
			q.Cursor = p.NextCursor
		}
		if !slices.Equal(got, w) {
			l.t.Fatalf("%s sort=%s desc=%v status=%q whois=%q search=%q:\ngot  %v\nwant %v",
				plan, q.Sort, q.Desc, q.Status, q.WhoisStatus, q.Search, got, w)
		}
		// Page numbers: the same list ("mixed": as the script chooses).
		if plan == "mixed" {
			q = domainindex.WithPlan(q, "")
		}
		q.Cursor, q.Limit = "", 7
		for off := 0; off < len(w)+7; off += 7 * (1 + l.rng.IntN(4)) {
			q.Offset = off
			p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
			if err != nil {
				l.t.Fatal(err)
			}
			if ww := w[min(off, len(w)):min(off+7, len(w))]; !slices.Equal(p.IDs, ww) {
				l.t.Fatalf("%s %+v offset %d: got %v, want %v", plan, q, off, p.IDs, ww)
			}
		}
	}
}

func baseQuery() domainindex.Query {
	return domainindex.Query{Now: now, Warning: th.Warning, Critical: th.Critical}
}

// queries are every sort in both orders with each filter value alone,
// and random combinations.
func (l *lab) queries() []domainindex.Query {
	var qs []domainindex.Query
	searches := []string{"shop", "a", "api.alpha", "192.0", "zzz", "shopping.shop.example", "alpha", "gamma", "api", "co"}
	for _, s := range domainindex.Sorts {
		for _, desc := range []bool{false, true} {
			q := baseQuery()
			q.Sort, q.Desc = s, desc
			qs = append(qs, q)
			qs = append(qs, filtered(q, searches)...)
			for _, tag := range append(slices.Clone(labTags), "none") {
				f := q
				f.Tag = tag
				qs = append(qs, f)
			}
		}
	}
	for range 40 {
		q := baseQuery()
		q.Sort, q.Desc = domainindex.Sorts[l.rng.IntN(4)], l.rng.IntN(2) == 0
		if l.rng.IntN(2) == 0 {
			q.Status = domainindex.Statuses[l.rng.IntN(len(domainindex.Statuses))]
		}
		if l.rng.IntN(2) == 0 {
			q.WhoisStatus = append(slices.Clone(domainindex.WhoisVerdicts), domainindex.Reasons...)[l.rng.IntN(10)]
		}
		if l.rng.IntN(2) == 0 {
			q.Search = searches[l.rng.IntN(len(searches))]
		}
		if l.rng.IntN(2) == 0 {
			q.Tag = labTags[l.rng.IntN(len(labTags))]
		}
		qs = append(qs, q)
	}
	return qs
}

// filtered is q with one more filter each: every status, every
// whois_status, and each of searches.
func filtered(q domainindex.Query, searches []string) []domainindex.Query {
	var qs []domainindex.Query
	for _, st := range domainindex.Statuses {
		f := q
		f.Status = st
		qs = append(qs, f)
	}
	for _, st := range append(slices.Clone(domainindex.WhoisVerdicts), domainindex.Reasons...) {
		f := q
		f.WhoisStatus = st
		qs = append(qs, f)
	}
	for _, se := range searches {
		f := q
		f.Search = se
		qs = append(qs, f)
	}
	return qs
}

func (l *lab) checkAll() {
	l.t.Helper()
	if err := domainindex.CheckOrders(l.ctx, l.rdb, l.tenant); err != nil {
		l.t.Fatal(err)
	}
	// The status lists walk the attention index, swept as a Sweeper would
	// (the first time, built).
	if err := domainindex.SweepAttention(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), baseQuery()); err != nil {
		l.t.Fatal(err)
	}
	rows := l.rows()
	for _, q := range l.queries() {
		l.check(rows, q)
	}
	l.checkAttention()
	l.checkTagOrders()
}

// checkTagOrders checks each of a tag's orders that a list built
// (domainindex.TagOrderKeys) against the index's own keys: its hostname
// order holds the hostname index's member of every domain with the tag
// (tag:<tag>), its expiries' orders each such domain with the expiry
// key's score when below NoExpiryMS, and in the null set those the
// expiry's null set holds, and no other. (The lists checked against the
// brute force check what these keys hold in turn.)
func (l *lab) checkTagOrders() {
	l.t.Helper()
	pre := domainindex.Prefix(l.tenant)
	zset := func(key string) map[string]float64 {
		zs, err := domainindex.OrderRange(l.ctx, l.rdb, key)
		if err != nil {
			l.t.Fatal(err)
		}
		m := make(map[string]float64, len(zs))
		for _, z := range zs {
			m[z.Member.(string)] = z.Score
		}
		return m
	}
	names := map[string]string{}
	for m := range zset(pre + "host") {
		// "<host> <port, 5 digits> <id member>".
		names[m[strings.Index(m, " ")+7:]] = m
	}
	for _, tag := range labTags {
		tagged := zset(domainindex.TagKey(l.tenant, tag))
		keys := domainindex.TagOrderKeys(l.tenant, tag)
		// Per order: its keys, and what each should hold.
		type order struct {
			keys []string
			want []map[string]float64
		}
		host := map[string]float64{}
		for id := range tagged {
			host[names[id]] = 0
		}
		orders := []order{{keys[:1], []map[string]float64{host}}}
		for i, x := range [][2]string{{"ssl", "sslnull"}, {"whois", "wnull"}} {
			sc, null := zset(pre+x[0]), zset(pre+x[1])
			ord, nul := map[string]float64{}, map[string]float64{}
			for id := range tagged {
				if v, ok := sc[id]; ok && v < domainindex.NoExpiryMS {
					ord[id] = v
				}
				if _, ok := null[id]; ok {
					nul[id] = 0
				}
			}
			orders = append(orders, order{keys[1+2*i : 3+2*i], []map[string]float64{ord, nul}})
		}
		for g, o := range orders {
			var got []map[string]float64
			n := 0
			for _, k := range o.keys {
				got = append(got, zset(k))
				n += len(got[len(got)-1])
			}
			if n == 0 {
				continue
			}
			for i, k := range o.keys {
				if !maps.Equal(got[i], o.want[i]) {
					l.t.Fatalf("tag %q's order %s holds %d members, want %d:\n got %v\nwant %v", tag, k, len(got[i]), len(o.want[i]), got[i], o.want[i])
				}
			}
			l.tagOrders[g]++
		}
	}
}

// checkAttention checks each tier of the attention index against its
// definition, once built: every domain whose expiry (the tier's) lies in
// its band, from its lower bound L (when it has one) up to its upper one
// B (the error tier: every one with an invalid certificate or none), and
// no other, in every order.
func (l *lab) checkAttention() {
	l.t.Helper()
	if err := domainindex.CheckOrders(l.ctx, l.rdb, l.tenant); err != nil {
		l.t.Fatal(err)
	}
	pre := domainindex.Prefix(l.tenant)
	for _, td := range domainindex.Tiers() {
		tier, expiry := td.Name, td.Expiry
		bounds := l.rdb.HMGet(l.ctx, pre+"tiers", tier, tier+"lo", tier+"q").Val()
		if bounds[0] == nil || bounds[2] != nil {
			continue // not built, or a sweep under way
		}
		want := map[string]bool{}
		if td.Invalid {
			for _, m := range l.rdb.ZRange(l.ctx, pre+"bad", 0, -1).Val() {
				want[m] = true
			}
			for _, m := range l.rdb.SMembers(l.ctx, pre+"nocert").Val() {
				want[m] = true
			}
		} else {
			lo, _ := bounds[1].(string)
			if (lo == "") != (td.Lo == "") {
				l.t.Fatalf("attention tier %s: lower bound %q, want one: %v", tier, lo, td.Lo != "")
			}
			for _, m := range l.rdb.ZRangeByScore(l.ctx, pre+expiry, &redis.ZRangeBy{Min: cmp.Or(lo, "-inf"), Max: "(" + bounds[0].(string)}).Val() {
				want[m] = true
			}
		}
		created := map[string]bool{}
		for _, z := range l.rdb.ZRangeWithScores(l.ctx, pre+tier+":created", 0, -1).Val() {
			m := z.Member.(string)
			if !want[m] {
				l.t.Fatalf("attention tier %s holds %s, which it should not", tier, domainindex.IDOf(m))
			}
			if c, _ := l.rdb.HGet(l.ctx, accounts.DomainKey(l.tenant, domainindex.IDOf(m)), "c").Float64(); c != z.Score {
				l.t.Fatalf("attention tier %s: %s created at %v, its record says %v", tier, domainindex.IDOf(m), z.Score, c)
			}
			created[m] = true
		}
		if len(created) != len(want) {
			l.t.Fatalf("attention tier %s holds %d domains, want %d", tier, len(created), len(want))
		}
		hosts := domainindex.OrderMembers(l.ctx, l.rdb, pre+tier+":host")
		all := map[string]bool{}
		for _, m := range domainindex.OrderMembers(l.ctx, l.rdb, pre+"host") {
			all[m] = true
		}
		for _, m := range hosts {
			if !all[m] || !want[m[strings.IndexByte(m, ' ')+7:]] {
				l.t.Fatalf("attention tier %s by hostname holds %q", tier, m)
			}
		}
		if len(hosts) != len(want) {
			l.t.Fatalf("attention tier %s by hostname holds %d domains, want %d", tier, len(hosts), len(want))
		}
		// In the other expiry's order: its score when below NoExpiryMS
		// (x), else in its null tail (xnull, score 0), as that expiry's
		// sort holds them.
		other := "whois"
		if expiry == "whois" {
			other = "ssl"
		}
		x, xnull := map[string]float64{}, map[string]bool{}
		for _, z := range l.rdb.ZRangeWithScores(l.ctx, pre+tier+":x", 0, -1).Val() {
			x[z.Member.(string)] = z.Score
		}
		xz, err := domainindex.OrderRange(l.ctx, l.rdb, pre+tier+":xnull")
		if err != nil {
			l.t.Fatal(err)
		}
		for _, z := range xz {
			if z.Score != 0 {
				l.t.Fatalf("attention tier %s: %s in the other expiry's tail with score %v", tier, domainindex.IDOf(z.Member.(string)), z.Score)
			}
			xnull[z.Member.(string)] = true
		}
		for m := range want {
			s, err := l.rdb.ZScore(l.ctx, pre+other, m).Result()
			if err != nil && err != redis.Nil {
				l.t.Fatal(err)
			}
			if err == nil && s < domainindex.NoExpiryMS {
				if got, ok := x[m]; !ok || got != s || xnull[m] {
					l.t.Fatalf("attention tier %s: %s by %s has %v (%v, in the tail %v), want %v", tier, domainindex.IDOf(m), other, got, ok, xnull[m], s)
				}
			} else if _, ok := x[m]; ok || !xnull[m] {
				l.t.Fatalf("attention tier %s: %s, no %s below no expiry, by %s (%v) and in the tail %v", tier, domainindex.IDOf(m), other, other, ok, xnull[m])
			}
		}
		if len(x)+len(xnull) != len(want) {
			l.t.Fatalf("attention tier %s by %s holds %d + %d domains, want %d", tier, other, len(x), len(xnull), len(want))
		}
	}
}

// TestAttentionIndex: the status filters sorted by hostname or created_at
// walk the attention index, which the first such list builds and each
// later one sweeps as the clock moves the warning bound: weeks and a year
// on, every status still lists what the brute force gives at that
// instant, and the index holds what its definition says.
func TestAttentionIndex(t *testing.T) {
	// Steps of 4 domains: many steps, ending inside runs of equal
	// expiries (the lab's certificates share some).
	domainindex.SetSweepChunk(t, 4)
	l := newLab(t, 9)
	l.add(200)
	l.project()
	l.scanSome(80)
	pre := domainindex.Prefix(l.tenant)
	if n := l.rdb.Exists(l.ctx, pre+"tiers").Val(); n != 0 {
		t.Fatal("attention index built before any list asked for it")
	}
	// A build under way while the projector applies scans: the steps
	// and ix_ssl between them make the index whole.
	q := baseQuery()
	steps := 0
	// banded counts each band tier's members: a step adds at most 4,
	// also inside a run of equal expiries (the lab's registrations are
	// shared by some 50 domains each).
	banded := func() map[string]int64 {
		n := map[string]int64{}
		for _, td := range domainindex.Tiers() {
			if !td.Invalid {
				n[td.Name] = l.rdb.ZCard(l.ctx, pre+td.Name+":created").Val()
			}
		}
		return n
	}
	for ; ; steps++ {
		was := banded()
		done, err := domainindex.SweepStep(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
		if err != nil {
			t.Fatal(err)
		}
		for tier, n := range banded() {
			if n > was[tier]+4 {
				t.Fatalf("step %d added %d domains to tier %s, want at most 4", steps, n-was[tier], tier)
			}
		}
		if done {
			break
		}
		if steps%10 == 3 {
			l.scanSome(40)
		}
	}
	if steps < 20 {
		t.Fatalf("the build took %d steps of 4 domains: want many", steps)
	}
	l.checkAttention()
	l.rdb.HDel(l.ctx, pre+"tiers", "crit", "critlo", "critq")
	for _, k := range []string{pre + "crit:host", pre + "crit:created", pre + "crit:x", pre + "crit:xnull"} {
		if err := domainindex.DropOrder(l.ctx, l.rdb, k); err != nil {
			t.Fatal(err)
		}
	}
	// fell counts, for each instant the clock moved to, the members of
	// the tiers whose expiry fell below their band's lower edge then: the
	// sweep takes them out (checkAttention).
	fell := map[time.Time]int{}
	statusQueries := func(at time.Time, wantDue bool) {
		t.Helper()
		rows := l.rowsAt(at)
		// Before the sweep, a list that would walk the index says a sweep
		// is due and walks the whole tenant (each list is checked both
		// ways); after, none is.
		due := func(q domainindex.Query) bool {
			q.Now, q.Status, q.Sort, q.Limit = at, "critical", domainindex.SortHostname, 5
			p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
			if err != nil {
				t.Fatal(err)
			}
			return p.SweepDue
		}
		if due(baseQuery()) != wantDue {
			t.Fatalf("at %s: sweep due %v before it, want %v", at, !wantDue, wantDue)
		}
		for _, q := range l.queries() {
			if !domainindex.Attention(q) {
				continue
			}
			q.Now = at
			l.check(rows, q)
		}
		q := baseQuery()
		q.Now = at
		edges := map[string]int64{"now": at.UnixMilli(), "crit": at.UnixMilli() + int64(th.Critical+1)*24*3600*1000,
			"warn": at.UnixMilli() + int64(th.Warning+1)*24*3600*1000}
		for _, td := range domainindex.Tiers() {
			if td.Lo == "" {
				continue
			}
			for _, m := range l.rdb.ZRange(l.ctx, pre+td.Name+":created", 0, -1).Val() {
				if s, err := l.rdb.ZScore(l.ctx, pre+td.Expiry, m).Result(); err == nil && int64(s) < edges[td.Lo] {
					fell[at]++
				}
			}
		}
		if err := domainindex.SweepAttention(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q); err != nil {
			t.Fatal(err)
		}
		if due(baseQuery()) {
			t.Fatalf("at %s: a sweep still due after it", at)
		}
		for _, q := range l.queries() {
			if !domainindex.Attention(q) {
				continue
			}
			q.Now = at
			l.check(rows, q)
		}
		// Each band's bounds at its edges: B a day past its upper one,
		// L at its lower one; the error tier's B is 0 (built).
		for _, td := range domainindex.Tiers() {
			b, err := l.rdb.HGet(l.ctx, pre+"tiers", td.Name).Int64()
			wantB := int64(0)
			if td.Hi != "" {
				wantB = edges[td.Hi] + domainindex.SweepPast
			}
			if err != nil || b != wantB {
				t.Fatalf("at %s: tier %s's bound %d, %v; want %d", at, td.Name, b, err, wantB)
			}
			lo, err := l.rdb.HGet(l.ctx, pre+"tiers", td.Name+"lo").Int64()
			if td.Lo == "" && err != redis.Nil {
				t.Fatalf("at %s: tier %s has a lower bound %d, %v", at, td.Name, lo, err)
			}
			if td.Lo != "" && (err != nil || lo != edges[td.Lo]) {
				t.Fatalf("at %s: tier %s's lower bound %d, %v; want %d", at, td.Name, lo, err, edges[td.Lo])
			}
		}
		l.checkAttention()
	}
	statusQueries(now, true)

	// Kept from then on: new scans (certificates renewed, expiring,
	// invalid, missing), renames and removals.
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds[:40] {
		if i%2 == 0 {
			host := l.randomHost()
			if _, err := l.store.UpdateDomain(l.ctx, l.tenant, d.ID, accounts.DomainPatch{Host: &host}); err != nil && err != accounts.ErrDomainExists {
				t.Fatal(err)
			}
		} else if _, err := l.store.RemoveDomain(l.ctx, l.tenant, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	l.checkAttention()
	// Certificate facts alone (the registration's being for another host,
	// as after a rename the projector has not caught up with) move a
	// domain in the registration tiers' certificate order; a sync then
	// writes the views' facts again.
	ds, err = l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	var facts []domainindex.Facts
	var synced []string
	for _, d := range ds {
		f := domainindex.Facts{DomainID: d.ID, TenantID: l.tenant, Host: d.Host, Port: d.Port, WhoisHost: "elsewhere.example"}
		switch l.rng.IntN(4) {
		case 0:
			f.SSLMS = domainindex.NoExpiryMS
		case 1:
			f.NoCert = true
		default:
			f.SSLMS = now.Add(time.Duration(l.rng.IntN(400)-20) * 24 * time.Hour).UnixMilli()
		}
		facts = append(facts, f)
		synced = append(synced, d.ID)
	}
	if err := domainindex.ApplyFacts(l.ctx, l.rdb, facts, accounts.DomainKey); err != nil {
		t.Fatal(err)
	}
	l.checkAttention()
	if err := projector.SyncTenantIndex(l.ctx, l.rdb, l.tenant, synced); err != nil {
		t.Fatal(err)
	}
	l.checkAttention()
	l.project()
	for range 3 {
		l.scanSome(30)
		l.checkAttention()
	}
	statusQueries(now, false)

	// The clock moves: weeks, then a year.
	for _, days := range []int{5, 45, 400} {
		at := now.Add(time.Duration(days) * 24 * time.Hour)
		statusQueries(at, true)
		if fell[at] == 0 {
			t.Fatalf("%d days on: no member of a tier fell below its band, want some for the sweep to take out", days)
		}
	}

	// A lower critical threshold moves the warning band's lower edge
	// down: the sweep adds the domains between, and each tier still
	// holds its band.
	q = baseQuery()
	q.Now = now.Add(400 * 24 * time.Hour)
	// Until then the warning band lacks the domains between the two
	// critical bounds: a warning list does not walk it, and asks a sweep.
	walked := func() (string, bool) {
		t.Helper()
		lq := q
		lq.Status, lq.Sort, lq.Limit = "warning", domainindex.SortHostname, 5
		p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), lq)
		if err != nil {
			t.Fatal(err)
		}
		return domainindex.TierOf(p), p.SweepDue
	}
	// A higher one moves the warning band's lower edge up by 7 days: the
	// band still holds every match (the list walks it), but more than a
	// day's worth lies below its edge, so a sweep is due, which takes them
	// out.
	for _, c := range []struct {
		change   string
		critical int
		before   string // the tier the list walks before the sweep
	}{{"went down", 3, ""}, {"went up", 10, "warn"}} {
		q.Critical = c.critical
		if tier, due := walked(); tier != c.before || !due {
			t.Fatalf("warning list after the critical threshold %s, before the sweep: walked %q, sweep due %v; want %q, true", c.change, tier, due, c.before)
		}
		if err := domainindex.SweepAttention(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q); err != nil {
			t.Fatal(err)
		}
		if lo, want := l.rdb.HGet(l.ctx, pre+"tiers", "warnlo").Val(), fmt.Sprint(q.Now.UnixMilli()+int64(c.critical+1)*24*3600*1000); lo != want {
			t.Fatalf("warning tier's lower bound %s after the critical threshold %s, want %s", lo, c.change, want)
		}
		if tier, due := walked(); tier != "warn" || due {
			t.Fatalf("warning list after the critical threshold %s and the sweep: walked %q, sweep due %v; want warn, false", c.change, tier, due)
		}
		l.checkAttention()
	}
}

// TestListAgainstBruteForce: every sort, order and filter, paged by
// cursor and by number under both plans, gives what sorting and filtering
// every domain in memory gives; and still after renames, removals, new
// scans and lookups, and a replay of every event.
func TestListAgainstBruteForce(t *testing.T) {
	// The lab's tags (some 90 domains each) keep their orders once a
	// list reads them so, every one of them.
	domainindex.SetTagOrderMin(t, 20)
	domainindex.SetTagOrderShare(t, 100)
	l := newLab(t, 1)
	l.add(250)
	l.project()
	l.scanSome(80)
	l.checkAll()

	// Renames (some to another registrable domain, some only the port),
	// removals, adds; then the projector catches up, and more scans come.
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	var renamed []string
	for i, d := range ds[:60] {
		if i%3 != 2 {
			renamed = append(renamed, d.ID)
		}
		switch i % 3 {
		case 0:
			host := l.randomHost()
			if _, err := l.store.UpdateDomain(l.ctx, l.tenant, d.ID, accounts.DomainPatch{Host: &host}); err != nil && err != accounts.ErrDomainExists {
				t.Fatal(err)
			}
		case 1:
			port, tags := 9443, l.randomTags()
			if _, err := l.store.UpdateDomain(l.ctx, l.tenant, d.ID, accounts.DomainPatch{Port: &port, Tags: &tags}); err != nil && err != accounts.ErrDomainExists {
				t.Fatal(err)
			}
		case 2:
			if _, err := l.store.RemoveDomain(l.ctx, l.tenant, d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The renames' scripts alone keep the attention index (a new port
	// keeps the registration's tiers), and the tags' orders.
	l.checkAttention()
	l.checkTagOrders()
	// Before the projector applies the renames: a renamed domain shows as
	// never scanned at once, and with its new host's registration once
	// synced (the handler syncs after a rename).
	if err := projector.SyncTenantIndex(l.ctx, l.rdb, l.tenant, renamed); err != nil {
		t.Fatal(err)
	}
	l.add(30)
	l.checkAll()
	l.project()
	l.scanSome(50)
	l.checkAll()

	// A replay of every event (redelivery, a second replica) changes
	// nothing.
	all, err := events.ReadAllEvents(l.ctx, l.rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.proj.ApplyBatch(l.ctx, all); err != nil {
		t.Fatal(err)
	}
	l.checkAll()
	// The script chose each plan for some query.
	for _, plan := range []string{"read", "walk", "semi", "label"} {
		if l.chosen[plan] == 0 {
			t.Errorf("no page was listed under plan %q: %v", plan, l.chosen)
		}
	}
	// Each tier was walked in each of its orders, under each walking
	// plan and as the script chose: the status filters sorted by the
	// registration's days walk the certificate tiers, the registration
	// verdicts sorted by the certificate's days the registration tiers
	// (and a walk there that gives up at once sorts the candidates).
	for _, td := range domainindex.Tiers() {
		tier, other := td.Name, domainindex.SortWhoisDays
		if td.Expiry == "whois" {
			other = domainindex.SortSSLDays
		}
		for _, sort := range []string{domainindex.SortHostname, domainindex.SortCreated, other} {
			// Each status walks its own band on every sort a tier serves.
			q := baseQuery()
			q.Sort = sort
			if td.Expiry == "whois" {
				q.WhoisStatus = td.Status
			} else {
				q.Status = td.Status
			}
			if got := domainindex.AttentionTier(q); got != tier {
				t.Errorf("%s %s sorted by %s walks tier %q, want %q", td.Expiry, td.Status, sort, got, tier)
			}
			plans := []string{"walk", "semi", "chosen"}
			if sort == other {
				plans = append(plans, "walkread")
			}
			for _, plan := range plans {
				if l.walked[sort+" "+tier+" "+plan] == 0 {
					t.Errorf("no page sorted by %s walked tier %s under plan %s: %v", sort, tier, plan, l.walked)
				}
			}
		}
	}
	// A tag and a registration reason on the created_at sort walked their
	// own zsets, and a tag on the hostname sort its hostname order, once
	// built (and checked against the tag's domains after every change).
	for _, walk := range []string{domainindex.SortCreated + " tag", domainindex.SortCreated + " wr", domainindex.SortHostname + " th",
		domainindex.SortSSLDays + " ts", domainindex.SortWhoisDays + " tw"} {
		for _, plan := range []string{"walk", "semi", "chosen"} {
			if l.walked[walk+" "+plan] == 0 {
				t.Errorf("no page walked %q under plan %s: %v", walk, plan, l.walked)
			}
		}
	}
	if slices.Contains(l.tagOrders[:], 0) {
		t.Errorf("a tag's order of some sort was never built (hostname, ssl, whois): %v", l.tagOrders)
	}
}

// legacyDomainsKey is the hash "host:port" -> id that named a tenant's
// domains before the index's layout 2.
func legacyDomainsKey(tenantID string) string {
	return "tenant:" + events.TenantTag(tenantID) + ":" + tenantID + ":domains"
}

// toLegacy turns the lab's tenant back into a deployment of layout 1:
// the hash of names written from the records, and the index either gone
// (before the list indexes) or there but marked built with layout 1.
func (l *lab) toLegacy(keepIndex bool) {
	l.t.Helper()
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		l.t.Fatal(err)
	}
	names := map[string]any{}
	for _, d := range ds {
		names[domainname.Key(d.Host, d.Port)] = d.ID
	}
	if err := l.rdb.HSet(l.ctx, legacyDomainsKey(l.tenant), names).Err(); err != nil {
		l.t.Fatal(err)
	}
	if keepIndex {
		if err := l.rdb.Set(l.ctx, domainindex.Prefix(l.tenant)+"built", "1", 0).Err(); err != nil {
			l.t.Fatal(err)
		}
		return
	}
	keys, err := l.rdb.Keys(l.ctx, domainindex.Prefix(l.tenant)+"*").Result()
	if err != nil || len(keys) == 0 {
		l.t.Fatalf("index keys: got %v %v", keys, err)
	}
	if err := l.rdb.Del(l.ctx, keys...).Err(); err != nil {
		l.t.Fatal(err)
	}
}

// TestBuildIndexes: a deployment without indexes, its domains named only
// by the hash of layout 1, builds them from that hash, the records and
// the views (twice at once is harmless) and deletes the hash; one of
// layout 1 builds again and deletes it too; the names then keep one
// domain per host:port; a forced rebuild gives the same lists.
func TestBuildIndexes(t *testing.T) {
	l := newLab(t, 2)
	l.add(120)
	l.project()
	l.scanSome(70)
	rows := l.rows()
	q := baseQuery()
	q.Sort, q.Limit = domainindex.SortSSLDays, domainindex.MaxLimit
	before, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before.IDs, want(rows, q)) {
		t.Fatalf("before: got %v, want %v", before.IDs, want(rows, q))
	}
	if n := l.rdb.Exists(l.ctx, legacyDomainsKey(l.tenant)).Val(); n != 0 {
		t.Fatalf("hash of names: got %d keys, want none (the index names the domains)", n)
	}
	for _, keepIndex := range []bool{false, true} {
		l.toLegacy(keepIndex)
		// An index of before holds tiers of layout 5, which the rebuild
		// drops.
		stale := domainindex.Prefix(l.tenant) + "urg:created"
		l.rdb.ZAdd(l.ctx, stale, redis.Z{Score: 1, Member: "x"})
		// And its tags were sets (layout 5), which the rebuild makes zsets
		// again (a set left would fail every tag list: WRONGTYPE).
		sets := 0
		for _, tag := range l.rdb.SMembers(l.ctx, domainindex.Prefix(l.tenant)+"tags").Val() {
			key := domainindex.TagKey(l.tenant, tag)
			ids := domainindex.OrderMembers(l.ctx, l.rdb, key)
			if err := domainindex.DropOrder(l.ctx, l.rdb, key); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				l.rdb.SAdd(l.ctx, key, id)
			}
			sets++
		}
		if keepIndex && sets == 0 {
			t.Fatal("no tag to turn into a set of layout 5")
		}
		if !keepIndex {
			if p, _ := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q); len(p.IDs) != 0 {
				t.Fatalf("without index: got %d ids, want none", len(p.IDs))
			}
		}
		tenants, err := accounts.DomainTenants(l.ctx, l.rdb)
		if err != nil || !slices.Equal(tenants, []string{l.tenant}) {
			t.Fatalf("tenants of layout 1 (index kept %v): got %v %v, want [%s]", keepIndex, tenants, err, l.tenant)
		}
		done := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := projector.BuildIndexes(l.ctx, l.rdb, false, testenv.Logger(t))
				done <- err
			}()
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if l.rdb.Exists(l.ctx, stale).Val() != 0 {
			t.Fatalf("index kept %v: the rebuild left %s", keepIndex, stale)
		}
		if got := l.rows(); len(got) != len(rows) {
			t.Fatalf("domains after the build (index kept %v): got %d, want %d", keepIndex, len(got), len(rows))
		}
		l.checkAll()
		if n := l.rdb.Exists(l.ctx, legacyDomainsKey(l.tenant)).Val(); n != 0 {
			t.Fatalf("hash of names after the build (index kept %v): got %d keys, want none", keepIndex, n)
		}
		n, err := projector.BuildIndexes(l.ctx, l.rdb, false, testenv.Logger(t))
		if err != nil || n != 0 {
			t.Fatalf("second start: built %d, %v; want 0", n, err)
		}
	}
	// Every name the hash held is taken: adding or renaming onto one
	// conflicts, and the count is the hash's.
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil || len(ds) != len(rows) {
		t.Fatalf("domains after the build: got %d %v, want %d", len(ds), err, len(rows))
	}
	if d, added, err := l.store.AddDomain(l.ctx, l.tenant, accounts.NewDomain{Host: ds[0].Host, Port: ds[0].Port}); err != nil || added || d.ID != ds[0].ID {
		t.Errorf("add of %s after the build: got %s added=%v %v, want %s not added", ds[0].Name(), d.ID, added, err, ds[0].ID)
	}
	if _, err := l.store.UpdateDomain(l.ctx, l.tenant, ds[1].ID, accounts.DomainPatch{Host: &ds[0].Host, Port: &ds[0].Port}); !errors.Is(err, accounts.ErrDomainExists) {
		t.Errorf("rename onto %s after the build: got %v, want ErrDomainExists", ds[0].Name(), err)
	}
	if u, err := l.store.Usage(l.ctx, l.tenant); err != nil || u.Domains != int64(len(rows)) {
		t.Errorf("count after the build: got %+v %v, want %d", u, err, len(rows))
	}
	if n, err := projector.BuildIndexes(l.ctx, l.rdb, true, testenv.Logger(t)); err != nil || n != 1 {
		t.Fatalf("forced: built %d, %v; want 1", n, err)
	}
	l.checkAll()
}

// TestCursorRefused: a cursor of another query, or a forged one, is
// ErrBadCursor.
func TestCursorRefused(t *testing.T) {
	l := newLab(t, 3)
	l.add(20)
	q := baseQuery()
	q.Sort, q.Limit = domainindex.SortHostname, 5
	p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil || p.NextCursor == "" {
		t.Fatalf("got %+v, %v; want a next cursor", p, err)
	}
	for name, mod := range map[string]func(*domainindex.Query){
		"other sort":   func(q *domainindex.Query) { q.Sort = domainindex.SortCreated },
		"other order":  func(q *domainindex.Query) { q.Desc = true },
		"other filter": func(q *domainindex.Query) { q.Status = "valid" },
		"forged":       func(q *domainindex.Query) { q.Cursor = "bm90IGEgY3Vyc29y" },
		"not base64":   func(q *domainindex.Query) { q.Cursor = "%%%" },
	} {
		q2 := q
		q2.Cursor = p.NextCursor
		mod(&q2)
		if _, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q2); err != domainindex.ErrBadCursor {
			t.Errorf("%s: got %v, want ErrBadCursor", name, err)
		}
	}
}

// FuzzDecodeCursor: no input makes the cursor decoder panic, and what it
// accepts has a known phase, a finite score and a printable member.
func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{"", "YzF8YWJjfDB8MTIzfGlk", "YzF8YWJjfDF8MHxpZA", "YzF8fDJ8MHxpZA", "YzF8eHwwfE5hTnxpZA", "%%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := domainindex.DecodeCursor(s)
		if err != nil {
			return
		}
		if c.Phase != 0 && c.Phase != 1 {
			t.Fatalf("phase %d", c.Phase)
		}
		if c.Member == "" {
			t.Fatal("empty member")
		}
	})
}

// explain logs what the index holds of the domains whose brute-force
// answer differs, on a failure.
func (l *lab) explain(rows []row, q domainindex.Query) {
	q.Limit, q.Cursor, q.Offset = domainindex.MaxLimit, "", 0
	p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
	if err != nil {
		return
	}
	w := want(rows, q)
	pre := domainindex.Prefix(l.tenant)
	for _, r := range rows {
		if slices.Contains(w, r.id) != slices.Contains(p.IDs, r.id) {
			m, _ := domainindex.Member(r.id)
			ssl, _ := l.rdb.ZScore(l.ctx, pre+"ssl", m).Result()
			whois, _ := l.rdb.ZScore(l.ctx, pre+"whois", m).Result()
			snap, _ := projector.ReadSnapshot(l.ctx, l.rdb, r.id)
			regIdx, _ := projector.ReadRegistrationIndex(l.ctx, l.rdb, projector.RegistrableOf(r.host))
			_ = projector.SyncIndex(l.ctx, l.rdb, []string{r.id})
			after, _ := l.rdb.ZScore(l.ctx, pre+"whois", m).Result()
			all, _ := events.ReadAllEvents(l.ctx, l.rdb)
			for _, e := range all {
				if e.AggregateID == r.id {
					l.t.Logf("event %s %s", e.Name, e.Payload)
				}
			}
			l.t.Logf("differs: %s %s status %s whois %s; index ssl %d whois %d; view %q tenant %q in reg index %v; after sync %d",
				r.id, r.host, r.status, r.wstatus, int64(ssl), int64(whois), snap.Name, snap.TenantID, regIdx[r.id] != 0, int64(after))
		}
	}
}

// TestSweepEmptyTenant: a sweep of a tenant without domains (one that
// left while a list asked for a sweep) writes no key in its namespace.
func TestSweepEmptyTenant(t *testing.T) {
	l := newLab(t, 11)
	if err := domainindex.SweepAttention(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), baseQuery()); err != nil {
		t.Fatal(err)
	}
	if keys := l.rdb.Keys(l.ctx, domainindex.Prefix(l.tenant)+"*").Val(); len(keys) != 0 {
		t.Fatalf("a sweep of a tenant without domains wrote %v", keys)
	}
	l.add(5)
	if err := domainindex.SweepAttention(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), baseQuery()); err != nil {
		t.Fatal(err)
	}
	for _, td := range domainindex.Tiers() {
		if !l.rdb.HExists(l.ctx, domainindex.Prefix(l.tenant)+"tiers", td.Name).Val() {
			t.Fatalf("a sweep of a tenant with domains did not build tier %s", td.Name)
		}
	}
}

// TestTagHostOrder: a tag's hostname order is built by the first list
// that reads the tag alone to sort it by hostname, never by one that
// reads only some of its domains (another filter beside it) or a tag of
// SetTagOrderMin's number of domains or fewer; the next list walks it;
// it goes with the tag's last domain.
func TestTagHostOrder(t *testing.T) {
	domainindex.SetTagOrderMin(t, 20)
	l := newLab(t, 3)
	l.add(150)
	l.project()
	l.scanSome(80)
	list := func(q domainindex.Query) domainindex.Page {
		t.Helper()
		q.Limit = 10
		p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), q)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	built := func(tag string) bool {
		return l.rdb.Exists(l.ctx, domainindex.TagOrderKeys(l.tenant, tag)[0]).Val() == 1
	}
	q := baseQuery()
	q.Sort, q.Tag = domainindex.SortHostname, "prod"
	// Another filter beside the tag: the read holds some of its domains
	// only (when the tag is the smallest filter, so it reads the tag's).
	for _, f := range filtered(q, []string{"a", "b", "example", "api"}) {
		list(domainindex.WithPlan(domainindex.WithoutAttention(f), "read"))
	}
	if built("prod") {
		t.Fatal("a list of some of the tag's domains built its hostname order")
	}
	// A tag of TagHostMin domains or fewer is read each time.
	rows := l.rows()
	n := 0
	for _, r := range rows {
		if slices.Contains(r.tags, "prod") {
			n++
		}
	}
	domainindex.SetTagOrderMin(t, n)
	if p := list(domainindex.WithPlan(q, "read")); domainindex.PlanOf(p) != "read" || built("prod") {
		t.Fatalf("a tag of %d domains, the least that builds none: plan %q, built %v", n, domainindex.PlanOf(p), built("prod"))
	}
	domainindex.SetTagOrderMin(t, n-1)
	if p := list(domainindex.WithPlan(q, "read")); !built("prod") {
		t.Fatalf("a read of the tag's %d domains (plan %q) built no hostname order", n, domainindex.PlanOf(p))
	}
	l.checkTagOrders()
	if p := list(q); domainindex.TierOf(p) != "th:prod" || domainindex.PlanOf(p) != "walk" {
		t.Fatalf("the next list walked %q under plan %q, want th:prod under walk", domainindex.TierOf(p), domainindex.PlanOf(p))
	}
	l.check(rows, q)
	// Every domain leaves the tag: its hostname order goes with it.
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if slices.Contains(d.Tags, "prod") {
			none := []string{}
			if _, err := l.store.UpdateDomain(l.ctx, l.tenant, d.ID, accounts.DomainPatch{Tags: &none}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if built("prod") || l.rdb.Exists(l.ctx, domainindex.TagKey(l.tenant, "prod")).Val() == 1 {
		t.Fatal("the tag's keys outlived its last domain")
	}
	l.check(l.rows(), q)
}

// TestTagOrderRoom: the tag orders a tenant's lists build hold together
// at most the share of its domains SetTagOrderShare sets; past it a list
// reads the tag instead, and a tag's last domain leaving frees its
// orders' room.
func TestTagOrderRoom(t *testing.T) {
	domainindex.SetTagOrderMin(t, 20)
	l := newLab(t, 5)
	l.add(150)
	l.project()
	l.scanSome(80)
	count := func(tag string) int {
		return len(domainindex.OrderMembers(l.ctx, l.rdb, domainindex.TagKey(l.tenant, tag)))
	}
	total, err := domainindex.Count(l.ctx, l.rdb, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	n := count("prod")
	// Room for one order of prod, not two.
	domainindex.SetTagOrderShare(t, float64(n+n/2)/float64(total))
	list := func(tag, sort string) domainindex.Page {
		t.Helper()
		q := baseQuery()
		q.Sort, q.Tag, q.Limit = sort, tag, 10
		p, err := domainindex.List(l.ctx, l.rdb, l.tenant, accounts.DomainKeyPrefix(l.tenant), domainindex.WithPlan(q, "read"))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	built := func(tag string) []int64 {
		var out []int64
		for _, k := range domainindex.TagOrderKeys(l.tenant, tag) {
			out = append(out, l.rdb.Exists(l.ctx, k).Val())
		}
		return out
	}
	used := func() string { return l.rdb.HGet(l.ctx, domainindex.Prefix(l.tenant)+"tord", "n").Val() }
	list("prod", domainindex.SortHostname)
	list("prod", domainindex.SortSSLDays)
	list("prod", domainindex.SortWhoisDays)
	if b := built("prod"); !slices.Equal(b, []int64{1, 0, 0, 0, 0}) || used() != fmt.Sprint(n) {
		t.Fatalf("prod (%d domains of %d) listed on three sorts with room for one order: built %v, room used %q", n, total, b, used())
	}
	l.checkTagOrders()
	l.check(l.rows(), func() domainindex.Query { q := baseQuery(); q.Sort, q.Tag = domainindex.SortSSLDays, "prod"; return q }())
	// prod's last domain leaves it: its room is free for another tag's
	// order.
	ds, err := l.store.ListDomains(l.ctx, l.tenant)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if i := slices.Index(d.Tags, "prod"); i >= 0 {
			tags := slices.Delete(slices.Clone(d.Tags), i, i+1)
			if _, err := l.store.UpdateDomain(l.ctx, l.tenant, d.ID, accounts.DomainPatch{Tags: &tags}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if used() != "0" || slices.Contains(built("prod"), 1) {
		t.Fatalf("prod left by every domain: room used %q, its orders %v", used(), built("prod"))
	}
	if count("edge") > n+n/2 {
		t.Skipf("edge has %d domains, more than the room", count("edge"))
	}
	list("edge", domainindex.SortSSLDays)
	if b := built("edge"); b[1]+b[2] == 0 {
		t.Fatalf("edge listed by ssl_days_remaining with the room free: built %v", b)
	}
	l.checkTagOrders()
}
