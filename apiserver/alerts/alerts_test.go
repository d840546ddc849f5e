package alerts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/accounts/accountstest"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	tenant   = "tenant-a"
	domainID = "7d0f2a52-1111-4c55-9a4e-1d7f3c2b8e90"
	host     = "example.com"
)

var (
	t0  = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	day = 24 * time.Hour
)

// fixture is one Redis with projector replicas that evaluate alerts, and
// the domain added (its record, then its domain.added).
type fixture struct {
	t      *testing.T
	rdb    *redis.Client
	engine *Engine
	proj   []*projector.Projector
}

func newFixture(t *testing.T, replicas int) *fixture {
	t.Helper()
	f := &fixture{t: t, rdb: testenv.Redis(t).Client(t)}
	for i := range replicas {
		eng, err := New(Config{Now: func() time.Time { return t0.Add(365 * day) }}, f.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		p, err := projector.New(projector.Config{Consumer: fmt.Sprintf("proj-%d", i), Block: 20 * time.Millisecond,
			ClaimIdle: 50 * time.Millisecond, Evaluator: eng}, f.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		if f.engine == nil {
			f.engine = eng
		}
		f.proj = append(f.proj, p)
	}
	f.addDomain(tenant, domainID, host)
	return f
}

// addDomain adds the domain id of tnt named host:443 as the accounts
// store does: its record, then its domain.added.
func (f *fixture) addDomain(tnt, id, h string) {
	f.t.Helper()
	accountstest.PutDomain(f.t, f.rdb, tnt, id, h, 443)
	f.apply(tenantDomainEvent(f.t, events.DomainAdded, tnt, id, h, t0.Add(-day)))
}

// remove removes the fixture's domain as the accounts store does: it
// deletes the record and returns the domain.removed to apply.
func (f *fixture) remove(at time.Time) events.Envelope {
	f.t.Helper()
	accountstest.RemoveDomain(f.t, f.rdb, tenant, domainID)
	return domainEvent(f.t, events.DomainRemoved, host, at)
}

// apply feeds events through the first projector replica.
func (f *fixture) apply(evs ...events.Envelope) {
	f.t.Helper()
	for _, ev := range evs {
		if err := f.proj[0].Apply(context.Background(), ev); err != nil {
			f.t.Fatalf("apply %s: %v", ev.Name, err)
		}
	}
}

// domainEvent is the domain event name (added, updated, removed) of the
// fixture's domain, named h:443, at at.
func domainEvent(t *testing.T, name, h string, at time.Time) events.Envelope {
	t.Helper()
	return tenantDomainEvent(t, name, tenant, domainID, h, at)
}

// tenantDomainEvent is the domain event name of tnt's domain id, named
// h:443, at at.
func tenantDomainEvent(t *testing.T, name, tnt, id, h string, at time.Time) events.Envelope {
	t.Helper()
	var payload any = events.DomainAddedV1{DomainID: id, Host: h, Port: 443}
	switch name {
	case events.DomainUpdated:
		payload = events.DomainUpdatedV1{DomainID: id, Host: h, Port: 443, Active: true}
	case events.DomainRemoved:
		payload = events.DomainRemovedV1{DomainID: id, Host: h, Port: 443}
	}
	e, err := events.New(name, tnt, id, payload)
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}

// scan is a scan.completed of the domain from region finished at at.
func scan(t *testing.T, region string, at time.Time, results ...events.IPResult) events.Envelope {
	t.Helper()
	job := uuid.New()
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, domainID, events.ScanCompletedV1{
		JobID: job, DomainID: domainID, Host: host, Port: 443, Region: region, Agent: region + "-1",
		StartedAt: at.Add(-time.Second), FinishedAt: at, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// cert is an IP serving a valid certificate sha until notAfter.
func cert(ip, sha string, notAfter time.Time) events.IPResult {
	return events.IPResult{
		IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: sha,
		NotBefore: notAfter.Add(-90 * day), NotAfter: notAfter, Issuer: "CN=Lab CA",
		KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256",
		ChainValid: true, HostnameValid: true, TLSVersion: "TLS 1.3",
	}
}

func refused(ip string) events.IPResult {
	return events.IPResult{IP: ip, Outcome: events.OutcomeConnectionRefused}
}

// alertEvent is an alert event of the stream, raised or resolved.
type alertEvent struct {
	name     string
	raised   events.AlertRaisedV1
	resolved events.AlertResolvedV1
}

// String is "raised ssl_expiry/14 warning" or "resolved ssl_expiry: reason".
func (a alertEvent) String() string {
	if a.name == events.AlertRaised {
		s := "raised " + a.raised.AlertType
		if a.raised.ThresholdDays != nil {
			s += fmt.Sprintf("/%d", *a.raised.ThresholdDays)
		}
		return s + " " + a.raised.Severity
	}
	return "resolved " + a.resolved.AlertType + ": " + a.resolved.Reason
}

// alertEvents reads every alert event of the events stream, in order.
func (f *fixture) alertEvents() []alertEvent {
	f.t.Helper()
	evs, err := events.ReadAllEvents(context.Background(), f.rdb)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []alertEvent
	for _, e := range evs {
		a := alertEvent{name: e.Name}
		switch e.Name {
		case events.AlertRaised:
			err = e.Decode(&a.raised)
			if a.raised.AlertID != e.EventID.String() || e.TenantID != tenant {
				f.t.Errorf("raised event %s: got alert id %s, tenant %q; want the event id, %q", e.EventID, a.raised.AlertID, e.TenantID, tenant)
			}
		case events.AlertResolved:
			err = e.Decode(&a.resolved)
		default:
			continue
		}
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// since returns the alert events after the first n, as strings.
func (f *fixture) since(n int) []string {
	f.t.Helper()
	out := []string{}
	for _, a := range f.alertEvents()[n:] {
		out = append(out, a.String())
	}
	return out
}

// step applies evs and checks the alert events they caused.
func (f *fixture) step(name string, want []string, evs ...events.Envelope) {
	f.t.Helper()
	n := len(f.alertEvents())
	f.apply(evs...)
	got := f.since(n)
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if want == nil {
		want = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		f.t.Errorf("%s: got alert events %q, want %q", name, got, want)
	}
}

// list returns the tenant's alerts as "kind status", newest first.
func (f *fixture) list() []Alert {
	f.t.Helper()
	as, total, err := f.engine.List(context.Background(), tenant, "", 1, 100)
	if err != nil {
		f.t.Fatal(err)
	}
	if total != len(as) {
		f.t.Errorf("list: got total %d for %d alerts", total, len(as))
	}
	return as
}

func TestExpiryThresholdsAndRenewal(t *testing.T) {
	f := newFixture(t, 1)
	old := cert("192.0.2.1", "aaaa", t0.Add(20*day))
	f.step("first scan, 20 days left", []string{"raised ssl_expiry/30 warning"}, scan(t, "eu", t0, old))
	f.step("the same scan redelivered", nil, scan(t, "eu", t0, old))
	f.step("another region sees the same", nil, scan(t, "us", t0.Add(time.Minute), old))
	f.step("13 days left", []string{"raised ssl_expiry/14 warning"}, scan(t, "eu", t0.Add(7*day), old))
	f.step("still 13 days", nil, scan(t, "eu", t0.Add(7*day+time.Hour), old))
	f.step("5 days left", []string{"raised ssl_expiry/7 critical"}, scan(t, "eu", t0.Add(15*day), old))

	as := f.list()
	if len(as) != 3 || as[0].Status != StatusActive || *as[0].ThresholdDays != 7 || as[0].Title != "SSL certificate expires in 5 days" ||
		!strings.Contains(as[0].Message, "192.0.2.1 (eu, us)") || as[0].LeafSHA256 != "aaaa" || as[0].Hostname != host || as[0].Port != 443 {
		t.Fatalf("list after three crossings: got %+v", as)
	}

	// A renewed certificate resolves every expiry alert of the old one,
	// and is a cert_changed notice on the IP.
	renewed := cert("192.0.2.1", "bbbb", t0.Add(100*day))
	f.step("renewed in eu", []string{
		"raised cert_changed info",
		"resolved ssl_expiry: certificate replaced",
		"resolved ssl_expiry: certificate replaced",
		"resolved ssl_expiry: certificate replaced",
	}, scan(t, "eu", t0.Add(15*day+time.Hour), renewed), scan(t, "us", t0.Add(15*day+time.Hour), renewed))
	as = f.list()
	var statuses []string
	for _, a := range as {
		statuses = append(statuses, a.AlertType+" "+a.Status)
	}
	want := []string{"cert_changed notice", "ssl_expiry resolved", "ssl_expiry resolved", "ssl_expiry resolved"}
	if !reflect.DeepEqual(statuses, want) {
		t.Errorf("list after renewal: got %v, want %v", statuses, want)
	}
	if as[1].ResolvedAt == nil || !as[1].ResolvedAt.Equal(t0.Add(15*day+time.Hour)) || as[1].Reason != ReasonReplaced {
		t.Errorf("resolved alert: got resolved_at %v reason %q, want %s %q", as[1].ResolvedAt, as[1].Reason, t0.Add(15*day+time.Hour), ReasonReplaced)
	}
}

func TestFirstSightRaisesOnlyTheTightest(t *testing.T) {
	tests := []struct {
		name     string
		notAfter time.Time
		want     []string
		title    string
	}{
		{"5 days", t0.Add(5*day + time.Hour), []string{"raised ssl_expiry/7 critical"}, "SSL certificate expires in 5 days"},
		{"half a day", t0.Add(12 * time.Hour), []string{"raised ssl_expiry/1 critical"}, "SSL certificate expires within a day"},
		{"expired", t0.Add(-day), []string{"raised ssl_expired critical"}, "SSL certificate expired"},
		{"90 days", t0.Add(90 * day), nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 1)
			f.step("first scan", tc.want, scan(t, "eu", t0, cert("192.0.2.1", "aaaa", tc.notAfter)))
			if as := f.list(); len(as) > 0 && as[0].Title != tc.title {
				t.Errorf("title: got %q, want %q", as[0].Title, tc.title)
			}
			f.step("renewed", append([]string{"raised cert_changed info"}, replaceRaised(tc.want)...),
				scan(t, "eu", t0.Add(time.Hour), cert("192.0.2.1", "bbbb", t0.Add(90*day))))
		})
	}
}

// replaceRaised is what a renewal resolves of raised.
func replaceRaised(raised []string) []string {
	var out []string
	for _, r := range raised {
		kind := strings.Fields(strings.TrimPrefix(r, "raised "))[0]
		kind, _, _ = strings.Cut(kind, "/")
		out = append(out, "resolved "+kind+": "+ReasonReplaced)
	}
	return out
}

func TestCertificateFaults(t *testing.T) {
	f := newFixture(t, 1)
	self := cert("192.0.2.1", "aaaa", t0.Add(90*day))
	self.ChainValid, self.Detail = false, "unknown-authority"
	wrong := cert("192.0.2.2", "bbbb", t0.Add(90*day))
	wrong.HostnameValid = false
	f.step("self-signed and wrong name on two IPs, two regions", []string{
		"raised chain_invalid critical", "raised hostname_mismatch critical",
	}, scan(t, "eu", t0, self, wrong), scan(t, "us", t0.Add(time.Minute), self, wrong))
	for _, a := range f.list() {
		switch a.AlertType {
		case events.AlertChainInvalid:
			// Raised by eu's scan, before us saw it.
			if !reflect.DeepEqual(a.IPs, []string{"192.0.2.1"}) || !reflect.DeepEqual(a.Regions, []string{"eu"}) ||
				!strings.Contains(a.Message, "unknown-authority") {
				t.Errorf("chain_invalid: got ips %v regions %v message %q", a.IPs, a.Regions, a.Message)
			}
		case events.AlertHostnameMismatch:
			if !reflect.DeepEqual(a.IPs, []string{"192.0.2.2"}) {
				t.Errorf("hostname_mismatch: got ips %v, want [192.0.2.2]", a.IPs)
			}
		}
	}
	// Every IP failing says nothing about certificates: the alerts stay.
	f.step("every IP refuses", nil, scan(t, "eu", t0.Add(time.Hour), refused("192.0.2.1"), refused("192.0.2.2")),
		scan(t, "us", t0.Add(time.Hour), refused("192.0.2.1"), refused("192.0.2.2")))
	good := cert("192.0.2.1", "cccc", t0.Add(90*day))
	f.step("fixed", []string{"resolved chain_invalid: condition cleared", "resolved hostname_mismatch: condition cleared",
		"raised cert_changed info"},
		scan(t, "eu", t0.Add(2*time.Hour), good), scan(t, "us", t0.Add(2*time.Hour), good))
}

func TestScanFailing(t *testing.T) {
	f := newFixture(t, 1)
	ok := cert("192.0.2.1", "aaaa", t0.Add(90*day))
	f.step("1st failure", nil, scan(t, "eu", t0, ok, refused("192.0.2.2")))
	f.step("2nd failure", nil, scan(t, "eu", t0.Add(time.Hour), ok, refused("192.0.2.2")))
	f.step("us fails once", nil, scan(t, "us", t0.Add(time.Hour), ok, refused("192.0.2.2")))
	f.step("3rd failure", []string{"raised scan_failing warning"}, scan(t, "eu", t0.Add(2*time.Hour), ok, refused("192.0.2.2")))
	as := f.list()
	if len(as) != 1 || !reflect.DeepEqual(as[0].IPs, []string{"192.0.2.2"}) || !reflect.DeepEqual(as[0].Regions, []string{"eu"}) ||
		!strings.Contains(as[0].Message, "192.0.2.2 from eu: connection-refused") {
		t.Fatalf("scan_failing: got %+v", as)
	}
	f.step("4th failure", nil, scan(t, "eu", t0.Add(3*time.Hour), ok, refused("192.0.2.2")))
	f.step("eu recovers, us has failed twice", []string{"resolved scan_failing: condition cleared"},
		scan(t, "eu", t0.Add(4*time.Hour), ok), scan(t, "us", t0.Add(4*time.Hour), ok, refused("192.0.2.2")))

	// A tenant alerting after the first failure.
	if _, err := f.engine.PutSettings(context.Background(), tenant, Settings{ExpiryThresholdsDays: []int{30}, ScanFailingAfter: 1}); err != nil {
		t.Fatal(err)
	}
	f.step("us fails a 3rd time, threshold 1", []string{"raised scan_failing warning"},
		scan(t, "us", t0.Add(5*time.Hour), refused("192.0.2.1")))
}

func TestRegionMismatch(t *testing.T) {
	f := newFixture(t, 1)
	a := cert("192.0.2.1", "aaaa", t0.Add(90*day))
	b := cert("192.0.2.1", "bbbb", t0.Add(90*day))
	f.step("eu sees a", nil, scan(t, "eu", t0, a))
	// Regions disagreeing is not a change while one still sees the leaf
	// last known on the IP.
	f.step("us sees b an hour later: too far apart to compare", nil, scan(t, "us", t0.Add(time.Hour), b))
	f.step("eu sees a 5 minutes after us saw b", []string{"raised region_mismatch warning"}, scan(t, "eu", t0.Add(time.Hour+5*time.Minute), a))
	as := f.list()
	if as[0].AlertType != events.AlertRegionMismatch || !strings.Contains(as[0].Message, "on 192.0.2.1 eu sees aaaa and us sees bbbb") {
		t.Errorf("region_mismatch: got %+v", as[0])
	}
	f.step("us scans again long after: nothing to compare, it stays", nil, scan(t, "us", t0.Add(3*time.Hour), b))
	f.step("eu sees b too", []string{"resolved region_mismatch: condition cleared", "raised cert_changed info"},
		scan(t, "eu", t0.Add(3*time.Hour+time.Minute), b))
}

// A region whose agents fell silent stops counting: the disagreement it
// was part of and its failures resolve at the next scan of another region,
// and come back when the region does.
func TestStaleRegionStopsCounting(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	seen := func(region string, at time.Time) {
		t.Helper()
		if err := presence.Seen(ctx, f.rdb, region, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.engine.PutSettings(ctx, tenant, Settings{ExpiryThresholdsDays: []int{30}, ScanFailingAfter: 1}); err != nil {
		t.Fatal(err)
	}
	a := cert("192.0.2.1", "aaaa", t0.Add(90*day))
	b := cert("192.0.2.1", "bbbb", t0.Add(90*day))
	seen("eu", t0)
	seen("us", t0)
	f.step("eu sees a", nil, scan(t, "eu", t0, a))
	f.step("us sees b and fails on another IP", []string{"raised region_mismatch warning", "raised scan_failing warning"},
		scan(t, "us", t0.Add(time.Minute), b, refused("192.0.2.2")))
	// us's agents last said they were alive at t0+1m; eu scans 8 minutes
	// later: us is not stale yet (10m), nothing changes.
	seen("us", t0.Add(time.Minute))
	seen("eu", t0.Add(9*time.Minute))
	f.step("eu sees a, us seen 8m ago", nil, scan(t, "eu", t0.Add(9*time.Minute), a))
	seen("eu", t0.Add(12*time.Minute))
	f.step("eu sees a, us silent for 11m", []string{"resolved region_mismatch: condition cleared", "resolved scan_failing: condition cleared"},
		scan(t, "eu", t0.Add(12*time.Minute), a))
	seen("us", t0.Add(20*time.Minute))
	f.step("us is back and still sees b", []string{"raised region_mismatch warning", "raised scan_failing warning"},
		scan(t, "us", t0.Add(20*time.Minute), b, refused("192.0.2.2")))
}

func TestRemoveAndRename(t *testing.T) {
	f := newFixture(t, 1)
	expired := cert("192.0.2.1", "aaaa", t0.Add(-day))
	f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
	f.step("renamed", []string{"resolved ssl_expired: domain renamed"}, domainEvent(t, events.DomainUpdated, "www.example.com", t0.Add(time.Hour)))
	f.step("scan of the old name dropped", nil, scan(t, "eu", t0.Add(2*time.Hour), expired))

	g := newFixture(t, 1)
	g.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, expired))
	g.step("removed", []string{"resolved ssl_expired: domain removed"}, g.remove(t0.Add(time.Hour)))
	as := g.list()
	if len(as) != 1 || as[0].Status != StatusResolved || !as[0].ResolvedAt.Equal(t0.Add(365*day)) {
		t.Errorf("removed: got %+v, want one alert resolved at the engine's clock", as)
	}
}

func TestSettingsChangeAppliesAtNextEvaluation(t *testing.T) {
	f := newFixture(t, 1)
	c := cert("192.0.2.1", "aaaa", t0.Add(20*day))
	f.step("20 days", []string{"raised ssl_expiry/30 warning"}, scan(t, "eu", t0, c))
	s, err := f.engine.PutSettings(context.Background(), tenant, Settings{ExpiryThresholdsDays: []int{10, 21, 60}, ScanFailingAfter: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.ExpiryThresholdsDays, []int{60, 21, 10}) {
		t.Errorf("settings: got thresholds %v, want [60 21 10]", s.ExpiryThresholdsDays)
	}
	// 30 is no longer a threshold; 60 and 21 are crossed at once: the
	// tightest is raised.
	f.step("next scan", []string{"resolved ssl_expiry: threshold removed", "raised ssl_expiry/21 warning"}, scan(t, "eu", t0.Add(time.Hour), c))
}

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		name string
		s    Settings
		want string
	}{
		{"defaults", DefaultSettings(), ""},
		{"no thresholds", Settings{ScanFailingAfter: 3}, "expiry_thresholds_days must hold 1 to 10 values, got 0"},
		{"eleven", Settings{ExpiryThresholdsDays: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, ScanFailingAfter: 3}, "got 11"},
		{"zero", Settings{ExpiryThresholdsDays: []int{0}, ScanFailingAfter: 3}, "values must be from 1 to 365, got 0"},
		{"366", Settings{ExpiryThresholdsDays: []int{366}, ScanFailingAfter: 3}, "got 366"},
		{"twice", Settings{ExpiryThresholdsDays: []int{7, 7}, ScanFailingAfter: 3}, "must be distinct, got 7 twice"},
		{"failing 0", Settings{ExpiryThresholdsDays: []int{7}}, "scan_failing_after must be from 1 to 20, got 0"},
		{"failing 21", Settings{ExpiryThresholdsDays: []int{7}, ScanFailingAfter: 21}, "got 21"},
		{"bounds", Settings{ExpiryThresholdsDays: []int{1, 365}, ScanFailingAfter: 20}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestStalePlansChangeNothing replays what a slow replica does: it planned
// from an older snapshot (or its script ran already) and applies late.
func TestStalePlansChangeNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	f.step("20 days", []string{"raised ssl_expiry/30 warning"}, scan(t, "eu", t0, cert("192.0.2.1", "aaaa", t0.Add(20*day))))

	// A replica reads the view and the state, then stalls.
	snap, err := projector.ReadSnapshot(ctx, f.rdb, domainID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeState(domainID, f.state(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile the view moves on (renewed) and is evaluated.
	f.step("renewed", []string{"raised cert_changed info", "resolved ssl_expiry: certificate replaced"},
		scan(t, "eu", t0.Add(time.Hour), cert("192.0.2.1", "bbbb", t0.Add(90*day))))
	n := len(f.alertEvents())

	// The stalled replica's plan, from the old snapshot at 13 days left,
	// would raise the 14-day threshold of the old certificate.
	snap.Entries[0].ScannedAt = snap.Entries[0].ScannedAt.Add(7 * day)
	ch, err := plan(st, snap, facts{}, tenant, DefaultSettings(), f.engine.cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.raised) != 1 {
		t.Fatalf("stale plan: got %d raises, want the 14-day one", len(ch.raised))
	}
	evaluated, err := f.rdb.HGet(ctx, accounts.DomainKey(tenant, domainID), verField).Int64()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		readVer int64
		want    string
	}{
		// What it read is no longer the state: it would plan again...
		{"state moved since it was read", st.ver, "stale"},
		// ...and, reading the state anew, finds a newer snapshot evaluated.
		{"snapshot older than the one evaluated", evaluated, "old"},
	}
	for _, tc := range tests {
		res, err := f.engine.apply(ctx, domainID, tenant, tc.readVer, snap.Version, ch)
		if err != nil || res != tc.want {
			t.Errorf("%s: got %q %v, want %q", tc.name, res, err, tc.want)
		}
	}
	// A script retried after it ran (a lost reply) finds its own version.
	cur, err := projector.ReadSnapshot(ctx, f.rdb, domainID)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := f.engine.apply(ctx, domainID, tenant, evaluated, cur.Version, ch); err != nil || res != "old" {
		t.Errorf("retried script: got %q %v, want old", res, err)
	}
	if got := f.since(n); len(got) != 0 {
		t.Errorf("alert events from stale plans: got %q, want none", got)
	}
	if as := f.list(); len(as) != 2 {
		t.Errorf("list: got %d alerts, want 2", len(as))
	}
}

// TestScriptFlushed: a Redis that lost its scripts (restart, SCRIPT FLUSH)
// makes the batch's EVALSHA fail; each domain is then evaluated with Run.
func TestScriptFlushed(t *testing.T) {
	f := newFixture(t, 1)
	if err := f.rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	f.step("expired", []string{"raised ssl_expired critical"}, scan(t, "eu", t0, cert("192.0.2.1", "aaaa", t0.Add(-day))))
}

// TestUnusableStateIsSkipped: a domain whose alert state cannot be decoded
// is logged and skipped; the batch, and the other domains in it, go on.
func TestUnusableStateIsSkipped(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	const other = "7d0f2a52-2222-4c55-9a4e-1d7f3c2b8e90"
	accountstest.PutDomain(t, f.rdb, tenant, other, "other.example.com", 443)
	if err := f.rdb.HSet(ctx, accounts.DomainKey(tenant, domainID), condPrefix+"chain_invalid", "{not json").Err(); err != nil {
		t.Fatal(err)
	}
	job := uuid.New()
	otherScan, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, tenant, other, events.ScanCompletedV1{
		JobID: job, DomainID: other, Host: "other.example.com", Port: 443, Region: "eu", FinishedAt: t0,
		Results: []events.IPResult{cert("192.0.2.9", "cccc", t0.Add(-day))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.proj[0].ApplyBatch(ctx, []events.Envelope{scan(t, "eu", t0, cert("192.0.2.1", "aaaa", t0.Add(-day))), otherScan}); err != nil {
		t.Fatalf("batch: got %v, want it applied", err)
	}
	as := f.list()
	if len(as) != 1 || as[0].DomainID != other || as[0].AlertType != events.AlertSSLExpired {
		t.Errorf("alerts: got %+v, want only the other domain's ssl_expired", as)
	}
}

// A domain a held key added (accounts/held.go) raises nothing; once the
// key is approved its next scan is evaluated as a first sight.
func TestHeldDomainRaisesNothing(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	// The field of accounts' domain record that AddDomain writes for a
	// held key and ApproveKey removes.
	rec := accounts.DomainKey(tenant, domainID)
	if err := f.rdb.HSet(ctx, rec, "held_by", "key-1").Err(); err != nil {
		t.Fatal(err)
	}
	old := cert("192.0.2.1", "aaaa", t0.Add(20*day))
	f.step("held: 20 days left", nil, scan(t, "eu", t0, old))
	f.step("held: 5 days left", nil, scan(t, "eu", t0.Add(15*day), old))
	if as := f.list(); len(as) != 0 {
		t.Fatalf("alerts of a held domain: got %+v, want none", as)
	}
	if err := f.rdb.HDel(ctx, rec, "held_by").Err(); err != nil {
		t.Fatal(err)
	}
	f.step("approved: next scan", []string{"raised ssl_expiry/7 critical"}, scan(t, "eu", t0.Add(15*day+time.Hour), old))
}

func TestListPageBounds(t *testing.T) {
	f := newFixture(t, 1)
	f.apply(scan(t, "eu", t0, cert("192.0.2.1", "aaaa", t0.Add(20*day))))
	const maxInt = int(^uint(0) >> 1)
	tests := []struct {
		page, perPage int
		want          int // alerts on the page; -1 = ErrBadPage
	}{
		{1, 10, 1},
		{2, 10, 0},
		{maxInt, 100, -1},
		{maxInt/100 + 1, 100, -1},
		{maxInt / 100, 100, 0}, // the last page whose items' offsets fit: empty
		{0, 10, -1},
		{1, 0, -1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d×%d", tt.page, tt.perPage), func(t *testing.T) {
			as, _, err := f.engine.List(context.Background(), tenant, "", tt.page, tt.perPage)
			if tt.want < 0 {
				if !errors.Is(err, ErrBadPage) {
					t.Fatalf("got %d alerts, %v; want ErrBadPage", len(as), err)
				}
				return
			}
			if err != nil || len(as) != tt.want {
				t.Fatalf("got %d alerts, %v; want %d", len(as), err, tt.want)
			}
		})
	}
}

// A certificate without a well-defined expiration (notAfter
// 99991231235959Z) never counts down to an expiry alert.
func TestNoExpiryRaisesNoExpiryAlert(t *testing.T) {
	f := newFixture(t, 1)
	f.step("no expiry", nil, scan(t, "eu", t0, cert("192.0.2.1", "aaaa", events.NoExpiry)))
	f.step("a year later", nil, scan(t, "eu", t0.Add(365*day), cert("192.0.2.1", "aaaa", events.NoExpiry)))
}
