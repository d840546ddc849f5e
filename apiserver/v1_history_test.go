package apiserver

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// historyScan is one scan_results row of the history tests.
type historyScan struct {
	tenant, domain, region, ip string
	job                        uuid.UUID
	ago                        time.Duration // scheduled now-ago
	took                       time.Duration // scanned this long after
	outcome, leaf              string
	issuer, keyType, tls       string
	keyBits                    uint16
	expiresIn                  time.Duration
	handshakeMS                uint32
}

func (s historyScan) row() schema.ScanRow {
	at := now.Add(-s.ago)
	r := schema.ScanRow{EventID: uuid.New(), JobID: s.job, ScheduledAt: at, TenantID: s.tenant, DomainID: s.domain,
		Host: "www.example.com", Port: 443, Region: s.region, Agent: s.region + "-1", IP: s.ip, Outcome: s.outcome,
		SANs: []string{}, LegacyTLS: []string{}, StartedAt: at, ScannedAt: at.Add(s.took), ConnectMS: 5, HandshakeMS: s.handshakeMS}
	if s.leaf != "" {
		nb, na := at.Add(-30*24*time.Hour), now.Add(s.expiresIn)
		r.CertificateFound, r.LeafSHA256, r.Subject, r.Issuer, r.Serial = true, s.leaf, "CN=www.example.com", s.issuer, "serial-"+s.leaf
		r.NotBefore, r.NotAfter, r.KeyType, r.KeyBits, r.TLSVersion = &nb, &na, s.keyType, s.keyBits, s.tls
	}
	return r
}

type historyPage struct {
	Error      string            `json:"error"`
	DomainID   string            `json:"domain_id"`
	Data       []v1.HistoryEntry `json:"data"`
	NextCursor *string           `json:"next_cursor"`
}

// entryKey names an entry in failures: region, IP, leaf, hours ago.
type entryKey struct {
	Region, IP, Leaf string
	Hours            int
}

func historyKeys(es []v1.HistoryEntry) []entryKey {
	out := []entryKey{}
	for _, e := range es {
		k := entryKey{Region: e.Region, Hours: int(now.Sub(e.ScheduledAt).Hours())}
		if e.IP != nil {
			k.IP = *e.IP
		}
		if e.LeafSHA256 != nil {
			k.Leaf = *e.LeafSHA256
		}
		out = append(out, k)
	}
	return out
}

