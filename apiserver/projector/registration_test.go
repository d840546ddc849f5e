package projector

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// lookup is a registration.looked_up.v1 of domain at at with status and,
// for a status carrying one, the expiry exp.
func lookup(t testing.TB, domain, status string, at time.Time, exp *time.Time) events.Envelope {
	t.Helper()
	r := events.RegistrationV1{Domain: domain, Status: status, LookedUpAt: at, Source: "rdap", Server: "https://rdap.example/",
		Registrar: "Lab Registrar", ExpiresAt: exp, NameServers: []string{"ns1.example.net"}}
	if status == events.RegistrationError {
		r.Detail, r.Registrar, r.ExpiresAt, r.Source, r.Server, r.NameServers = "timeout", "", nil, "", "", nil
	}
	e, err := events.New(events.RegistrationLookedUp, "", domain, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ptime(t time.Time) *time.Time { return &t }

func TestRegistrationView(t *testing.T) {
	exp1, exp2 := t0.AddDate(1, 0, 0), t0.AddDate(2, 0, 0)
	evs := map[string]func(t *testing.T) events.Envelope{
		"ok1": func(t *testing.T) events.Envelope { return lookup(t, "example.com", events.RegistrationOK, t0, &exp1) },
		"ok2": func(t *testing.T) events.Envelope {
			return lookup(t, "example.com", events.RegistrationOK, t0.Add(time.Hour), &exp2)
		},
		"err3": func(t *testing.T) events.Envelope {
			return lookup(t, "example.com", events.RegistrationError, t0.Add(2*time.Hour), nil)
		},
		"notfound": func(t *testing.T) events.Envelope {
			return lookup(t, "example.com", events.RegistrationNotFound, t0.Add(3*time.Hour), nil)
		},
	}
	tests := []struct {
		name       string
		order      []string
		wantExpiry *time.Time
		wantReason string
		wantLast   string
	}{
		{"never looked up", nil, nil, RegistrationPending, ""},
		{"first answer", []string{"ok1"}, &exp1, "", events.RegistrationOK},
		{"newer answer wins", []string{"ok1", "ok2"}, &exp2, "", events.RegistrationOK},
		{"older answer delivered late changes nothing", []string{"ok2", "ok1"}, &exp2, "", events.RegistrationOK},
		{"redelivered", []string{"ok1", "ok2", "ok1", "ok2"}, &exp2, "", events.RegistrationOK},
		{"failure keeps the answer and records itself", []string{"ok2", "err3"}, &exp2, "", events.RegistrationError},
		{"failure before any answer", []string{"err3"}, nil, events.RegistrationError, events.RegistrationError},
		{"not found is an answer", []string{"ok2", "notfound"}, nil, events.RegistrationNotFound, events.RegistrationNotFound},
		{"failure delivered after a newer answer", []string{"notfound", "err3", "ok1"}, nil, events.RegistrationNotFound, events.RegistrationNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, rdb := newProjector(t)
			built := map[string]events.Envelope{}
			for _, name := range tc.order {
				if _, ok := built[name]; !ok {
					built[name] = evs[name](t)
				}
				if err := p.Apply(ctx, built[name]); err != nil {
					t.Fatalf("apply %s: %v", name, err)
				}
			}
			r, err := ReadRegistration(ctx, rdb, "example.com")
			if err != nil {
				t.Fatal(err)
			}
			exp, reason := r.Expiry()
			if !reflect.DeepEqual(exp, tc.wantExpiry) || reason != tc.wantReason {
				t.Errorf("expiry: got %v %q, want %v %q", exp, reason, tc.wantExpiry, tc.wantReason)
			}
			last := ""
			if r.Last != nil {
				last = r.Last.Status
			}
			if last != tc.wantLast {
				t.Errorf("last status: got %q, want %q", last, tc.wantLast)
			}
		})
	}
}

func TestRegistrationExpiryWithoutDate(t *testing.T) {
	for _, status := range []string{events.RegistrationOK, events.RegistrationNoExpiry} {
		t.Run(status, func(t *testing.T) {
			ctx := context.Background()
			p, rdb := newProjector(t)
			if err := p.Apply(ctx, lookup(t, "example.de", status, t0, nil)); err != nil {
				t.Fatal(err)
			}
			r, err := ReadRegistration(ctx, rdb, "example.de")
			if err != nil {
				t.Fatal(err)
			}
			if exp, reason := r.Expiry(); exp != nil || reason != events.RegistrationNoExpiry {
				t.Errorf("expiry: got %v %q, want nil %q", exp, reason, events.RegistrationNoExpiry)
			}
		})
	}
}

// TestRegistrationFansOut: a lookup reaches every domain under its
// registrable domain, of every tenant, with its view's version bumped;
// domains renamed away or removed are pruned from the index.
func TestRegistrationFansOut(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	p, evaluated := recordingProjector(t, rdb)
	added := func(tenant, id, host string, at time.Time) events.Envelope {
		e, err := events.New(events.DomainAdded, tenant, id, events.DomainAddedV1{DomainID: id, Host: host, Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		e.OccurredAt = at
		return e
	}
	ids := map[string]string{}
	for _, n := range []string{"alice-www", "alice-api", "bob-www", "other", "renamed", "removed"} {
		ids[n] = uuid.NewString()
	}
	setup := []events.Envelope{
		added("alice", ids["alice-www"], "www.example.com", t0),
		added("alice", ids["alice-api"], "api.eu.example.com", t0),
		added("bob", ids["bob-www"], "www.example.com", t0),
		added("bob", ids["other"], "example.org", t0),
		added("bob", ids["renamed"], "shop.example.com", t0),
		added("bob", ids["removed"], "old.example.com", t0),
	}
	ren, err := events.New(events.DomainUpdated, "bob", ids["renamed"], events.DomainUpdatedV1{DomainID: ids["renamed"], Host: "shop.example.net", Port: 443, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	ren.OccurredAt = t0.Add(time.Minute)
	rm, err := events.New(events.DomainRemoved, "bob", ids["removed"], events.DomainRemovedV1{DomainID: ids["removed"], Host: "old.example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	rm.OccurredAt = t0.Add(time.Minute)
	if err := p.ApplyBatch(ctx, append(setup, ren, rm)); err != nil {
		t.Fatal(err)
	}
	versions := func() map[string]int64 {
		out := map[string]int64{}
		for n, id := range ids {
			s, err := ReadSnapshot(ctx, rdb, id)
			if err != nil {
				t.Fatal(err)
			}
			out[n] = s.Version
		}
		return out
	}
	before := versions()
	*evaluated = nil
	exp := t0.AddDate(1, 0, 0)
	for round := range 2 { // the second is a redelivery: it fans out again
		if err := p.Apply(ctx, lookup(t, "example.com", events.RegistrationOK, t0.Add(time.Hour), &exp)); err != nil {
			t.Fatal(err)
		}
		want := []string{ids["alice-www"], ids["alice-api"], ids["bob-www"]}
		slices.Sort(want)
		if len(*evaluated) != round+1 {
			t.Fatalf("evaluations: got %d, want %d", len(*evaluated), round+1)
		}
		last := slices.Sorted(slices.Values((*evaluated)[round]))
		if !reflect.DeepEqual(last, want) {
			t.Errorf("round %d: evaluated %v, want %v", round, last, want)
		}
	}
	after := versions()
	for _, n := range []string{"alice-www", "alice-api", "bob-www"} {
		if after[n] != before[n]+2 {
			t.Errorf("version of %s: got %d, want %d", n, after[n], before[n]+2)
		}
	}
	for _, n := range []string{"other", "renamed", "removed"} {
		if after[n] != before[n] {
			t.Errorf("version of %s: got %d, want %d (not under example.com)", n, after[n], before[n])
		}
	}
	index := func(reg string) map[string]int64 {
		t.Helper()
		m, err := ReadRegistrationIndex(ctx, rdb, reg)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	members := slices.Sorted(maps.Keys(index("example.com")))
	want := []string{ids["alice-www"], ids["alice-api"], ids["bob-www"]}
	slices.Sort(want)
	if !reflect.DeepEqual(members, want) {
		t.Errorf("index after pruning: got %v, want %v", members, want)
	}
	if _, ok := index("example.net")[ids["renamed"]]; !ok {
		t.Errorf("renamed domain is not in the index of example.net")
	}
}

func TestDecodeRegistration(t *testing.T) {
	exp := t0.AddDate(1, 0, 0)
	ok := func(mod func(r *events.RegistrationV1)) events.Envelope {
		r := events.RegistrationV1{Domain: "example.co.uk", Status: events.RegistrationOK, LookedUpAt: t0, ExpiresAt: &exp}
		mod(&r)
		e, err := events.New(events.RegistrationLookedUp, "", r.Domain, r)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	tests := []struct {
		name    string
		e       events.Envelope
		wantErr string
	}{
		{"valid", ok(func(*events.RegistrationV1) {}), ""},
		{"subdomain", ok(func(r *events.RegistrationV1) { r.Domain = "www.example.co.uk" }), "not a registrable domain"},
		{"upper case", ok(func(r *events.RegistrationV1) { r.Domain = "Example.com" }), "not a lower-case name"},
		{"public suffix", ok(func(r *events.RegistrationV1) { r.Domain = "co.uk" }), "not a registrable domain"},
		{"unknown status", ok(func(r *events.RegistrationV1) { r.Status = "fine" }), "not a registration status"},
		{"no time", ok(func(r *events.RegistrationV1) { r.LookedUpAt = time.Time{} }), "looked_up_at"},
		{"too many name servers", ok(func(r *events.RegistrationV1) { r.NameServers = make([]string, 101) }), "name servers"},
		{"long registrar", ok(func(r *events.RegistrationV1) { r.Registrar = strings.Repeat("x", 2000) }), "text field"},
		{"not json", events.Envelope{Name: events.RegistrationLookedUp, Payload: []byte("{")}, "decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRegistration(tc.e)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzDecodeRegistration: no payload makes the decoder panic, and what
// it accepts is a registrable domain with a known status.
func FuzzDecodeRegistration(f *testing.F) {
	f.Add([]byte(`{"domain":"example.com","status":"ok","looked_up_at":"2030-01-02T03:04:05Z","expires_at":"2031-01-02T00:00:00Z"}`))
	f.Add([]byte(`{"domain":"example.de","status":"no-expiry","looked_up_at":"2030-01-02T03:04:05Z","name_servers":["ns1.example.de"]}`))
	f.Add([]byte(`{"domain":"a.b.example.com","status":"error","detail":"timeout","looked_up_at":"2030-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"domain":"","status":"","looked_up_at":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := DecodeRegistration(events.Envelope{Name: events.RegistrationLookedUp, Payload: payload})
		if err != nil {
			return
		}
		if d := RegistrableOf(r.Domain); d != r.Domain {
			t.Fatalf("accepted domain %q, whose registrable domain is %q", r.Domain, d)
		}
		if _, err := registrationCall(events.Envelope{}, r); err != nil {
			t.Fatalf("accepted registration cannot be recorded: %v", err)
		}
	})
}

// TestRegistrationFromStream: a lookup published on its registrable
// domain's partition of the event stream, as the worker does, reaches the
// view through the running projector.
func TestRegistrationFromStream(t *testing.T) {
	p, rdb := newProjector(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	exp := t0.AddDate(1, 0, 0)
	ev := lookup(t, "example.org", events.RegistrationOK, t0, &exp)
	pub, err := events.NewPublisher(rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(events.EventStream("example.org"), ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := ReadRegistration(ctx, rdb, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		if r.LastID == ev.EventID.String() {
			if got, _ := r.Expiry(); got == nil || !got.Equal(exp) {
				t.Errorf("expiry: got %v, want %v", got, exp)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lookup did not reach the view within 5s (view: %+v)", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFanOutInChunks: a lookup's fan-out reaches every domain under the
// registrable domain, synced and evaluated ChunkSize at a time (one
// pipeline of 111,000 domains timed out).
func TestFanOutInChunks(t *testing.T) {
	defer func(n int) { ChunkSize = n }(ChunkSize)
	ChunkSize = 2
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	p, evaluated := recordingProjector(t, rdb)
	var want []string
	var setup []events.Envelope
	for i := range 5 {
		id := uuid.NewString()
		want = append(want, id)
		e, err := events.New(events.DomainAdded, "alice", id, events.DomainAddedV1{DomainID: id, Host: fmt.Sprintf("h%d.example.com", i), Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		e.OccurredAt = t0
		setup = append(setup, e)
	}
	if err := p.ApplyBatch(ctx, setup); err != nil {
		t.Fatal(err)
	}
	*evaluated = nil
	exp := t0.AddDate(1, 0, 0)
	if err := p.Apply(ctx, lookup(t, "example.com", events.RegistrationOK, t0.Add(time.Hour), &exp)); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, ids := range *evaluated {
		if len(ids) > ChunkSize {
			t.Errorf("one evaluation of %d domains, more than the chunk of %d", len(ids), ChunkSize)
		}
		all = append(all, ids...)
	}
	slices.Sort(all)
	slices.Sort(want)
	if !reflect.DeepEqual(all, want) {
		t.Errorf("evaluated %v, want every domain under example.com once: %v", all, want)
	}
	for _, id := range want {
		s, err := ReadSnapshot(ctx, rdb, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.Version < 2 {
			t.Errorf("domain %s: version %d, the fan-out did not reach it", id, s.Version)
		}
	}
}

// recordingProjector is a projector whose evaluator records the domains
// of every call, in order.
func recordingProjector(t *testing.T, rdb *redis.Client) (*Projector, *[][]string) {
	t.Helper()
	var got [][]string
	p, err := New(Config{Consumer: "test", Evaluator: evaluatorFunc(func(_ context.Context, ids []string) error {
		got = append(got, slices.Clone(ids))
		return nil
	})}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return p, &got
}
