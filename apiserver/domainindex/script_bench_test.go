package domainindex_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/latency"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// scriptCases are BenchmarkDomainList's cases (apiserver), as queries.
var scriptCases = []struct {
	name string
	q    func(q domainindex.Query) domainindex.Query
}{
	{"default", func(q domainindex.Query) domainindex.Query { return q }},
	{"hostname", func(q domainindex.Query) domainindex.Query {
		q.Sort, q.Desc = domainindex.SortHostname, false
		return q
	}},
	{"ssl-asc", func(q domainindex.Query) domainindex.Query { q.Sort, q.Desc = domainindex.SortSSLDays, false; return q }},
	{"ssl-desc", func(q domainindex.Query) domainindex.Query { q.Sort = domainindex.SortSSLDays; return q }},
	{"whois-asc", func(q domainindex.Query) domainindex.Query {
		q.Sort, q.Desc = domainindex.SortWhoisDays, false
		return q
	}},
	{"created-asc", func(q domainindex.Query) domainindex.Query { q.Desc = false; return q }},
	{"status-valid", func(q domainindex.Query) domainindex.Query { q.Status = "valid"; return q }},
	{"status-warning", func(q domainindex.Query) domainindex.Query {
		q.Status, q.Sort, q.Desc = "warning", domainindex.SortSSLDays, false
		return q
	}},
	{"status-critical", func(q domainindex.Query) domainindex.Query {
		q.Status, q.Sort, q.Desc = "critical", domainindex.SortHostname, false
		return q
	}},
	{"status-expired", func(q domainindex.Query) domainindex.Query { q.Status = "expired"; return q }},
	{"status-error", func(q domainindex.Query) domainindex.Query {
		q.Status, q.Sort = "error", domainindex.SortSSLDays
		return q
	}},
	{"whois-valid", func(q domainindex.Query) domainindex.Query {
		q.WhoisStatus, q.Sort, q.Desc = "valid", domainindex.SortHostname, false
		return q
	}},
	{"whois-not-found", func(q domainindex.Query) domainindex.Query { q.WhoisStatus = "not-found"; return q }},
	{"search", func(q domainindex.Query) domainindex.Query {
		q.Search, q.Sort, q.Desc = "host1", domainindex.SortHostname, false
		return q
	}},
	{"search-label", func(q domainindex.Query) domainindex.Query { q.Search = "reg7"; return q }},
	{"page-10", func(q domainindex.Query) domainindex.Query { q.Offset = 900; return q }},
	{"tag-dense", func(q domainindex.Query) domainindex.Query { q.Tag = "prod"; return q }},
	{"tag-dense-ssl", func(q domainindex.Query) domainindex.Query { q.Tag, q.Sort = "prod", domainindex.SortSSLDays; return q }},
	{"tag-sparse", func(q domainindex.Query) domainindex.Query { q.Tag = "team7"; return q }},
	{"tag-sparse-ssl", func(q domainindex.Query) domainindex.Query {
		q.Tag, q.Sort, q.Desc = "team7", domainindex.SortSSLDays, false
		return q
	}},
	{"tag-sparse-host", func(q domainindex.Query) domainindex.Query {
		q.Tag, q.Sort, q.Desc = "team7", domainindex.SortHostname, false
		return q
	}},
	// Sparse filters that BenchmarkDomainList does not ask, on sorts no
	// index of theirs follows but the attention index's tiers: a status on
	// the registration sort, a registration verdict (2% of the tenant) on
	// the certificate's and the hostname sorts.
	{"status-crit-whois", func(q domainindex.Query) domainindex.Query {
		q.Status, q.Sort, q.Desc = "critical", domainindex.SortWhoisDays, false
		return q
	}},
	{"whois-crit-ssl", func(q domainindex.Query) domainindex.Query {
		q.WhoisStatus, q.Sort, q.Desc = "critical", domainindex.SortSSLDays, false
		return q
	}},
	{"whois-crit-host", func(q domainindex.Query) domainindex.Query {
		q.WhoisStatus, q.Sort, q.Desc = "critical", domainindex.SortHostname, false
		return q
	}},
}

