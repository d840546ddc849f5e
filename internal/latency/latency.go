// Package latency measures HTTP request latency the way certfleet's
// benchmarks report it: p50 and p99 of a fixed number of requests sent by
// several clients at once, beside a gin hello-world served by the same
// process in the same run. The issues' latency targets are ratios to that
// baseline, because the machines the benchmarks run on are shared and
// noisy: only figures from one run compare.
package latency

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

// HelloWorld serves a gin hello-world (a small JSON body at /hello) until
// the test ends and returns its URL.
func HelloWorld(tb testing.TB) string {
	tb.Helper()
	gin.SetMode(gin.ReleaseMode)
	hello := gin.New()
	hello.GET("/hello", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"hello": "world"}) })
	hs := httptest.NewServer(hello)
	tb.Cleanup(hs.Close)
	return hs.URL + "/hello"
}

// Client is an HTTP client that keeps enough idle connections for
// Measure's clients.
func Client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
}

// Get fetches url with key as a bearer token ("" for none) and returns
// the body; any status but 200 is an error.
func Get(c *http.Client, url, key string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d %.200s", url, resp.StatusCode, body)
	}
	return body, err
}

// Result is what Measure saw: every request's latency (Samples), and
// their p50 and p99.
type Result struct {
	P50, P99 time.Duration
	Samples  []time.Duration
}

// Add pools o's samples into r: the rounds of one measurement, taken
// apart so that the machine's noise falls on every measurement alike.
func (r *Result) Add(o Result) {
	r.Samples = append(r.Samples, o.Samples...)
	r.P50, r.P99 = Percentile(r.Samples, 50), Percentile(r.Samples, 99)
}

// Measure sends perClient requests for url from each of clients
// goroutines at once and returns p50 and p99 of all of them; the first
// failed request fails the measurement.
func Measure(c *http.Client, url, key string, clients, perClient int) (Result, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var failed error
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, perClient)
			for range perClient {
				start := time.Now()
				if _, err := Get(c, url, key); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if failed != nil {
		return Result{}, failed
	}
	return Result{P50: Percentile(lat, 50), P99: Percentile(lat, 99), Samples: lat}, nil
}

// Percentile is the p-th percentile (0-100) of ds, nearest rank; 0 for
// none. ds is not changed.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// ScriptMedian is the median time Redis spent in the scripts (EVALSHA)
// whose first key ends in keySuffix, over the entries of the slow log
// (set slowlog-log-slower-than to 0 and reset it before the calls); 0
// when there are none. It is time inside Redis, which the machine's load
// moves less than a request's.
func ScriptMedian(tb testing.TB, rdb redis.UniversalClient, keySuffix string) time.Duration {
	tb.Helper()
	logs, err := rdb.SlowLogGet(context.Background(), -1).Result()
	if err != nil {
		tb.Fatal(err)
	}
	var ds []time.Duration
	for _, l := range logs {
		if len(l.Args) > 3 && (strings.EqualFold(l.Args[0], "evalsha") || strings.EqualFold(l.Args[0], "eval")) && strings.HasSuffix(l.Args[3], keySuffix) {
			ds = append(ds, l.Duration)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(10 * time.Microsecond)
}
