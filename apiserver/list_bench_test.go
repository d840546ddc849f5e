package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/latency"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// listCases are the documented sorts and filters of GET /domains that
// BenchmarkDomainList measures (a page of 100, as the issue measured).
var listCases = []struct{ name, query string }{
	{"default", ""},
	{"hostname", "sort=hostname&order=asc"},
	{"ssl-asc", "sort=ssl_days_remaining&order=asc"},
	{"ssl-desc", "sort=ssl_days_remaining&order=desc"},
	{"whois-asc", "sort=whois_days_remaining&order=asc"},
	{"created-asc", "sort=created_at&order=asc"},
	{"status-valid", "status=valid"},
	{"status-warning", "status=warning&sort=ssl_days_remaining&order=asc"},
	{"status-critical", "status=critical&sort=hostname&order=asc"},
	{"status-expired", "status=expired"},
	{"status-error", "status=error&sort=ssl_days_remaining&order=desc"},
	{"whois-valid", "whois_status=valid&sort=hostname&order=asc"},
	{"whois-not-found", "whois_status=not-found"},
	{"search", "search=host1&sort=hostname&order=asc"},
	{"search-label", "search=.reg7"},
	{"page-10", "page=10"},
	// Every domain carries the tag team<i mod 100> (1% of the tenant
	// each) and every other one prod (half).
	{"tag-dense", "tag=prod"},
	{"tag-dense-ssl", "tag=prod&sort=ssl_days_remaining&order=desc"},
	{"tag-sparse", "tag=team7"},
	{"tag-sparse-ssl", "tag=team7&sort=ssl_days_remaining&order=asc"},
	{"tag-sparse-host", "tag=team7&sort=hostname&order=asc"},
}