// BenchmarkListScript measures the list script's time inside Redis (the
// slow log's) for BenchmarkDomainList's cases and tenant shape, without
// the HTTP server: tenants of 1,000 and 10,000 domains, and the sizes in
// CERTFLEET_BENCH_LIST_SIZES (comma-separated) when set. The domains are
// added by accounts and their facts written by ApplyFacts, the
// projector's writer, with BenchmarkDomainList's certificates and
// registrations. It logs each case's median over 30 pages of 100 (as the
// handler asks them, with each record's rev and tenant). With
// CERTFLEET_BENCH_LIST_LISTPACK=1024 it measures each case again on a
// twin tenant whose zsets are listpacks (see below). The cases sorted by
// one expiry and filtered by the other's status (uncorrelated) are
// measured again on a tenant of the same size whose registrations do not
// follow the certificates (benchRegUncorrelated), as in a real fleet.
//
//	CERTFLEET_BENCH_LIST_SIZES=1000,10000,100000 go test -run '^$' -bench ListScript -benchtime 1x ./apiserver/domainindex/
func BenchmarkListScript(b *testing.B) {
	sizes := []int{1000, 10_000}
	if v := os.Getenv("CERTFLEET_BENCH_LIST_SIZES"); v != "" {
		sizes = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	ctx := context.Background()
	var rdb redis.UniversalClient = testenv.Redis(b).Client(b)
	store, err := accounts.New(accounts.Config{Quotas: quota.Limits{quota.Domains: int64(slices.Max(sizes))}}, rdb, testenv.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "0"}, {"slowlog-max-len", "8192"}} {
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	// CERTFLEET_BENCH_LIST_LISTPACK=<entries> loads a twin of each tenant
	// with zset-max-listpack-entries at that value (docs/operations.md,
	// "Redis settings"), so that its zsets up to that size are listpacks,
	// and measures each case on both, one after the other: the cost of
	// the setting for the list, against a baseline of the same run.
	lpEntries := os.Getenv("CERTFLEET_BENCH_LIST_LISTPACK")
	for _, n := range sizes {
		at := time.Now()
		load := func(name, zsetEntries string, reg func(i int) int) string {
			start := time.Now()
			tenant := events.TenantID(fmt.Sprintf("%s%d@example.com", name, n))
			if c, _ := domainindex.Count(ctx, rdb, tenant); c != int64(n) {
				if zsetEntries != "" {
					was := rdb.ConfigGet(ctx, "zset-max-listpack-entries").Val()["zset-max-listpack-entries"]
					if err := rdb.ConfigSet(ctx, "zset-max-listpack-entries", zsetEntries).Err(); err != nil {
						b.Fatal(err)
					}
					defer rdb.ConfigSet(ctx, "zset-max-listpack-entries", was)
				}
				loadBenchTenant(b, ctx, rdb, store, tenant, n, at, reg)
			}
			// The attention index, built here by a status list (the
			// sweep's time from the slow log), is counted with the rest.
			pre := domainindex.Prefix(tenant)
			var tierNames []string
			for _, k := range domainindex.Keys(tenant) {
				if isTierKey(tenant, k) {
					if err := domainindex.DropOrder(ctx, rdb, k); err != nil {
						b.Fatal(err)
					}
				}
				if t, ok := strings.CutSuffix(strings.TrimPrefix(k, pre), ":created"); ok {
					tierNames = append(tierNames, t)
				}
			}
			// The build, timed inside Redis by the slow log, which logs
			// only what takes 200 us or more meanwhile: the steps that
			// move domains, not the commands they run (at 0 it logs each,
			// which slows a step of some 2,000 of them severalfold, and
			// keeps only the last 8,192 entries).
			if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", "200").Err(); err != nil {
				b.Fatal(err)
			}
			rdb.Do(ctx, "SLOWLOG", "RESET")
			built := time.Now()
			if err := domainindex.SweepAttention(ctx, rdb, tenant, accounts.DomainKeyPrefix(tenant), domainindex.Query{Now: at, Warning: 30, Critical: 7}); err != nil {
				b.Fatal(err)
			}
			took := time.Since(built)
			var steps []time.Duration
			for _, l := range rdb.SlowLogGet(ctx, -1).Val() {
				if len(l.Args) > 3 && strings.EqualFold(l.Args[0], "evalsha") && strings.HasSuffix(l.Args[3], ":ix:tiers") {
					steps = append(steps, l.Duration)
				}
			}
			if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err(); err != nil {
				b.Fatal(err)
			}
			slices.Sort(steps)
			steps = append(steps, 0)
			var bytes, attBytes, tiered int64
			for _, k := range domainindex.Keys(tenant) {
				m := rdb.MemoryUsage(ctx, k).Val()
				bytes += m
				if isTierKey(tenant, k) {
					attBytes += m
				}
			}
			var sizes []string
			for _, t := range tierNames {
				c := rdb.ZCard(ctx, pre+t+":created").Val()
				tiered += c
				sizes = append(sizes, fmt.Sprintf("%s %d (%.1f%%)", t, c, 100*float64(c)/float64(n)))
			}
			ns := len(steps) - 1
			b.Logf("attention index: tiers %s domains, built in %s: %d steps of up to %d domains took 200 us or more inside Redis, %s (median), %s (p90), %s (max); %.0f B per domain in a tier",
				strings.Join(sizes, ", "), took.Round(time.Millisecond), ns, domainindex.SweepChunk(),
				steps[ns/2].Round(10*time.Microsecond), steps[ns*9/10].Round(10*time.Microsecond), steps[max(ns-1, 0)].Round(10*time.Microsecond),
				float64(attBytes)/float64(max(tiered, 1)))
			b.Logf("tenant of %d domains loaded in %s (zset-max-listpack-entries %s); list index %.0f B/domain",
				n, time.Since(start).Round(time.Millisecond), cmp.Or(zsetEntries, "as configured"), float64(bytes)/float64(n))
			return tenant
		}
		tenants := []string{load("script", "", benchReg)}
		if lpEntries != "" {
			tenants = append(tenants, load("scriptlp", lpEntries, benchReg))
		}
		base := domainindex.Query{Sort: domainindex.SortCreated, Desc: true, Limit: 100, Now: time.Now(),
			Warning: 30, Critical: 7}
		list := func(tenant string, q domainindex.Query) domainindex.Page {
			p, err := domainindex.List(ctx, rdb, tenant, accounts.DomainKeyPrefix(tenant), q)
			if err != nil {
				b.Fatal(err)
			}
			return p
		}
		// measure lists q 30 times on tenant: the script's median time
		// inside Redis, and the last page.
		measure := func(tenant string, q domainindex.Query) (time.Duration, domainindex.Page) {
			var p domainindex.Page
			rdb.Do(ctx, "SLOWLOG", "RESET")
			for range 30 {
				p = list(tenant, q)
			}
			med := latency.ScriptMedian(b, rdb, ":ix:created")
			if med == 0 {
				b.Fatalf("%+v: no list script in the slow log", q)
			}
			return med, p
		}
		// withoutAttention is the line's tail for a query walked on the
		// attention index (med): the walk of the whole tenant, measured
		// now, the same run's baseline.
		withoutAttention := func(tenant string, q domainindex.Query, med time.Duration) string {
			if !domainindex.Attention(q) {
				return ""
			}
			without, _ := measure(tenant, domainindex.WithoutAttention(q))
			return fmt.Sprintf("; without the attention index %s (%.2fx)", without, float64(without)/float64(med))
		}
		cases := slices.Clone(scriptCases)
		cases = append(cases, verdictCases()...)
		cases = append(cases, struct {
			name string
			q    func(q domainindex.Query) domainindex.Query
		}{"cursor", func(q domainindex.Query) domainindex.Query {
			q.Sort, q.Desc = domainindex.SortSSLDays, false
			return q
		}})
		// The first case, the default page, is the baseline of the run:
		// each case's median is also given as a multiple of it.
		baseline := make([]time.Duration, len(tenants))
		for ci, c := range cases {
			meds := make([]time.Duration, len(tenants))
			var p domainindex.Page
			for ti, tenant := range tenants {
				q := c.q(base)
				if c.name == "cursor" {
					q.Cursor = list(tenant, q).NextCursor
				}
				meds[ti], p = measure(tenant, q)
				if ci == 0 {
					baseline[ti] = meds[ti]
				}
			}
			line := fmt.Sprintf("%7d domains %-16s total %6d  list script p50 %s (%.1fx the default page, %s)", n, c.name, p.Total, meds[0], float64(meds[0])/float64(baseline[0]), planOf(p))
			// A tag's order of the sort, built by the first of the 30
			// lists (a read of the tag): that list alone, and the read
			// of the tag each list would be without it.
			if ord, tag, ok := strings.Cut(domainindex.TierOf(p), ":"); ok && strings.HasPrefix(ord, "t") && ord != "tag" {
				q := c.q(base)
				for _, k := range domainindex.TagOrderKeys(tenants[0], tag) {
					if err := domainindex.DropOrder(ctx, rdb, k); err != nil {
						b.Fatal(err)
					}
				}
				rdb.Do(ctx, "SLOWLOG", "RESET")
				list(tenants[0], q)
				first := latency.ScriptMedian(b, rdb, ":ix:created")
				read, _ := measure(tenants[0], domainindex.WithPlan(q, "read"))
				line += fmt.Sprintf("; the first list, which built the tag's order, %s; a read of the tag %s (%.2fx)", first, read, float64(read)/float64(meds[0]))
			}
			if len(tenants) > 1 {
				line += fmt.Sprintf("; zsets as listpacks %s (%.2fx)", meds[1], float64(meds[1])/float64(meds[0]))
			}
			// A status walked on the attention index: the walk of the
			// whole tenant, the same run's baseline.
			line += withoutAttention(tenants[0], c.q(base), meds[0])
			b.Log(line)
		}
		// The statuses sorted by the other expiry again, on a tenant whose
		// registrations do not follow its certificates.
		mixed := load("scriptmix", "", benchRegUncorrelated)
		for _, c := range append(slices.Clone(scriptCases), verdictCases()...) {
			q := c.q(base)
			if !domainindex.Attention(q) || (q.Sort != domainindex.SortSSLDays && q.Sort != domainindex.SortWhoisDays) {
				continue
			}
			med, p := measure(mixed, q)
			b.Logf("%7d domains %-16s total %6d  list script p50 %s (%s), registrations uncorrelated%s", n, c.name, p.Total, med,
				planOf(p), withoutAttention(mixed, q, med))
		}
	}
	for b.Loop() {
	}
}

