package apiserver

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

var (
	benchBulkN   = flag.Int("bulk.n", 100_000, "BenchmarkBulkImport: domains imported through POST /domains/bulk per iteration")
	benchSingleN = flag.Int("bulk.single", 5_000, "BenchmarkBulkImport: domains added one at a time through POST /domains per iteration (the baseline; -bulk.single=100000 adds as many as the import)")
)

// BenchmarkBulkImport: -bulk.n domains (default 100,000) imported through
// POST /domains/bulk in chunks of v1.MaxBulkItems NDJSON lines, one request
// after the other as certfleet import sends them, against the baseline
// measured in the same iteration: -bulk.single domains (default 5,000)
// added one at a time through POST /domains by one client. Both go
// through HTTP, the key check, the rate limits and the same Lua script
// against the same Redis; each path gets its own fresh account with no
// domain quota. It reports both rates and speedup-ratio, the bulk rate
// over the single-add rate (issue 16's target: at least 20).
//
//	go test -run '^$' -bench BulkImport -benchtime 1x ./apiserver/
func BenchmarkBulkImport(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	cfg := domainsConfig
	cfg.Quotas = quota.Limits{quota.Domains: 0} // unlimited
	srv, err := New(cfg, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	newKey := func(email string) string {
		tenant, err := srv.accounts.EnsureAccount(ctx, email)
		if err != nil {
			b.Fatal(err)
		}
		k, err := srv.accounts.CreateKey(ctx, tenant, "bench", []string{"read", "write"}, nil, accounts.SourceCLI)
		if err != nil {
			b.Fatal(err)
		}
		return k.Key
	}
	post := func(path, key, ctype string, body []byte, want int) []byte {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			b.Fatalf("POST %s: got %d %.300s, want %d", path, resp.StatusCode, raw, want)
		}
		return raw
	}
	var chunks [][]byte
	for from := 0; from < *benchBulkN; from += v1.MaxBulkItems {
		var sb strings.Builder
		for i := from; i < min(from+v1.MaxBulkItems, *benchBulkN); i++ {
			fmt.Fprintf(&sb, "{\"hostname\":\"bulk-%d.example.com\",\"tags\":[\"imported\"]}\n", i)
		}
		chunks = append(chunks, []byte(sb.String()))
	}
	redisCPU := func() time.Duration {
		info, err := rdb.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, l := range strings.Split(info, "\r\n") {
			var v float64
			if _, err := fmt.Sscanf(l, "used_cpu_sys:%f", &v); err == nil {
				total += v
			}
			if _, err := fmt.Sscanf(l, "used_cpu_user:%f", &v); err == nil {
				total += v
			}
		}
		return time.Duration(total * float64(time.Second))
	}
	var bulkRate, singleRate float64
	for i := 0; b.Loop(); i++ {
		key := newKey(fmt.Sprintf("bulk-%d@example.com", i))
		start, cpu := time.Now(), redisCPU()
		for _, c := range chunks {
			raw := post("/api/v1/domains/bulk", key, v1.ContentTypeNDJSON, c, http.StatusOK)
			if !bytes.Contains(raw, []byte(`"errors":0`)) || bytes.Contains(raw, []byte(`"created":0,`)) {
				b.Fatalf("bulk: got %.300s, want every item created", raw)
			}
		}
		bulkRate = float64(*benchBulkN) / time.Since(start).Seconds()
		bulkRedis := redisCPU() - cpu

		key = newKey(fmt.Sprintf("single-%d@example.com", i))
		start, cpu = time.Now(), redisCPU()
		for j := range *benchSingleN {
			post("/api/v1/domains", key, "application/json", fmt.Appendf(nil, `{"hostname":"single-%d.example.com","tags":["imported"]}`, j), http.StatusCreated)
		}
		singleRate = float64(*benchSingleN) / time.Since(start).Seconds()
		singleRedis := redisCPU() - cpu
		b.Logf("iteration %d: bulk %d domains at %.0f/s (redis cpu %s/domain), single %d domains at %.0f/s (redis cpu %s/domain): %.1fx",
			i, *benchBulkN, bulkRate, bulkRedis/time.Duration(*benchBulkN), *benchSingleN, singleRate,
			singleRedis/time.Duration(*benchSingleN), bulkRate/singleRate)
	}
	b.ReportMetric(bulkRate, "bulk-adds/s")
	b.ReportMetric(singleRate, "single-adds/s")
	b.ReportMetric(bulkRate/singleRate, "speedup-ratio")
}