// BenchmarkDomainList measures GET /api/v1/domains?per_page=100 for one
// tenant of 1,000 and of 10,000 scanned domains (and 100,000 with
// CERTFLEET_BENCH_LIST_100K=1; `go tool task bench:scale` sets it),
// every documented sort and filter, beside a gin hello-world served by
// the same process in the same run: 8 clients, a fixed number of
// requests each, sent in 4 rounds that each measure every case of every
// tenant and the hello-world. It logs p50 and p99 of each and the ratio of its p99 to
// the baseline's (issue 16's target: at most 20, and the biggest tenant
// within 1.5x of the 1,000 one), the second page by cursor, and the
// index's Redis memory per domain; it reports the worst ratio.
//
//	go test -run '^$' -bench DomainList -benchtime 1x ./apiserver/
func BenchmarkDomainList(b *testing.B) {
	sizes := []int{1000, 10_000}
	if os.Getenv("CERTFLEET_BENCH_LIST_100K") != "" {
		sizes = append(sizes, 100_000)
	}
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	// The default domains quota (10,000) would silently cut the biggest
	// tenant down to it.
	srv, err := New(Config{RateLimitGeneral: 1 << 30, Quotas: quota.Limits{quota.Domains: int64(slices.Max(sizes))}}, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	hello := latency.HelloWorld(b)
	// The alert engine evaluates every applied batch, so the tenant has
	// alerts to list (its expired and expiring certificates).
	engine, err := alerts.New(alerts.Config{}, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	proj, err := projector.New(projector.Config{Consumer: "bench", Evaluator: engine}, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	client := latency.Client()
	get := func(url, key string) ([]byte, error) { return latency.Get(client, url, key) }
	// Each case is 320 requests (CERTFLEET_BENCH_LIST_REQUESTS) shared by
	// 8 clients (CERTFLEET_BENCH_LIST_CLIENTS: 1 shows each script's time
	// with no other request beside it). A p99 of 320 requests is their
	// fourth slowest, a few stalls of the machine's; the ratio of the
	// biggest tenant to the smallest wants some 1,600 (docs/scaling.md,
	// "The 1.5x ratio, with enough requests").
	clients, requests := 8, 320
	if v, err := strconv.Atoi(os.Getenv("CERTFLEET_BENCH_LIST_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	if v, err := strconv.Atoi(os.Getenv("CERTFLEET_BENCH_LIST_REQUESTS")); err == nil && v > 0 {
		requests = v
	}
	perClient := max(1, requests/clients)
	load := func(n int) (key, tenant string) {
		email := fmt.Sprintf("list%d@example.com", n)
		tid, err := srv.accounts.EnsureAccount(ctx, email)
		if err != nil {
			b.Fatal(err)
		}
		k, err := srv.accounts.CreateKey(ctx, tid, "bench", []string{"read"}, nil, accounts.SourceCLI)
		if err != nil {
			b.Fatal(err)
		}
		nds := make([]accounts.NewDomain, n)
		for i := range nds {
			nds[i] = accounts.NewDomain{Host: fmt.Sprintf("host%d.reg%d.example", i, i%50), Port: 443, Tags: []string{fmt.Sprintf("team%d", i%100)}}
			if i%2 == 0 {
				nds[i].Tags = append(nds[i].Tags, "prod")
			}
		}
		res, err := srv.accounts.AddDomains(ctx, tid, nds)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || !r.Added {
				b.Fatalf("add %s: added %v, %v", r.Domain.Host, r.Added, r.Err)
			}
		}
		at := time.Now()
		var batch []events.Envelope
		flush := func() {
			if err := proj.ApplyBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		all, err := events.ReadAllEvents(ctx, rdb)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range all {
			if e.TenantID == tid {
				batch = append(batch, e)
				if len(batch) == 500 {
					flush()
				}
			}
		}
		for i, r := range res {
			if r.Err != nil || i%10 == 9 { // a tenth never scanned
				continue
			}
			job := uuid.New()
			cert := certResult(at.Add(time.Duration(i%400-20)*24*time.Hour), i%17 != 0)
			ev, _ := events.NewWithID(events.ScanEventID(job, "eu-west"), events.ScanCompleted, tid, r.Domain.ID, events.ScanCompletedV1{
				JobID: job, DomainID: r.Domain.ID, Host: r.Domain.Host, Port: 443, Region: "eu-west", FinishedAt: at,
				Results: []events.IPResult{cert},
			})
			batch = append(batch, ev)
			if len(batch) == 500 {
				flush()
			}
		}
		for i := range 50 {
			exp := at.Add(time.Duration(i*9-40) * 24 * time.Hour).UTC().Truncate(time.Second)
			r := events.RegistrationV1{Domain: fmt.Sprintf("reg%d.example", i), Status: events.RegistrationOK, Source: "rdap",
				LookedUpAt: at.UTC().Truncate(time.Millisecond), ExpiresAt: &exp}
			if i%7 == 0 {
				r.Status, r.ExpiresAt = events.RegistrationNotFound, nil
			}
			ev, _ := events.New(events.RegistrationLookedUp, "", r.Domain, r)
			// One lookup a batch: the projector syncs every domain under the
			// registrable domain (of every tenant so far) in one pipeline,
			// which times out past about 100,000 domains.
			flush()
			batch = append(batch, ev)
		}
		flush()
		// The tenant's attention index, as its first status list has the
		// API server's sweeper build it in the background.
		built := time.Now()
		if err := domainindex.SweepAttention(ctx, rdb, tid, accounts.DomainKeyPrefix(tid), domainindex.Query{Now: time.Now(), Warning: 30, Critical: 7}); err != nil {
			b.Fatal(err)
		}
		b.Logf("tenant of %d domains: attention index built in %s", n, time.Since(built).Round(time.Millisecond))
		return k.Key, tid
	}

	// Redis logs every command's time: the list script's own (without the
	// round trip and the queue) is logged beside each case.
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "0"}, {"slowlog-max-len", "8192"}} {
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	// Every tenant is loaded first; then rounds each measure the
	// hello-world and every case of every tenant, a share of the requests
	// each time, so that the machine's noise (a hello-world p99 moves
	// 0.3-6.4 ms between runs here) falls on all of them alike. A figure
	// pools its rounds' requests.
	type target struct {
		n          int
		name, url  string
		key        string
		list       bool
		res        latency.Result
		scriptTime []time.Duration
	}
	var targets []*target
	for _, n := range sizes {
		start := time.Now()
		// A KeyChest key, claimed and approved (a held key reads only
		// what it added).
		kcKey := fmt.Sprintf("bench-keychest-key-%d", n)
		resp, err := client.Post(hs.URL+"/api/v1.0/access/claim", "application/json",
			strings.NewReader(fmt.Sprintf(`{"email":"list%d@example.com","api_key":%q}`, n, kcKey)))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("claim a KeyChest key: HTTP %d", resp.StatusCode)
		}
		key, tenant := load(n)
		keys, err := srv.accounts.ListKeys(ctx, tenant)
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			if k.Held {
				if _, err := srv.accounts.ApproveKey(ctx, tenant, k.ID); err != nil {
					b.Fatal(err)
				}
			}
		}
		var bytes int64
		for _, k := range domainindex.Keys(tenant) {
			m, _ := rdb.MemoryUsage(ctx, k).Result()
			bytes += m
		}
		b.Logf("tenant of %d domains loaded in %s; list index %.0f B/domain", n, time.Since(start).Round(time.Millisecond), float64(bytes)/float64(n))
		// A cursor's second page.
		first, err := get(hs.URL+"/api/v1/domains?per_page=100&sort=ssl_days_remaining&order=asc", key)
		if err != nil {
			b.Fatal(err)
		}
		var page struct {
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(first, &page); err != nil || page.NextCursor == "" {
			b.Fatalf("first page: %v, next_cursor %q", err, page.NextCursor)
		}
		cases := append(slices.Clone(listCases), struct{ name, query string }{"cursor", "sort=ssl_days_remaining&order=asc&cursor=" + page.NextCursor})
		for _, c := range cases {
			targets = append(targets, &target{n: n, name: c.name, url: hs.URL + "/api/v1/domains?per_page=100&" + c.query, key: key, list: true})
		}
		// The tenant's other reads (issue 16: "the KeyChest expiration
		// call and the alert list likewise"): one domain's expiration by
		// name, and the newest page of alerts.
		for _, c := range []struct{ name, path string }{
			{"keychest-expiry", fmt.Sprintf("/api/v1.0/servers/expiration/host%d.reg%d.example?api_key=%s", n/2, (n/2)%50, kcKey)},
			{"alerts", "/api/v1/alerts?per_page=100"},
		} {
			targets = append(targets, &target{n: n, name: c.name, url: hs.URL + c.path, key: key})
		}
	}
	const rounds = 4
	perRound := max(1, perClient/rounds)
	var base latency.Result
	for round := range rounds {
		r, err := latency.Measure(client, hello, "", clients, perRound)
		if err != nil {
			b.Fatal(err)
		}
		base.Add(r)
		for _, tg := range targets {
			rdb.Do(ctx, "SLOWLOG", "RESET")
			rdb.ConfigResetStat(ctx)
			r, err := latency.Measure(client, tg.url, tg.key, clients, perRound)
			if err != nil {
				b.Fatal(err)
			}
			tg.res.Add(r)
			if tg.list {
				tg.scriptTime = append(tg.scriptTime, latency.ScriptMedian(b, rdb, ":ix:created"))
				if round == 0 && os.Getenv("CERTFLEET_BENCH_LIST_STATS") != "" {
					b.Logf("%7d domains %-16s Redis calls per request: %s", tg.n, tg.name, callsPerRequest(b, rdb, clients*perRound))
				}
			}
		}
	}
	worst, p99At := 0.0, map[int]time.Duration{}
	for _, tg := range targets {
		ratio := float64(tg.res.P99) / float64(base.P99)
		worst = max(worst, ratio)
		p99At[tg.n] = max(p99At[tg.n], tg.res.P99)
		script := ""
		if tg.list {
			script = "; list script p50 " + latency.Percentile(tg.scriptTime, 50).String()
		}
		b.Logf("%7d domains %-16s p50 %8s p99 %8s  %5.1fx hello-world p99 (%s)%s", tg.n, tg.name,
			tg.res.P50.Round(10*time.Microsecond), tg.res.P99.Round(10*time.Microsecond), ratio, base.P99.Round(10*time.Microsecond), script)
	}
	for _, n := range sizes[1:] {
		b.Logf("worst p99 at %d domains / at %d: %.2f (%d requests a case)", n, sizes[0], float64(p99At[n])/float64(p99At[sizes[0]]), clients*perRound*rounds)
	}
	for b.Loop() {
		// The figures are the logged ones; one iteration is enough.
	}
	b.ReportMetric(worst, "worst-p99/hello-p99")
}

// callsPerRequest lists the Redis commands run (in scripts too) since the
// stats were reset, per request, most first.
func callsPerRequest(b *testing.B, rdb redis.UniversalClient, requests int) string {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	type stat struct {
		cmd   string
		calls int
	}
	var stats []stat
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.Atoi(calls)
		stats = append(stats, stat{strings.TrimPrefix(name, "cmdstat_"), n})
	}
	slices.SortFunc(stats, func(a, b stat) int { return b.calls - a.calls })
	var out []string
	for _, st := range stats[:min(8, len(stats))] {
		out = append(out, fmt.Sprintf("%s %.1f", st.cmd, float64(st.calls)/float64(requests)))
	}
	return strings.Join(out, ", ")
}