// verdictCases are every status but valid, and every registration
// verdict but valid, on every sort ("v-<status>-<sort>",
// "w-<verdict>-<sort>"): those the attention index's tiers serve, and
// those that walk their own range of the sort instead.
func verdictCases() []struct {
	name string
	q    func(q domainindex.Query) domainindex.Query
} {
	var out []struct {
		name string
		q    func(q domainindex.Query) domainindex.Query
	}
	short := map[string]string{domainindex.SortHostname: "host", domainindex.SortCreated: "created",
		domainindex.SortSSLDays: "ssl", domainindex.SortWhoisDays: "whois"}
	for _, whois := range []bool{false, true} {
		verdicts, tag := []string{"expired", "critical", "warning", "error"}, "v"
		if whois {
			verdicts, tag = []string{"expired", "critical", "warning"}, "w"
		}
		for _, v := range verdicts {
			for _, sort := range domainindex.Sorts {
				out = append(out, struct {
					name string
					q    func(q domainindex.Query) domainindex.Query
				}{fmt.Sprintf("%s-%s-%s", tag, v, short[sort]), func(q domainindex.Query) domainindex.Query {
					q.Sort, q.Desc = sort, false
					if whois {
						q.WhoisStatus = v
					} else {
						q.Status = v
					}
					return q
				}})
			}
		}
	}
	return out
}

