package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// expEntry is one entry of /servers/expiration as a KeyChest client reads it.
type expEntry struct {
	IP                string `json:"ip"`
	Region            string `json:"region"`
	Port              int    `json:"port"`
	CertificateFound  bool   `json:"certificate_found"`
	CertificateSHA256 string `json:"certificate_sha256"`
	RenewalDue        bool   `json:"renewal_due"`
	Expired           bool   `json:"expired"`
	RenewalUTC        int64  `json:"renewal_utc"`
	LastScanUTC       int64  `json:"last_scan_utc"`
	ChainValid        bool   `json:"chain_valid"`
	HostnameValid     bool   `json:"hostname_valid"`
	TLSVersion        string `json:"tls_version"`
	Issuer            string `json:"issuer"`
	Error             string `json:"error"`
}

type expResponse struct {
	Status           string     `json:"status"`
	Domain           string     `json:"domain"`
	CertificateFound bool       `json:"certificate_found"`
	RenewalDue       bool       `json:"renewal_due"`
	ExpiredFound     bool       `json:"expired_found"`
	Results          []expEntry `json:"results"`
}

// TestEndToEnd runs the whole system as the binary does: `certfleet all`
// scanning from one region and a second `certfleet agent` from another,
// against the lab, on real Redis and ClickHouse. It registers every lab
// domain through the KeyChest API and checks what the API reports against
// what the lab knows it serves.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	rs := testenv.Redis(t)
	endToEnd(t, rs.Client(t), "--redis-url", rs.URL)
}

// TestEndToEndRedisCluster is the same run on a Redis Cluster of three
// masters (--redis-cluster): every role's keys, streams and scripts spread
// over three processes by hash tag, so a command or script spanning slots
// fails here as it would in production.
func TestEndToEndRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	c := testenv.RedisClusterOf(t, 3)
	endToEnd(t, c.Client(t), "--redis-url", c.URL, "--redis-cluster")
	// The run's keys really spread over the three processes.
	for _, n := range c.Nodes {
		keys, err := n.Client(t).DBSize(context.Background()).Result()
		if err != nil || keys == 0 {
			t.Errorf("node %s holds %d keys (%v), want some of the run's", n.Addr, keys, err)
		}
	}
}

// TestEndToEndClickHouseCluster is the same run on a ClickHouse cluster of
// two replicas (--clickhouse-cluster, the DSN naming both servers): the
// sink writes through the Distributed tables, both replicas end up with
// every row, and the API's history routes read through them.
func TestEndToEndClickHouseCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	rs := testenv.Redis(t)
	c := testenv.StartClickHouseCluster(t, "certfleet_e2e", 2)
	conn, err := schema.OpenCluster(context.Background(), c.DSN, c.Name, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	endToEndOn(t, rs.Client(t), conn, []string{"--clickhouse-dsn", c.DSN, "--clickhouse-cluster", c.Name},
		func(base, _ string, ids map[string]string) {
			ctx := context.Background()
			var total uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM scan_results FINAL").Scan(&total); err != nil {
				t.Fatal(err)
			}
			for _, s := range c.Servers {
				err := waitForCount(s.Conn(t), "SELECT count() FROM scan_results_local FINAL", total)
				if err != nil {
					t.Errorf("replica %s: %v", s.Addr, err)
				}
			}
			// The v1 API takes a bearer key of the same account.
			var out, stderr bytes.Buffer
			if code := runMain(ctx, []string{"apikey", "create", "--email", "e2e@example.com", "--label", "e2e", "--scopes", "read",
				"--redis-url", rs.URL, "--log-level", "warn"}, &out, &stderr); code != 0 {
				t.Fatalf("apikey create: exit %d: %s", code, stderr.String())
			}
			m := regexp.MustCompile(`(?m)^key: +(ssa_\w+)$`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("apikey create: no key in %q", out.String())
			}
			v1 := strings.TrimSuffix(base, "/api/v1.0") + "/api/v1"
			for name, id := range ids {
				var h struct {
					Data []struct {
						Region string `json:"region"`
					} `json:"data"`
				}
				req, _ := http.NewRequest(http.MethodGet, v1+"/domains/"+id+"/history", nil)
				req.Header.Set("Authorization", "Bearer "+m[1])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				decode(t, "history of "+name, resp, http.StatusOK, &h)
				if len(h.Data) == 0 {
					t.Errorf("history of %s through the cluster: no scans", name)
				}
			}
		}, "--redis-url", rs.URL)
}

