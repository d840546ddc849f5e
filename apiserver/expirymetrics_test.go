package apiserver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// The expiry gauge has one series per scanned domain of each tenant that
// opted in, valued at the earliest notAfter over regions and IPs; a tenant
// that did not opt in has none; past the cap, series are counted as
// dropped instead of exported.
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
	const keyA, keyB = "key-of-alice-0123456789", "key-of-bob-0123456789"
	a := tenant("alice@example.com", keyA, true)
	tenant("bob@example.com", keyB, false)
	idA := scan(keyA, "a.example", cert("192.0.2.1", late), cert("192.0.2.2", early))
	idB := scan(keyA, "b.example", cert("192.0.2.3", late), cert("192.0.2.3", late))
	// The server's clock stands still, so both were created at once: a cap
	// keeps the smaller id's.
	first := map[string]float64{a + "|a.example:443": float64(early.Unix())}
	if idB < idA {
		first = map[string]float64{a + "|b.example:443": float64(late.Unix())}
	}
	e.add(keyA, "unscanned.example:443")
	scan(keyB, "c.example", cert("192.0.2.4", early), cert("192.0.2.4", early))

	for _, tc := range []struct {
		max     int
		want    map[string]float64 // tenant|domain: value
		dropped float64
	}{
		{10, map[string]float64{a + "|a.example:443": float64(early.Unix()), a + "|b.example:443": float64(late.Unix())}, 0},
		{1, first, 1},
	} {
		t.Run(fmt.Sprint("max ", tc.max), func(t *testing.T) {
			e.srv.cfg.ExpiryMetricsMaxSeries = tc.max
			reg := prometheus.NewRegistry()
			if err := e.srv.RegisterMetrics(reg); err != nil {
				t.Fatal(err)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			var dropped float64
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					switch mf.GetName() {
					case "certfleet_certificate_expiry_timestamp_seconds":
						l := map[string]string{}
						for _, lp := range m.GetLabel() {
							l[lp.GetName()] = lp.GetValue()
						}
						got[l["tenant"]+"|"+l["domain"]] = m.GetGauge().GetValue()
					case "certfleet_certificate_expiry_series_dropped_total":
						dropped = m.GetCounter().GetValue()
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || dropped != tc.dropped {
				t.Fatalf("got series %v, dropped %v; want %v, dropped %v", got, dropped, tc.want, tc.dropped)
			}
		})
	}
}