// isTierKey tells whether k, a key of tenant's index, is one of its
// attention index's (a tier's, or their bounds).
func isTierKey(tenant, k string) bool {
	rest := strings.TrimPrefix(k, domainindex.Prefix(tenant))
	return rest == "tiers" || (strings.Contains(rest, ":") && !strings.HasPrefix(rest, "wr:") && !strings.HasPrefix(rest, "tag:"))
}

// planOf names the plan the list script followed for p, and the tier of
// the attention index it walked.
func planOf(p domainindex.Page) string {
	if t := domainindex.TierOf(p); t != "" {
		return domainindex.PlanOf(p) + " on " + t
	}
	return domainindex.PlanOf(p)
}

// benchReg is the registration of domain i in BenchmarkDomainList's
// tenant: reg<i%50>.example, which ties it to the certificate's expiry
// (i%400): the expired certificates all sit under registrations that
// expire before the critical ones' (reg 0-19 against 20-27).
func benchReg(i int) int { return i % 50 }

// benchRegUncorrelated spreads the registrations over the certificates:
// each certificate expiry (i%400) under every registration alike.
func benchRegUncorrelated(i int) int { return int(uint32(i)*2654435761>>16) % 50 }

// loadBenchTenant adds n domains to tenant as BenchmarkDomainList does
// (host<i>.reg<j>.example, j = reg(i), tagged team<i mod 100> and, every
// other one, prod) and writes their facts: a tenth
// never scanned, certificates expiring from 20 days ago to 379 days on
// (one in 17 invalid), registrations of reg<j>.example expiring 9j-40
// days on (one in 7 not found).
func loadBenchTenant(b *testing.B, ctx context.Context, rdb redis.UniversalClient, store *accounts.Store, tenant string, n int, at time.Time, reg func(i int) int) {
	const chunk = 5000
	for from := 0; from < n; from += chunk {
		nds := make([]accounts.NewDomain, min(chunk, n-from))
		for k := range nds {
			i := from + k
			nds[k] = accounts.NewDomain{Host: fmt.Sprintf("host%d.reg%d.example", i, reg(i)), Port: 443, Tags: []string{fmt.Sprintf("team%d", i%100)}}
			if i%2 == 0 {
				nds[k].Tags = append(nds[k].Tags, "prod")
			}
		}
		res, err := store.AddDomains(ctx, tenant, nds)
		if err != nil {
			b.Fatal(err)
		}
		facts := make([]domainindex.Facts, 0, len(res))
		for k, r := range res {
			i := from + k
			if r.Err != nil || !r.Added {
				b.Fatalf("add %s: added %v, %v", r.Domain.Host, r.Added, r.Err)
			}
			f := domainindex.Facts{DomainID: r.Domain.ID, TenantID: tenant, Host: r.Domain.Host, Port: 443, WhoisHost: r.Domain.Host}
			if i%10 != 9 {
				f.SSLMS = at.Add(time.Duration(i%400-20) * 24 * time.Hour).UnixMilli()
				f.Bad = i%17 == 0
			}
			if reg := reg(i); reg%7 == 0 {
				f.WhoisReason = events.RegistrationNotFound
			} else {
				f.WhoisMS = at.Add(time.Duration(reg*9-40) * 24 * time.Hour).UTC().Truncate(time.Second).UnixMilli()
			}
			facts = append(facts, f)
		}
		if err := domainindex.ApplyFacts(ctx, rdb, facts, accounts.DomainKey); err != nil {
			b.Fatal(err)
		}
	}
}