// waitForCount waits until query, a count, answers want on conn.
func waitForCount(conn driver.Conn, query string, want uint64) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n uint64
		err := conn.QueryRow(context.Background(), query).Scan(&n)
		if err == nil && n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d (%v), want %d", query, n, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// endToEnd runs the fleet with the Redis flags given, on a database of
// the test binary's ClickHouse; rdb reads the same Redis.
func endToEnd(t *testing.T, rdb redis.UniversalClient, redisFlags ...string) {
	ch := testenv.ClickHouse(t)
	endToEndOn(t, rdb, ch.Conn(t), []string{"--clickhouse-dsn", ch.DSN}, nil, redisFlags...)
}

// endToEndOn runs the fleet with the ClickHouse and Redis flags given; rdb
// and conn read the same Redis and ClickHouse. then, if set, runs once the
// history is stored, with the API's base URL, a key of the tenant and the
// ids of its domains by name.
func endToEndOn(t *testing.T, rdb redis.UniversalClient, conn driver.Conn, chFlags []string,
	then func(base, key string, ids map[string]string), redisFlags ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet, err := lab.Start(ctx, lab.Config{}, testenv.Logger(t))
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	defer fleet.Close()
	dir := t.TempDir()
	envPath, rootsPath := filepath.Join(dir, "lab.env"), filepath.Join(dir, "roots.pem")
	if err := fleet.WriteEnv(envPath, rootsPath); err != nil {
		t.Fatalf("write lab env: %v", err)
	}

	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := "http://" + listen + "/api/v1.0"
	common := append(redisFlags,
		"--shards", "4", "--log-level", "warn",
		"--resolver", fleet.ResolverAddr(), "--extra-roots", rootsPath,
		"--allow-targets", strings.Join(fleet.AllowTargets(), ","),
	)
	// The agent takes the default consumer name (the hostname).
	procs := map[string][]string{
		"all (eu-west)": append(append([]string{"all", "--region", "eu-west", "--name", "e2e-1",
			"--listen", listen, "--stream-trim-interval", "1s"}, chFlags...), common...),
		"agent (us-east)": append([]string{"agent", "--region", "us-east",
			"--metrics-listen", ""}, common...),
	}
	var wg sync.WaitGroup
	for name, args := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stderr bytes.Buffer
			if code := runMain(ctx, args, io.Discard, &stderr); code != 0 || ctx.Err() == nil {
				t.Errorf("%s exited early with %d: %s", name, code, stderr.String())
			}
		}()
	}
	defer wg.Wait()
	defer cancel()

	// Ready, not only alive: --listen answers /healthz while the role
	// starts, the API once it runs.
	waitHealthy(t, "http://"+listen+"/readyz")
	key := claim(t, base, "e2e@example.com")
	other := claim(t, base, "someone-else@example.com")

	targets := fleet.Targets()
	ids := map[string]string{}
	for _, tg := range targets {
		var resp struct {
			Status, ID, Domain string
		}
		postJSON(t, base+"/servers/add", map[string]string{"api_key": key, "domain": tg.Domain}, http.StatusOK, &resp)
		if resp.Status != "success" || resp.ID == "" {
			t.Fatalf("add %s: got %+v, want status success and an id", tg.Domain, resp)
		}
		ids[tg.Domain] = resp.ID
	}
	added := time.Now()

	// Every region must have scanned every domain within 10 seconds of it
	// being added.
	regions := []string{"eu-west", "us-east"}
	got := map[string]expResponse{}
	for _, tg := range targets {
		want := len(tg.Expect) * len(regions)
		var r expResponse
		for {
			r = expiration(t, base, tg.Domain, key)
			if len(r.Results) >= want {
				break
			}
			if time.Since(added) > 10*time.Second {
				t.Fatalf("%s: %d results after %s, want %d (every IP from %v)", tg.Domain, len(r.Results), time.Since(added).Round(time.Millisecond), want, regions)
			}
			time.Sleep(200 * time.Millisecond)
		}
		got[tg.Domain] = r
	}
	t.Logf("every lab domain scanned from both regions %s after the last add", time.Since(added).Round(time.Millisecond))

	now := time.Now()
	for _, tg := range targets {
		t.Run(tg.Name, func(t *testing.T) {
			r := got[tg.Domain]
			if r.Status != "success" {
				t.Errorf("status: got %q, want success", r.Status)
			}
			byKey := map[string]expEntry{}
			for _, e := range r.Results {
				byKey[e.Region+"|"+e.IP] = e
			}
			var anyFound, anyDue, anyExpired bool
			for _, region := range regions {
				for _, x := range tg.Expect {
					e, ok := byKey[region+"|"+x.IP]
					if !ok {
						t.Errorf("no entry for ip %q from %s; got %v", x.IP, region, keys(byKey))
						continue
					}
					checkEntry(t, region, x, e, tg.Port, now)
					anyFound = anyFound || e.CertificateFound
					anyDue = anyDue || e.RenewalDue
					anyExpired = anyExpired || e.Expired
				}
			}
			if r.CertificateFound != anyFound || r.RenewalDue != anyDue || r.ExpiredFound != anyExpired {
				t.Errorf("top-level flags: got found=%v due=%v expired=%v, want %v %v %v (any entry)",
					r.CertificateFound, r.RenewalDue, r.ExpiredFound, anyFound, anyDue, anyExpired)
			}
		})
	}

	// Tenants never see each other's domains.
	for _, tg := range targets[:1] {
		status := getStatus(t, base+"/servers/expiration/"+url.PathEscape(tg.Domain)+"?api_key="+url.QueryEscape(other))
		if status != http.StatusNotFound {
			t.Errorf("another account reading %s: got HTTP %d, want 404", tg.Domain, status)
		}
	}

	// Both agents keep their regions marked alive.
	if active, err := presence.Active(ctx, rdb, added.Add(-time.Minute)); err != nil || strings.Join(active, ",") != strings.Join(regions, ",") {
		t.Errorf("active regions: got %v (%v), want %v", active, err, regions)
	}

	// The history reached ClickHouse: one row per scan, IP and region, and
	// the events themselves.
	wantRows := uint64(0)
	for _, tg := range targets {
		wantRows += uint64(len(tg.Expect) * len(regions))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rows, added uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM scan_results FINAL WHERE tenant_id = ?", events.TenantID("e2e@example.com")).Scan(&rows); err != nil {
			t.Fatalf("count scan_results: %v", err)
		}
		if err := conn.QueryRow(ctx, "SELECT count() FROM events FINAL WHERE name = ?", events.DomainAdded).Scan(&added); err != nil {
			t.Fatalf("count events: %v", err)
		}
		if rows >= wantRows && added == uint64(len(targets)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clickhouse: got %d scan_results rows and %d domain.added events, want at least %d and exactly %d", rows, added, wantRows, len(targets))
		}
		time.Sleep(250 * time.Millisecond)
	}

	// What only the history shows: each IP's HTTP answer, HSTS and old
	// protocols, as the lab serves them.
	tenant := events.TenantID("e2e@example.com")
	for _, tg := range targets {
		rows, err := schema.ScanHistory(ctx, conn, tenant, ids[tg.Domain], 100)
		if err != nil {
			t.Fatalf("scan history of %s: %v", tg.Domain, err)
		}
		byKey := map[string]schema.ScanRow{}
		for _, r := range rows {
			if _, ok := byKey[r.Region+"|"+r.IP]; !ok { // latest first
				byKey[r.Region+"|"+r.IP] = r
			}
		}
		for _, region := range regions {
			for _, x := range tg.Expect {
				r, ok := byKey[region+"|"+x.IP]
				if !ok {
					t.Errorf("%s: no scan_results row for %s from %s", tg.Name, x.IP, region)
					continue
				}
				checkHistory(t, tg.Name+" "+region+" "+x.IP, x, r)
			}
		}
	}

	if then != nil {
		then(base, key, ids)
	}

	// Once every group has read and acknowledged the scans (the history
	// above is the sink's), the coordinator trims them from the results
	// stream: its memory is its backlog, not its history.
	scans := int64(len(targets) * len(regions))
	for {
		n, err := rdb.XLen(ctx, events.StreamResults).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n < scans {
			t.Logf("results stream trimmed to %d entries of %d scans", n, scans)
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("results stream still holds %d entries of %d scans, all stored and acknowledged", n, scans)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkHistory compares the HTTP and protocol facts of a scan_results row
// with what the lab serves at that address.
func checkHistory(t *testing.T, where string, x lab.Expect, r schema.ScanRow) {
	t.Helper()
	if int(r.HTTPStatus) != x.HTTPStatus {
		t.Errorf("%s: http_status got %d, want %d", where, r.HTTPStatus, x.HTTPStatus)
	}
	if r.HSTSMaxAge != x.HSTSMaxAge || r.HSTSIncludeSubdomains != x.HSTSIncludeSubdomains {
		t.Errorf("%s: hsts got max-age %d includeSubDomains %v, want %d %v", where, r.HSTSMaxAge, r.HSTSIncludeSubdomains, x.HSTSMaxAge, x.HSTSIncludeSubdomains)
	}
	// Every address that completed a handshake was also asked for TLS 1.0-1.1.
	if want := x.Outcome == events.OutcomeOK; r.LegacyTLSChecked != want {
		t.Errorf("%s: legacy_tls_checked got %v, want %v", where, r.LegacyTLSChecked, want)
	}
	if strings.Join(r.LegacyTLS, ",") != strings.Join(x.LegacyTLS, ",") {
		t.Errorf("%s: legacy_tls got %v, want %v", where, r.LegacyTLS, x.LegacyTLS)
	}
}

func checkEntry(t *testing.T, region string, x lab.Expect, e expEntry, port int, now time.Time) {
	t.Helper()
	where := region + " " + x.IP
	if e.Port != port {
		t.Errorf("%s: port got %d, want %d", where, e.Port, port)
	}
	if e.CertificateFound != x.CertificateFound {
		t.Errorf("%s: certificate_found got %v, want %v", where, e.CertificateFound, x.CertificateFound)
	}
	wantErr := ""
	if x.Outcome != events.OutcomeOK {
		wantErr = string(x.Outcome)
	}
	if e.Error != wantErr {
		t.Errorf("%s: error got %q, want %q", where, e.Error, wantErr)
	}
	if e.LastScanUTC == 0 {
		t.Errorf("%s: last_scan_utc is 0", where)
	}
	if !x.CertificateFound {
		return
	}
	if e.ChainValid != x.ChainValid || e.HostnameValid != x.HostnameValid {
		t.Errorf("%s: chain_valid/hostname_valid got %v/%v, want %v/%v", where, e.ChainValid, e.HostnameValid, x.ChainValid, x.HostnameValid)
	}
	if e.CertificateSHA256 != x.LeafSHA256 {
		t.Errorf("%s: certificate_sha256 got %s, want %s", where, e.CertificateSHA256, x.LeafSHA256)
	}
	if e.RenewalUTC != x.NotAfter.Unix() {
		t.Errorf("%s: renewal_utc got %d, want %d", where, e.RenewalUTC, x.NotAfter.Unix())
	}
	if e.Issuer != x.Issuer {
		t.Errorf("%s: issuer got %q, want %q", where, e.Issuer, x.Issuer)
	}
	if want := x.NotAfter.Before(now); e.Expired != want {
		t.Errorf("%s: expired got %v, want %v", where, e.Expired, want)
	}
	if want := x.NotAfter.Sub(now) < 28*24*time.Hour; e.RenewalDue != want {
		t.Errorf("%s: renewal_due got %v, want %v (not_after %s)", where, e.RenewalDue, want, x.NotAfter)
	}
	if e.TLSVersion == "" {
		t.Errorf("%s: tls_version empty", where)
	}
}

func keys(m map[string]expEntry) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func waitHealthy(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 30s: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func claim(t *testing.T, base, email string) string {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		User   string `json:"user"`
		APIKey string `json:"api_key"`
	}
	getJSON(t, base+"/access/claim/"+url.PathEscape(email), http.StatusOK, &r)
	if r.Status != "created" || r.User != email || r.APIKey == "" {
		t.Fatalf("claim %s: got %+v, want status created, the user and a key", email, r)
	}
	return r.APIKey
}

func expiration(t *testing.T, base, domain, key string) expResponse {
	t.Helper()
	var r expResponse
	getJSON(t, base+"/servers/expiration/"+url.PathEscape(domain)+"?api_key="+url.QueryEscape(key), http.StatusOK, &r)
	return r
}

func getStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getJSON(t *testing.T, u string, wantStatus int, out any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	decode(t, "GET "+u, resp, wantStatus, out)
}

func postJSON(t *testing.T, u string, body any, wantStatus int, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	decode(t, "POST "+u, resp, wantStatus, out)
}

func decode(t *testing.T, what string, resp *http.Response, wantStatus int, out any) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s: got HTTP %d %s, want %d", what, resp.StatusCode, b, wantStatus)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: decode %s: %v", what, b, err)
	}
}
