package apiserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// scrape reads /metrics of e with the bearer token (none when "") and
// returns the status, the expiry series (tenant|domain: value), the
// dropped counter and the body.
func (e *env) scrape(token string) (int, map[string]float64, float64, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.http.URL+"/metrics", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	series := map[string]float64{}
	var dropped float64
	for _, m := range expiryLine.FindAllStringSubmatch(string(raw), -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		series[m[2]+"|"+m[1]] = v
	}
	if m := droppedLine.FindStringSubmatch(string(raw)); m != nil {
		dropped, _ = strconv.ParseFloat(m[1], 64)
	}
	return resp.StatusCode, series, dropped, string(raw)
}

var (
	expiryLine  = regexp.MustCompile(`(?m)^certfleet_certificate_expiry_timestamp_seconds\{domain="([^"]*)",tenant="([^"]*)"\} (\S+)$`)
	droppedLine = regexp.MustCompile(`(?m)^certfleet_certificate_expiry_series_dropped_total (\S+)$`)
)

// The expiry gauge has one series per scanned domain of each tenant that
// opted in, valued at the earliest notAfter over regions and IPs; a tenant
// that did not opt in has none; past the cap, tenants share it
// round-robin and the rest are counted as dropped. The series name tenants
// and their hosts: /metrics serves them only to a scrape with the
// operator's token (none without one), and reads them at most every 15s.
func TestExpiryMetrics(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	eng, err := alerts.New(alerts.Config{}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	proj, err := projector.New(projector.Config{Consumer: "test"}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	early, late := now.Add(10*24*time.Hour).Truncate(time.Second), now.Add(60*24*time.Hour).Truncate(time.Second)
	cert := func(ip string, notAfter time.Time) events.IPResult {
		return events.IPResult{IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: ip, NotAfter: notAfter}
	}
	scan := func(key, host string, results ...events.IPResult) string {
		t.Helper()
		_, body := e.add(key, host+":443")
		id := body["id"].(string)
		for i, region := range []string{"eu-west", "us-east"} {
			job := uuid.New()
			ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, "", id, events.ScanCompletedV1{
				JobID: job, DomainID: id, Host: host, Port: 443, Region: region,
				StartedAt: now.Add(-time.Minute), FinishedAt: now, Results: results[i : i+1],
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := proj.Apply(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	tenant := func(email, key string, optIn bool) string {
		t.Helper()
		e.claim(email, key)
		p, err := e.srv.accounts.Authenticate(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		st := alerts.DefaultSettings()
		st.ExpiryMetrics = optIn
		if _, err := eng.PutSettings(ctx, p.TenantID, st); err != nil {
			t.Fatal(err)
		}
		return p.TenantID
	}
	const keyA, keyB, keyC = "key-of-alice-0123456789", "key-of-bob-0123456789", "key-of-carol-0123456789"
	a := tenant("alice@example.com", keyA, true)
	tenant("bob@example.com", keyB, false)
	c := tenant("carol@example.com", keyC, true)
	idA := scan(keyA, "a.example", cert("192.0.2.1", late), cert("192.0.2.2", early))
	idB := scan(keyA, "b.example", cert("192.0.2.3", late), cert("192.0.2.3", late))
	e.add(keyA, "unscanned.example:443")
	scan(keyB, "c.example", cert("192.0.2.4", early), cert("192.0.2.4", early))
	scan(keyC, "d.example", cert("192.0.2.5", late), cert("192.0.2.5", late))
	all := map[string]float64{a + "|a.example:443": float64(early.Unix()), a + "|b.example:443": float64(late.Unix()),
		c + "|d.example:443": float64(late.Unix())}
	// The server's clock stands still, so alice's two were created at
	// once: a cap keeps the smaller id's, and carol's one by round-robin.
	capped := map[string]float64{a + "|a.example:443": float64(early.Unix()), c + "|d.example:443": float64(late.Unix())}
	if idB < idA {
		capped = map[string]float64{a + "|b.example:443": float64(late.Unix()), c + "|d.example:443": float64(late.Unix())}
	}

	// Without a token the series are served to no one.
	if code, got, _, raw := e.scrape(""); code != http.StatusOK || len(got) != 0 || strings.Contains(raw, "certificate_expiry") {
		t.Errorf("anonymous scrape without a token configured: got %d %v, want 200 without expiry series", code, got)
	}
	if code, got, _, _ := e.scrape("anything-anything-anything-anything"); code != http.StatusOK || len(got) != 0 {
		t.Errorf("scrape with a token, none configured: got %d %v, want 200 without expiry series", code, got)
	}

	tok := "metrics-" + strings.Repeat("0123456789", 4)
	tokenFile := filepath.Join(t.TempDir(), "metrics-token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		max     int
		want    map[string]float64
		dropped float64
	}{
		{10, all, 0},
		{2, capped, 1},
	} {
		t.Run(fmt.Sprint("max ", tc.max), func(t *testing.T) {
			m := newEnvWith(t, Config{ExpiryMetricsTokenFile: tokenFile, ExpiryMetricsMaxSeries: tc.max,
				Metrics: prometheus.NewRegistry()}, e.rdb)
			if code, got, _, _ := m.scrape(""); code != http.StatusOK || len(got) != 0 {
				t.Errorf("anonymous scrape: got %d %v, want 200 without expiry series", code, got)
			}
			if code, got, _, _ := m.scrape(tok + "x"); code != http.StatusUnauthorized || len(got) != 0 {
				t.Errorf("scrape with a wrong token: got %d %v, want 401", code, got)
			}
			code, got, dropped, _ := m.scrape(tok)
			if code != http.StatusOK || fmt.Sprint(got) != fmt.Sprint(tc.want) || dropped != tc.dropped {
				t.Fatalf("scrape with the token: got %d %v, dropped %v; want %v, dropped %v", code, got, dropped, tc.want, tc.dropped)
			}
			// Read once per 15s: carol opting out shows at the next read,
			// not at once, and the dropped count does not grow per scrape.
			st := alerts.DefaultSettings()
			if _, err := eng.PutSettings(ctx, c, st); err != nil {
				t.Fatal(err)
			}
			defer func() {
				st.ExpiryMetrics = true
				if _, err := eng.PutSettings(ctx, c, st); err != nil {
					t.Fatal(err)
				}
			}()
			if _, again, dropped2, _ := m.scrape(tok); fmt.Sprint(again) != fmt.Sprint(got) || dropped2 != dropped {
				t.Errorf("second scrape at once: got %v, dropped %v; want the first's %v, dropped %v", again, dropped2, got, dropped)
			}
		})
	}
}