// TestScanHistoryAPI: GET /domains/{id}/history, /certificates and /stats
// on known rows: a rescan collapses (FINAL keeps the later scan), two
// regions, an IP change and a renewal that reaches one region first;
// cursor paging, filters, bad parameters, another tenant's domain (404),
// keys without read scope (403) and a server without ClickHouse (503).
func TestScanHistoryAPI(t *testing.T) {
	ctx := context.Background()
	h := newHistoryEnv(t)
	conn, rdb, srv, api, alice, bob := h.conn, h.rdb, h.srv, h.api, h.alice, h.bob
	id := addCheckDomain(t, srv, alice.id, "www.example.com", 443)
	other := addCheckDomain(t, srv, alice.id, "api.example.com", 443)
	bobs := addCheckDomain(t, srv, bob.id, "www.example.com", 443)

	const (
		ip1, ip2 = "192.0.2.1", "198.51.100.7"
		day      = 24 * time.Hour
	)
	job1, job2, job3 := uuid.New(), uuid.New(), uuid.New()
	leafA := historyScan{outcome: "ok", leaf: "aaaa", issuer: "CA One", keyType: "ECDSA", keyBits: 256, tls: "TLS 1.3", expiresIn: 10 * day}
	leafB := historyScan{outcome: "ok", leaf: "bbbb", issuer: "CA Two", keyType: "RSA", keyBits: 2048, tls: "TLS 1.3", expiresIn: 90 * day}
	with := func(s historyScan, tenant, domain, region, ip string, job uuid.UUID, ago, took time.Duration, hs uint32) historyScan {
		s.tenant, s.domain, s.region, s.ip, s.job, s.ago, s.took, s.handshakeMS = tenant, domain, region, ip, job, ago, took, hs
		return s
	}
	ghost := leafA
	ghost.leaf = "9999" // the first scan of a job rescanned later: FINAL keeps the rescan
	scans := []historyScan{
		with(leafA, alice.id, id, "eu", ip1, job1, 3*time.Hour, time.Second, 10),
		with(leafA, alice.id, id, "us", ip1, job1, 3*time.Hour, 2*time.Second, 30),
		with(ghost, alice.id, id, "eu", ip1, job2, 2*time.Hour, 5*time.Second, 99),
		with(leafA, alice.id, id, "eu", ip1, job2, 2*time.Hour, 10*time.Minute, 20),
		with(leafB, alice.id, id, "us", ip1, job2, 2*time.Hour, time.Second, 30), // the renewal reaches us first
		with(leafB, alice.id, id, "eu", ip2, job3, time.Hour, time.Second, 40),   // then the IP changes
		with(leafB, alice.id, id, "us", ip2, job3, time.Hour, time.Second, 30),
		with(historyScan{outcome: "timeout"}, alice.id, other, "eu", "203.0.113.5", uuid.New(), time.Hour, time.Second, 0),
		with(historyScan{outcome: "ok", leaf: "eeee", issuer: "Old CA", keyType: "RSA", keyBits: 2048, tls: "TLS 1.2", expiresIn: -day},
			alice.id, other, "eu", "203.0.113.6", uuid.New(), 3*day, time.Second, 50),
		with(historyScan{outcome: "ok", leaf: "dddd", issuer: "Ancient CA", keyType: "RSA", keyBits: 1024, tls: "TLS 1.0", expiresIn: day},
			alice.id, other, "eu", "203.0.113.7", uuid.New(), 40*day, time.Second, 50),
		with(historyScan{outcome: "ok", leaf: "bbbb", issuer: "Bob CA", keyType: "RSA", keyBits: 4096, tls: "TLS 1.3", expiresIn: day},
			bob.id, bobs, "eu", ip1, uuid.New(), time.Hour, time.Second, 50),
	}
	for _, s := range scans {
		// Each in its own insert, as a redelivery arrives: parts merge
		// later, if ever; reads must collapse them themselves.
		if err := schema.InsertScanRows(ctx, conn, []schema.ScanRow{s.row()}); err != nil {
			t.Fatal(err)
		}
	}

	all := []entryKey{{"eu", ip2, "bbbb", 1}, {"us", ip2, "bbbb", 1}, {"eu", ip1, "aaaa", 2}, {"us", ip1, "bbbb", 2},
		{"eu", ip1, "aaaa", 3}, {"us", ip1, "aaaa", 3}}
	t.Run("history", func(t *testing.T) {
		tests := []struct {
			name  string
			query string
			want  []entryKey
		}{
			{"all", "", all},
			{"region", "?region=us", []entryKey{all[1], all[3], all[5]}},
			{"ip", "?ip=" + ip2, all[:2]},
			{"from to", "?from=" + url.QueryEscape(now.Add(-2*time.Hour).Format(time.RFC3339)) +
				"&to=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339)), all[2:4]},
			{"from with offset", "?from=" + url.QueryEscape(now.Add(-time.Hour).In(time.FixedZone("", 2*3600)).Format(time.RFC3339)), all[:2]},
			{"nothing", "?region=ap", []entryKey{}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var p historyPage
				if code := api.call(http.MethodGet, "/domains/"+id+"/history"+tc.query, alice.read, "", &p); code != http.StatusOK {
					t.Fatalf("got HTTP %d %q, want 200", code, p.Error)
				}
				if got := historyKeys(p.Data); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %v, want %v", got, tc.want)
				}
				if p.NextCursor != nil {
					t.Errorf("got next_cursor %q on the only page, want null", *p.NextCursor)
				}
			})
		}
		var p historyPage
		api.call(http.MethodGet, "/domains/"+id+"/history?limit=1", alice.read, "", &p)
		e := p.Data[0]
		if e.NotAfter == nil || !e.NotAfter.Equal(now.Add(90*day)) || e.NoExpiry || e.TLSVersion == nil || *e.TLSVersion != "TLS 1.3" ||
			e.HandshakeMS != 40 || e.ConnectMS != 5 || e.Outcome != "ok" || e.JobID != job3.String() || !e.ScannedAt.Equal(now.Add(-time.Hour+time.Second)) {
			t.Errorf("newest entry: got %+v, want job3's eu scan", e)
		}
	})

	t.Run("paging", func(t *testing.T) {
		for _, limit := range []string{"1", "2", "4", "6"} {
			var got []entryKey
			cursor, pages := "", 0
			for {
				var p historyPage
				q := "?limit=" + limit
				if cursor != "" {
					q += "&cursor=" + url.QueryEscape(cursor)
				}
				if code := api.call(http.MethodGet, "/domains/"+id+"/history"+q, alice.read, "", &p); code != http.StatusOK {
					t.Fatalf("limit %s page %d: got HTTP %d %q", limit, pages+1, code, p.Error)
				}
				got = append(got, historyKeys(p.Data)...)
				pages++
				if p.NextCursor == nil {
					break
				}
				if pages > 10 {
					t.Fatalf("limit %s: more than 10 pages", limit)
				}
				cursor = *p.NextCursor
			}
			if !reflect.DeepEqual(got, all) {
				t.Errorf("limit %s: got %v over %d pages, want %v", limit, got, pages, all)
			}
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, q := range []string{
			"from=yesterday", "to=2030-06-01", "from=2030-06-01T12:00:00Z&to=2030-06-01T11:00:00Z",
			"from=2030-06-01T12:00:00Z&to=2030-06-01T12:00:00Z", "from=1969-12-31T23:59:59Z", "cursor=abc",
			"cursor=" + url.QueryEscape("eyJ0IjoxfQ"), "limit=0", "limit=1001", "ip=example.com", "region=" + strings.Repeat("x", 65),
		} {
			var p historyPage
			if code := api.call(http.MethodGet, "/domains/"+id+"/history?"+q, alice.read, "", &p); code != http.StatusBadRequest || p.Error == "" {
				t.Errorf("%s: got HTTP %d %q, want 400 with an error", q, code, p.Error)
			}
		}
	})

	t.Run("certificates", func(t *testing.T) {
		var got struct {
			Error string                `json:"error"`
			Data  []v1.CertificateEntry `json:"data"`
		}
		if code := api.call(http.MethodGet, "/domains/"+id+"/certificates", alice.read, "", &got); code != http.StatusOK {
			t.Fatalf("got HTTP %d %q, want 200", code, got.Error)
		}
		seen := func(region, ip string, firstAgo, lastAgo time.Duration, scans uint64) v1.Sighting {
			return v1.Sighting{Region: region, IP: ip, FirstSeen: now.Add(-firstAgo), LastSeen: now.Add(-lastAgo), Scans: scans}
		}
		s := time.Second
		want := []v1.CertificateEntry{
			{LeafSHA256: "bbbb", Issuer: "CA Two", FirstSeen: now.Add(-2*time.Hour + s), LastSeen: now.Add(-time.Hour + s), Scans: 3,
				NotAfter: ptr(now.Add(90 * day)), Seen: []v1.Sighting{
					seen("eu", ip2, time.Hour-s, time.Hour-s, 1),
					seen("us", ip1, 2*time.Hour-s, 2*time.Hour-s, 1),
					seen("us", ip2, time.Hour-s, time.Hour-s, 1)}},
			{LeafSHA256: "aaaa", Issuer: "CA One", FirstSeen: now.Add(-3*time.Hour + s), LastSeen: now.Add(-2*time.Hour + 10*time.Minute), Scans: 3,
				NotAfter: ptr(now.Add(10 * day)), Seen: []v1.Sighting{
					seen("eu", ip1, 3*time.Hour-s, 2*time.Hour-10*time.Minute, 2),
					seen("us", ip1, 3*time.Hour-2*s, 3*time.Hour-2*s, 1)}},
		}
		if len(got.Data) != len(want) {
			t.Fatalf("got %d certificates %+v, want %d (bbbb, aaaa; not the ghost of the rescan)", len(got.Data), got.Data, len(want))
		}
		for i, w := range want {
			g := got.Data[i]
			if g.LeafSHA256 != w.LeafSHA256 || g.Issuer != w.Issuer || !g.FirstSeen.Equal(w.FirstSeen) || !g.LastSeen.Equal(w.LastSeen) ||
				g.Scans != w.Scans || g.NotAfter == nil || !g.NotAfter.Equal(*w.NotAfter) || g.Serial != "serial-"+w.LeafSHA256 ||
				g.Subject != "CN=www.example.com" || g.NoExpiry {
				t.Errorf("certificate %d: got %+v, want %+v", i, g, w)
			}
			if len(g.Seen) != len(w.Seen) {
				t.Errorf("certificate %s seen: got %+v, want %+v", w.LeafSHA256, g.Seen, w.Seen)
				continue
			}
			for j := range w.Seen {
				gs, ws := g.Seen[j], w.Seen[j]
				if gs.Region != ws.Region || gs.IP != ws.IP || !gs.FirstSeen.Equal(ws.FirstSeen) || !gs.LastSeen.Equal(ws.LastSeen) || gs.Scans != ws.Scans {
					t.Errorf("certificate %s seen %d: got %+v, want %+v", w.LeafSHA256, j, gs, ws)
				}
			}
		}
	})

	t.Run("stats", func(t *testing.T) {
		type stats struct {
			Error         string           `json:"error"`
			Window        string           `json:"window"`
			Domains       int              `json:"domains"`
			Registrations map[string]int   `json:"registrations"`
			ExpiryPlanner v1.ExpiryPlanner `json:"expiry_planner"`
			Issuers       []v1.StatsCount  `json:"issuers"`
			TLSVersions   []v1.StatsCount  `json:"tls_versions"`
			Keys          []v1.StatsCount  `json:"keys"`
			Regions       []v1.RegionStats `json:"regions"`
			Alerts        v1.AlertCounts   `json:"alerts"`
		}
		get := func(q string) stats {
			t.Helper()
			var s stats
			if code := api.call(http.MethodGet, "/stats"+q, alice.read, "", &s); code != http.StatusOK {
				t.Fatalf("%s: got HTTP %d %q, want 200", q, code, s.Error)
			}
			return s
		}
		// Alerts come from the alert store, not ClickHouse: an expired
		// certificate on alice's other domain, one expiring on bob's.
		result := func(ip, leaf string, expiresIn time.Duration) events.IPResult {
			return events.IPResult{IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: leaf,
				NotBefore: now.Add(-90 * day), NotAfter: now.Add(expiresIn), Issuer: "CN=Lab CA", KeyType: "ECDSA", KeyBits: 256,
				SignatureAlgorithm: "ECDSA-SHA256", ChainValid: true, HostnameValid: true, TLSVersion: "TLS 1.3"}
		}
		scanWithTenant(t, rdb, alice.id, other, "api.example.com", "eu", now.Add(-time.Hour), result("203.0.113.6", "eeee", -day))
		scanWithTenant(t, rdb, bob.id, bobs, "www.example.com", "eu", now.Add(-time.Hour), result(ip1, "bbbb", 3*day))
		s := get("")
		if want := (v1.AlertCounts{Open: map[string]int64{"ssl_expired": 1}, OpenTotal: 1, Raised: 1}); !reflect.DeepEqual(s.Alerts, want) {
			t.Errorf("alerts: got %+v, want %+v", s.Alerts, want)
		}
		if s.Window != "24h" {
			t.Errorf("window: got %q, want 24h", s.Window)
		}
		// No registration lookup yet: both of alice's domains are pending.
		if s.Domains != 2 || !reflect.DeepEqual(s.Registrations, map[string]int{"pending": 2}) {
			t.Errorf("domains %d registrations %v, want 2 pending", s.Domains, s.Registrations)
		}
		if want := []v1.StatsCount{sc("CA One", 1, 1, 1), sc("CA Two", 3, 1, 1)}; !reflect.DeepEqual(s.Issuers, want) {
			t.Errorf("issuers: got %+v, want %+v", s.Issuers, want)
		}
		if want := []v1.StatsCount{sc("TLS 1.3", 4, 1, 2)}; !reflect.DeepEqual(s.TLSVersions, want) {
			t.Errorf("tls versions: got %+v, want %+v", s.TLSVersions, want)
		}
		if want := []v1.StatsCount{sc("ECDSA 256", 1, 1, 1), sc("RSA 2048", 3, 1, 1)}; !reflect.DeepEqual(s.Keys, want) {
			t.Errorf("keys: got %+v, want %+v", s.Keys, want)
		}
		// now is Saturday 2030-06-01 (ISO week 22); leaf A expires on
		// 2030-06-11, in week 24; leaf B in 90 days, past the 12 weeks.
		p := s.ExpiryPlanner
		if len(p.Weeks) != 12 || p.Weeks[0].Week != "2030-W22" || !p.Weeks[0].StartsAt.Equal(time.Date(2030, 5, 27, 0, 0, 0, 0, time.UTC)) ||
			p.Weeks[11].Week != "2030-W33" {
			t.Fatalf("planner weeks: got %+v, want 2030-W22 (from Monday 2030-05-27) to 2030-W33", p.Weeks)
		}
		for i, w := range p.Weeks {
			want := uint64(0)
			if i == 2 {
				want = 1
			}
			if w.Certificates != want || w.Endpoints != want || w.Domains != want {
				t.Errorf("planner week %s: got %+v, want %d", w.Week, w, want)
			}
		}
		if p.Later != (v1.StatsCount{Endpoints: 3, Domains: 1, Certificates: 1}) || p.Expired != (v1.StatsCount{}) {
			t.Errorf("planner: got later %+v expired %+v, want later 3/1/1, none expired", p.Later, p.Expired)
		}
		for _, w := range p.Weeks {
			if w.Registrations != 0 {
				t.Errorf("planner week %s: %d registrations before any lookup", w.Week, w.Registrations)
			}
		}
		// example.com, under both of alice's domains, expires in 20 days
		// (2030-06-21, week 25): counted once, in that week.
		regExp := now.Add(20 * day)
		publishLookup(t, rdb, "example.com", events.RegistrationOK, now.Add(-time.Hour), &regExp)
		for i, w := range get("").ExpiryPlanner.Weeks {
			want := uint64(0)
			if i == 3 {
				want = 1
			}
			if w.Registrations != want {
				t.Errorf("planner week %s: got %d registrations, want %d", w.Week, w.Registrations, want)
			}
		}
		if len(s.Regions) != 2 {
			t.Fatalf("regions: got %+v, want eu and us", s.Regions)
		}
		eu, us := s.Regions[0], s.Regions[1]
		// Per-region counts come from the hourly rollup, which counts each
		// copy of a rescanned job: job2's first scan in eu too (99 ms).
		if eu.Region != "eu" || eu.Scans != 5 || eu.Errors != 1 || eu.ErrorRate != 0.2 ||
			!reflect.DeepEqual(eu.Outcomes, map[string]uint64{"ok": 4, "timeout": 1}) || eu.HandshakeP50MS == nil || *eu.HandshakeP50MS != 30 ||
			eu.HandshakeP95MS == nil || *eu.HandshakeP95MS != 90 {
			t.Errorf("eu: got %+v (p50 %v, p95 %v), want 5 scans (the rescan per copy), 1 timeout, p50 30 ms, p95 90 ms", eu, deref(eu.HandshakeP50MS), deref(eu.HandshakeP95MS))
		}
		if us.Region != "us" || us.Scans != 3 || us.Errors != 0 || us.ErrorRate != 0 || us.HandshakeP50MS == nil || *us.HandshakeP50MS != 30 ||
			us.HandshakeP95MS == nil || *us.HandshakeP95MS != 30 {
			t.Errorf("us: got %+v, want 3 ok scans, p50 and p95 30 ms", us)
		}

		// A week adds another domain's IP whose certificate expired: its
		// other IP's latest scan timed out and counts nowhere. 30 days add
		// nothing (the scan of 40 days ago is out).
		for _, w := range []string{"7d", "30d"} {
			s := get("?window=" + w)
			if want := []v1.StatsCount{sc("CA One", 1, 1, 1), sc("CA Two", 3, 1, 1), sc("Old CA", 1, 1, 1)}; !reflect.DeepEqual(s.Issuers, want) {
				t.Errorf("%s issuers: got %+v, want %+v", w, s.Issuers, want)
			}
			if s.ExpiryPlanner.Expired != (v1.StatsCount{Endpoints: 1, Domains: 1, Certificates: 1}) {
				t.Errorf("%s expired: got %+v, want 1/1/1", w, s.ExpiryPlanner.Expired)
			}
			if want := []v1.StatsCount{sc("TLS 1.2", 1, 1, 1), sc("TLS 1.3", 4, 1, 2)}; !reflect.DeepEqual(s.TLSVersions, want) {
				t.Errorf("%s tls versions: got %+v, want %+v", w, s.TLSVersions, want)
			}
		}
		var e struct {
			Error string `json:"error"`
		}
		if code := api.call(http.MethodGet, "/stats?window=1y", alice.read, "", &e); code != http.StatusBadRequest || e.Error == "" {
			t.Errorf("window=1y: got HTTP %d %q, want 400", code, e.Error)
		}
	})

	t.Run("access", func(t *testing.T) {
		var e struct {
			Error string `json:"error"`
		}
		for _, path := range []string{"/domains/" + id + "/history", "/domains/" + id + "/certificates"} {
			if code := api.call(http.MethodGet, path, bob.read, "", &e); code != http.StatusNotFound {
				t.Errorf("bob reading %s: got HTTP %d %q, want 404", path, code, e.Error)
			}
		}
		wk, err := srv.accounts.CreateKey(ctx, alice.id, "write only", []string{accounts.ScopeWrite}, nil, accounts.SourceCLI)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/domains/" + id + "/history", "/domains/" + id + "/certificates", "/stats"} {
			if code := api.call(http.MethodGet, path, wk.Key, "", &e); code != http.StatusForbidden {
				t.Errorf("write-only key on %s: got HTTP %d %q, want 403", path, code, e.Error)
			}
			if code := api.call(http.MethodGet, path, alice.write, "", &e); code != http.StatusOK {
				t.Errorf("read-write key on %s: got HTTP %d %q, want 200", path, code, e.Error)
			}
		}
		// Bob's stats are his alone.
		var s struct {
			Issuers []v1.StatsCount `json:"issuers"`
		}
		api.call(http.MethodGet, "/stats", bob.read, "", &s)
		if want := []v1.StatsCount{sc("Bob CA", 1, 1, 1)}; !reflect.DeepEqual(s.Issuers, want) {
			t.Errorf("bob's issuers: got %+v, want %+v", s.Issuers, want)
		}

		_, api2 := newCheckReplica(t, rdb, Config{Now: func() time.Time { return now }})
		for _, path := range []string{"/domains/" + id + "/history", "/domains/" + id + "/certificates", "/stats"} {
			if code := api2.call(http.MethodGet, path, alice.read, "", &e); code != http.StatusServiceUnavailable || e.Error == "" {
				t.Errorf("no clickhouse, %s: got HTTP %d %q, want 503 with an error", path, code, e.Error)
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }

// sc is a StatsCount: name, endpoints, domains, certificates.
func sc(name string, endpoints, domains, certs uint64) v1.StatsCount {
	return v1.StatsCount{Name: name, Endpoints: endpoints, Domains: domains, Certificates: certs}
}

// deref shows a quantile in failures: its value, or -1 for null.
func deref(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}
