package projector

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

const (
	tenant   = "tenant-a"
	domainID = "domain-1"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newProjector(t *testing.T) (*Projector, *redis.Client) {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	p, err := New(Config{Consumer: "test", Block: 20 * time.Millisecond}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new projector: %v", err)
	}
	return p, rdb
}

func okResult(ip, sha string, notAfter time.Time) events.IPResult {
	return events.IPResult{
		IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: sha,
		NotAfter: notAfter, Issuer: "CN=Lab CA", ChainValid: true, HostnameValid: true, TLSVersion: "TLS 1.3",
	}
}

// scan builds the scan.completed event of domainID from region, finished at
// finished, with the given results.
func scan(t *testing.T, region string, finished time.Time, results ...events.IPResult) events.Envelope {
	t.Helper()
	return scanOf(t, "example.com", 443, region, finished, results...)
}

// scanOf is scan of the domain under the name host:port.
func scanOf(t *testing.T, host string, port int, region string, finished time.Time, results ...events.IPResult) events.Envelope {
	t.Helper()
	job := uuid.New()
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, domainID, events.ScanCompletedV1{
		JobID: job, DomainID: domainID, Host: host, Port: port, Region: region, Agent: "a1",
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func removed(t *testing.T, at time.Time) events.Envelope {
	t.Helper()
	e, err := events.New(events.DomainRemoved, tenant, domainID, events.DomainRemovedV1{DomainID: domainID, Host: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}

func view(t *testing.T, rdb redis.UniversalClient) []ExpEntry {
	t.Helper()
	got, err := Expiration(context.Background(), rdb, domainID)
	if err != nil {
		t.Fatalf("expiration: %v", err)
	}
	return got
}

// summary is region|ip=sha of each entry, in order.
func summary(entries []ExpEntry) []string {
	out := []string{}
	for _, e := range entries {
		out = append(out, e.Region+"|"+e.IP+"="+e.LeafSHA256)
	}
	return out
}

func TestApplyScan(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	ev := scan(t, "eu-west", t0, okResult("192.0.2.2", "bb", na), okResult("192.0.2.1", "aa", na),
		events.IPResult{IP: "2001:db8::1", Outcome: events.OutcomeConnectionRefused})
	if err := p.Apply(ctx, ev); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := p.Apply(ctx, scan(t, "ap-south", t0, okResult("192.0.2.1", "aa", na))); err != nil {
		t.Fatalf("apply: %v", err)
	}
	got := view(t, rdb)
	want := []string{"ap-south|192.0.2.1=aa", "eu-west|192.0.2.1=aa", "eu-west|192.0.2.2=bb", "eu-west|2001:db8::1="}
	if !reflect.DeepEqual(summary(got), want) {
		t.Fatalf("view: got %v, want %v", summary(got), want)
	}
	e := got[1]
	wantEntry := ExpEntry{Region: "eu-west", Port: 443, ScannedAt: t0, EventID: ev.EventID.String(),
		IPResult: okResult("192.0.2.1", "aa", na)}
	if !reflect.DeepEqual(e, wantEntry) {
		t.Errorf("entry: got %+v, want %+v", e, wantEntry)
	}
	if got[3].Outcome != events.OutcomeConnectionRefused || got[3].CertificateFound {
		t.Errorf("refused entry: got %+v, want outcome connection-refused without certificate", got[3])
	}
}

func TestApplyIsIdempotentAndNeverGoesBack(t *testing.T) {
	na := t0.Add(90 * 24 * time.Hour)
	older := func(t *testing.T) events.Envelope {
		return scan(t, "eu-west", t0, okResult("192.0.2.1", "old", na), okResult("192.0.2.2", "old", na))
	}
	newer := func(t *testing.T) events.Envelope {
		// 192.0.2.2 left DNS.
		return scan(t, "eu-west", t0.Add(time.Hour), okResult("192.0.2.1", "new", na))
	}
	want := []string{"eu-west|192.0.2.1=new"}
	tests := []struct {
		name  string
		order func(o, n events.Envelope) []events.Envelope
	}{
		{"in order", func(o, n events.Envelope) []events.Envelope { return []events.Envelope{o, n} }},
		{"newer first", func(o, n events.Envelope) []events.Envelope { return []events.Envelope{n, o} }},
		{"redelivered", func(o, n events.Envelope) []events.Envelope { return []events.Envelope{o, n, n, o, n} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, rdb := newProjector(t)
			o, n := older(t), newer(t)
			for _, e := range tc.order(o, n) {
				if err := p.Apply(ctx, e); err != nil {
					t.Fatalf("apply: %v", err)
				}
			}
			if got := summary(view(t, rdb)); !reflect.DeepEqual(got, want) {
				t.Errorf("view: got %v, want %v", got, want)
			}
		})
	}
}

func TestSameTimeTieBreakIsOrderIndependent(t *testing.T) {
	ctx := context.Background()
	a, b := scan(t, "eu-west", t0, okResult("192.0.2.1", "a", t0)), scan(t, "eu-west", t0, okResult("192.0.2.1", "b", t0))
	winner := "a"
	if b.EventID.String() > a.EventID.String() {
		winner = "b"
	}
	for _, order := range [][]events.Envelope{{a, b}, {b, a}} {
		p, rdb := newProjector(t)
		for _, e := range order {
			if err := p.Apply(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if got := view(t, rdb); len(got) != 1 || got[0].LeafSHA256 != winner {
			t.Errorf("view after %s then %s: got %v, want %s", order[0].EventID, order[1].EventID, summary(got), winner)
		}
	}
}

func TestDomainRemoved(t *testing.T) {
	na := t0.Add(90 * 24 * time.Hour)
	before := func(t *testing.T) events.Envelope { return scan(t, "eu-west", t0, okResult("192.0.2.1", "before", na)) }
	after := func(t *testing.T) events.Envelope {
		return scan(t, "us-east", t0.Add(2*time.Hour), okResult("192.0.2.1", "after", na))
	}
	rm := func(t *testing.T) events.Envelope { return removed(t, t0.Add(time.Hour)) }
	tests := []struct {
		name  string
		order []int // 0 before, 1 removal, 2 scan after a re-add
		want  []string
	}{
		{"removal deletes the view", []int{0, 1}, []string{}},
		{"late scan from before the removal stays out", []int{1, 0}, []string{}},
		{"scan after a re-add comes in", []int{0, 1, 2}, []string{"us-east|192.0.2.1=after"}},
		{"removal delivered late keeps newer scans", []int{0, 2, 1}, []string{"us-east|192.0.2.1=after"}},
		{"removal redelivered", []int{0, 1, 2, 1}, []string{"us-east|192.0.2.1=after"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, rdb := newProjector(t)
			evs := []events.Envelope{before(t), rm(t), after(t)}
			for _, i := range tc.order {
				if err := p.Apply(ctx, evs[i]); err != nil {
					t.Fatalf("apply: %v", err)
				}
			}
			if got := summary(view(t, rdb)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("view: got %v, want %v", got, tc.want)
			}
			// The tombstone expires, whatever came after the removal.
			if ttl := rdb.PTTL(ctx, ViewKey(domainID)).Val(); ttl <= TombstoneTTL-time.Minute || ttl > TombstoneTTL {
				t.Errorf("view of the removed domain expires in %s, want %s", ttl, TombstoneTTL)
			}
		})
	}
	// A view never removed does not expire.
	ctx := context.Background()
	p, rdb := newProjector(t)
	if err := p.Apply(ctx, before(t)); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, ViewKey(domainID)).Val(); ttl != -1 {
		t.Errorf("live view: PTTL %s, want none", ttl)
	}
}

// domainEvent is a domain.added (active ignored) or domain.updated naming
// the domain host:port at at.
func domainEvent(t *testing.T, name, host string, port int, at time.Time) events.Envelope {
	t.Helper()
	var payload any = events.DomainUpdatedV1{DomainID: domainID, Host: host, Port: port, Active: true}
	if name == events.DomainAdded {
		payload = events.DomainAddedV1{DomainID: domainID, Host: host, Port: port}
	}
	e, err := events.New(name, tenant, domainID, payload)
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}

func TestRenameEmptiesTheView(t *testing.T) {
	na := t0.Add(90 * 24 * time.Hour)
	evs := map[string]func(t *testing.T) events.Envelope{
		"added": func(t *testing.T) events.Envelope {
			return domainEvent(t, events.DomainAdded, "old.example", 443, t0.Add(-time.Hour))
		},
		"scanA": func(t *testing.T) events.Envelope {
			return scanOf(t, "old.example", 443, "eu-west", t0, okResult("192.0.2.1", "old", na))
		},
		"rename": func(t *testing.T) events.Envelope {
			return domainEvent(t, events.DomainUpdated, "new.example", 8443, t0.Add(time.Hour))
		},
		// A scan of the old name that was in flight during the rename.
		"lateA": func(t *testing.T) events.Envelope {
			return scanOf(t, "old.example", 443, "us-east", t0.Add(2*time.Hour), okResult("192.0.2.1", "late", na))
		},
		"scanB": func(t *testing.T) events.Envelope {
			return scanOf(t, "new.example", 8443, "eu-west", t0.Add(3*time.Hour), okResult("192.0.2.7", "new", na))
		},
		"notes": func(t *testing.T) events.Envelope {
			return domainEvent(t, events.DomainUpdated, "new.example", 8443, t0.Add(4*time.Hour))
		},
		// An update from before the rename, delivered after it.
		"oldUpdate": func(t *testing.T) events.Envelope {
			return domainEvent(t, events.DomainUpdated, "old.example", 0, t0.Add(30*time.Minute))
		},
	}
	tests := []struct {
		name  string
		order []string
		want  []string
	}{
		{"rename empties", []string{"added", "scanA", "rename"}, []string{}},
		{"in-flight scan of the old name stays out", []string{"added", "scanA", "rename", "lateA"}, []string{}},
		{"scan of the new name comes in", []string{"added", "scanA", "rename", "scanB"}, []string{"eu-west|192.0.2.7=new"}},
		{"update keeping the name keeps the view", []string{"added", "rename", "scanB", "notes"}, []string{"eu-west|192.0.2.7=new"}},
		{"older update delivered late changes nothing", []string{"added", "rename", "scanB", "oldUpdate"}, []string{"eu-west|192.0.2.7=new"}},
		{"rename redelivered", []string{"added", "rename", "scanB", "rename"}, []string{"eu-west|192.0.2.7=new"}},
		{"view named by a scan", []string{"scanA", "rename", "lateA", "scanB"}, []string{"eu-west|192.0.2.7=new"}},
		{"scan of the new name before the rename event", []string{"added", "scanB", "rename"}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, rdb := newProjector(t)
			for _, name := range tc.order {
				if err := p.Apply(ctx, evs[name](t)); err != nil {
					t.Fatalf("apply %s: %v", name, err)
				}
			}
			if got := summary(view(t, rdb)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("view: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestViewsReadsManyViews(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	if err := p.Apply(ctx, scan(t, "eu-west", t0, okResult("192.0.2.1", "aa", na))); err != nil {
		t.Fatal(err)
	}
	got, err := Views(ctx, rdb, []string{domainID, "never-scanned"})
	if err != nil {
		t.Fatal(err)
	}
	v := got[domainID]
	if len(got) != 2 || v.Name != "example.com:443" || !reflect.DeepEqual(summary(v.Entries), []string{"eu-west|192.0.2.1=aa"}) {
		t.Errorf("views: got %+v, want example.com:443 with one entry", got)
	}
	if n := got["never-scanned"]; n.Name != "" || len(n.Entries) != 0 {
		t.Errorf("never scanned: got %+v, want no name, no entries", n)
	}
	if !reflect.DeepEqual(v.Entries, view(t, rdb)) {
		t.Errorf("views: got %+v, want what Expiration reads", v.Entries)
	}
	// Before the rename reaches the projector, the entries are for the old
	// name and a reader of the new one gets none.
	if e := v.For("renamed.example:443"); len(e) != 0 {
		t.Errorf("entries for another name: got %v, want none", summary(e))
	}
	if e := v.For("example.com:443"); len(e) != 1 {
		t.Errorf("entries for the view's name: got %v, want one", summary(e))
	}
	if e := got["never-scanned"].For("x.example:443"); e == nil || len(e) != 0 {
		t.Errorf("entries of an unnamed empty view: got %#v, want empty", e)
	}
}

func TestBadScanEventsAreDropped(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	for _, region := range []string{"", "eu|west", "@removed"} {
		if err := p.Apply(ctx, scan(t, region, t0, okResult("192.0.2.1", "x", t0))); err != nil {
			t.Errorf("apply with region %q: got %v, want nil (dropped)", region, err)
		}
	}
	for _, payload := range []string{
		`{"results":"nope"}`,
		`{"domain_id":"d","region":"eu","port":70000,"results":[{"ip":"192.0.2.1","outcome":"ok"}]}`,
		`{"domain_id":"d","region":"eu","port":443,"results":[{"ip":"192.0.2.1","outcome":"ok","chain_length":300}]}`,
	} {
		bad := events.Envelope{EventID: uuid.New(), Name: events.ScanCompleted, Payload: json.RawMessage(payload)}
		if err := p.Apply(ctx, bad); err != nil {
			t.Errorf("apply %s: got %v, want nil (dropped)", payload, err)
		}
	}
	if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
		t.Errorf("redis keys: got %d, want 0", n)
	}
}

func TestRebuildReproducesTheView(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	log := []events.Envelope{
		scan(t, "eu-west", t0, okResult("192.0.2.1", "a", na), okResult("192.0.2.2", "b", na)),
		scan(t, "us-east", t0, okResult("192.0.2.1", "a", na)),
		scan(t, "eu-west", t0.Add(time.Hour), okResult("192.0.2.1", "c", na)),
	}
	// Replay carries the domain events too; domain.added names the view.
	added, _ := events.New(events.DomainAdded, tenant, domainID, events.DomainAddedV1{DomainID: domainID, Host: "example.com", Port: 443})
	log = append([]events.Envelope{added}, log...)
	for _, e := range log {
		if err := p.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	want := view(t, rdb)
	// A stale view of a domain nobody has events for must go.
	if err := rdb.HSet(ctx, ViewKey("ghost"), "eu-west|192.0.2.9", "{}").Err(); err != nil {
		t.Fatal(err)
	}
	// More than one replay batch, with redeliveries mixed in.
	var replayed []events.Envelope
	for range 200 {
		replayed = append(replayed, log...)
	}
	replay := func(ctx context.Context, fn func(events.Envelope) error) error {
		for _, e := range replayed {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	if err := Rebuild(ctx, rdb, replay, testenv.Logger(t)); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if got := view(t, rdb); !reflect.DeepEqual(got, want) {
		t.Errorf("view after rebuild: got %v, want %v", got, want)
	}
	if n, _ := rdb.Exists(ctx, ViewKey("ghost")).Result(); n != 0 {
		t.Errorf("stale view after rebuild: got %d keys, want 0", n)
	}
}

func TestRunConsumesBothStreams(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	publish := func(stream string, e events.Envelope) {
		v, err := e.StreamValues()
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish(events.StreamResults, scan(t, "eu-west", t0, okResult("192.0.2.1", "a", na)))
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor := func(want []string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := summary(view(t, rdb))
			if reflect.DeepEqual(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("view: got %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor([]string{"eu-west|192.0.2.1=a"})
	rm := removed(t, t0.Add(time.Hour))
	publish(events.EventStream(rm.TenantID), rm)
	waitFor([]string{})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	pending, err := rdb.XPending(context.Background(), events.StreamResults, Group).Result()
	if err != nil || pending.Count != 0 {
		t.Errorf("pending results after run: got %v %v, want 0", pending, err)
	}
}

// A certificate without a well-defined expiration is marked in the view,
// with its notAfter as it reads (9999-12-31), never a date near 1970 or
// 2106.
func TestNoExpiryInView(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	if err := p.Apply(ctx, scan(t, "eu", t0, okResult("192.0.2.1", "x", events.NoExpiry), okResult("192.0.2.2", "y", t0.AddDate(1, 0, 0)))); err != nil {
		t.Fatal(err)
	}
	got := map[string]ExpEntry{}
	for _, e := range view(t, rdb) {
		got[e.IP] = e
	}
	for _, tc := range []struct {
		ip       string
		noExpiry bool
		notAfter time.Time
	}{
		{"192.0.2.1", true, events.NoExpiry},
		{"192.0.2.2", false, t0.AddDate(1, 0, 0)},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			e := got[tc.ip]
			if e.NoExpiry != tc.noExpiry || !e.NotAfter.Equal(tc.notAfter) {
				t.Fatalf("got no_expiry %v, not_after %s; want %v, %s", e.NoExpiry, e.NotAfter, tc.noExpiry, tc.notAfter)
			}
		})
	}
}
