package notifier

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/testenv"
)

const testPassphrase = "correct horse battery staple"

// receiver is a local webhook endpoint that records what it gets and
// answers with the codes of answers in turn (then 200).
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	reqs    []*recorded
	answers []int
}

type recorded struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	r := &receiver{t: t, answers: answers}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, &recorded{header: req.Header.Clone(), body: body})
		code := http.StatusOK
		if len(r.answers) > 0 {
			code, r.answers = r.answers[0], r.answers[1:]
		}
		r.mu.Unlock()
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte("answer " + http.StatusText(code)))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []*recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*recorded(nil), r.reqs...)
}

// testEnv is a Redis, a channel store and a delivery queue on it, and
// notifiers started on demand.
type testEnv struct {
	t        *testing.T
	rdb      *redis.Client
	store    *Store
	channels *channels.Store
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	st, err := NewStore(StoreConfig{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	chans, err := channels.New(channels.Config{Passphrase: testPassphrase, Targets: guard.Policy{Allow: loopback}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureGroup(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, rdb: rdb, store: st, channels: chans}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// fastConfig retries within milliseconds and may reach loopback.
func fastConfig(name string) Config {
	return Config{Consumer: name, Allow: loopback, Passphrase: testPassphrase, Backoff: 20 * time.Millisecond,
		MaxBackoff: 80 * time.Millisecond, Poll: 10 * time.Millisecond, Timeout: 10 * time.Second, MaxAttempts: 8}
}

// start runs a notifier until the test ends.
func (e *testEnv) start(cfg Config) *Notifier {
	e.t.Helper()
	return e.run(e.newNotifier(cfg))
}

func (e *testEnv) newNotifier(cfg Config) *Notifier {
	e.t.Helper()
	n, err := New(cfg, e.rdb, testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// run runs n until the test ends.
func (e *testEnv) run(n *Notifier) *Notifier {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = n.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
	return n
}

func (e *testEnv) channel(tenant string, in channels.ChannelInput) Channel {
	e.t.Helper()
	ch, err := e.channels.Create(context.Background(), tenant, in)
	if err != nil {
		e.t.Fatalf("create channel: %v", err)
	}
	return ch
}

func ptr[T any](v T) *T { return &v }

// raise XADDs an alert.raised event and returns it (to XADD it again).
func (e *testEnv) raise(tenant, alertID, severity string) events.Envelope {
	e.t.Helper()
	days := 7
	ev, err := events.NewWithID(uuid.NewSHA1(events.NamespaceAlert, []byte(alertID)), events.AlertRaised, tenant, alertID, events.AlertRaisedV1{
		AlertID: alertID, TenantID: tenant, DomainID: "dom1", Hostname: "shop.example.com", Port: 443, AlertType: events.AlertSSLExpiry,
		Severity: severity, Title: "Certificate of shop.example.com expires in 7 days", Message: "expires 2026-12-02",
		ThresholdDays: &days, LeafSHA256: "ab12", IPs: []string{"192.0.2.7"}, Regions: []string{"eu", "us"},
		TriggeredAt: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.xadd(ev)
	return ev
}

func (e *testEnv) xadd(ev events.Envelope) {
	e.t.Helper()
	vals, err := ev.StreamValues()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: events.EventStream(ev.TenantID), Values: vals}).Err(); err != nil {
		e.t.Fatal(err)
	}
}

// waitAttempts waits until channel id has n attempts and returns them
// oldest first.
func (e *testEnv) waitAttempts(tenant, id string, n int) []Attempt {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := e.channels.Attempts(context.Background(), tenant, id, 100)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				e.t.Fatalf("attempts of %s: got %d %+v, want %d", id, len(got), got, n)
			}
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamEvents returns the payloads of the events named name.
func streamEvents[T any](t *testing.T, rdb *redis.Client, name string) []T {
	t.Helper()
	evs, err := events.ReadAllEvents(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, ev := range evs {
		if ev.Name != name {
			continue
		}
		var p T
		if err := ev.Decode(&p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestWebhookSignedAndVerified(t *testing.T) {
	e := newTestEnv(t)
	rcv := newReceiver(t)
	secret := "s3cret-s3cret-s3cret"
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, Name: "ops", URL: rcv.srv.URL + "/hook", Secret: ptr(secret)})
	e.start(fastConfig("n1"))
	ev := e.raise("t1", "al1", SeverityWarning)

	at := e.waitAttempts("t1", ch.ID, 1)
	if at[0].Status != DeliveryDelivered || at[0].Attempt != 1 || at[0].AlertID != "al1" {
		t.Fatalf("attempt: got %+v, want delivered on attempt 1 for al1", at[0])
	}
	reqs := rcv.got()
	if len(reqs) != 1 {
		t.Fatalf("requests: got %d, want 1", len(reqs))
	}
	r := reqs[0]
	ts, sig := r.header.Get(HeaderTimestamp), r.header.Get(HeaderSignature)
	if err := Verify(secret, ts, sig, r.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("verify: got %v, want a valid signature", err)
	}
	tests := []struct {
		name   string
		secret string
		ts     string
		body   []byte
		now    time.Time
	}{
		{name: "wrong secret", secret: "another-secret-123", ts: ts, body: r.body, now: time.Now()},
		{name: "tampered body", secret: secret, ts: ts, body: append([]byte(" "), r.body...), now: time.Now()},
		{name: "other timestamp", secret: secret, ts: "1700000000", body: r.body, now: time.Unix(1700000000, 0)},
		{name: "replayed after 6 minutes", secret: secret, ts: ts, body: r.body, now: time.Now().Add(6 * time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := Verify(tc.secret, tc.ts, sig, tc.body, tc.now, 5*time.Minute); err == nil {
				t.Errorf("verify: got nil, want an error")
			}
		})
	}
	var body WebhookBody
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	want := channels.DeliveryID(ev.EventID.String(), ch.ID)
	if body.DeliveryID != want || r.header.Get(HeaderDelivery) != want || body.ChannelID != ch.ID || len(body.Messages) != 1 {
		t.Fatalf("body: got %+v, want delivery %s with one message", body, want)
	}
	m := body.Messages[0]
	if m.AlertID != "al1" || m.Kind != "ssl_expiry" || m.Status != StatusTriggered || m.Severity != SeverityWarning ||
		m.Hostname != "shop.example.com" || m.ThresholdDays == nil || *m.ThresholdDays != 7 || len(m.Regions) != 2 {
		t.Errorf("message: got %+v, want the raised alert", m)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content type: got %q, want application/json", got)
	}
	// The attempt is an event too.
	evs := streamEvents[events.NotificationAttemptedV1](t, e.rdb, events.NotificationAttempted)
	if len(evs) != 1 || evs[0].DeliveryID != want || evs[0].Status != DeliveryDelivered {
		t.Errorf("attempted events: got %+v, want one delivered for %s", evs, want)
	}
}

func TestRetriesAfterReceiverErrorsThenSucceeds(t *testing.T) {
	e := newTestEnv(t)
	rcv := newReceiver(t, 500, 503, 200)
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: rcv.srv.URL})
	e.start(fastConfig("n1"))
	e.raise("t1", "al1", SeverityCritical)

	at := e.waitAttempts("t1", ch.ID, 3)
	want := []struct {
		status string
		code   int
		class  string
	}{{DeliveryRetrying, 500, ClassHTTP5xx}, {DeliveryRetrying, 503, ClassHTTP5xx}, {DeliveryDelivered, 0, ""}}
	for i, w := range want {
		if at[i].Status != w.status || at[i].HTTPStatus != w.code || at[i].ErrorClass != w.class || at[i].Attempt != i+1 {
			t.Errorf("attempt %d: got %+v, want %s %d %s", i+1, at[i], w.status, w.code, w.class)
		}
	}
	// The pauses double, with jitter in the upper half (internal/backoff).
	within := func(a Attempt, lo, hi time.Duration) bool {
		return a.NextAt != nil && a.NextAt.Sub(a.At) >= lo && a.NextAt.Sub(a.At) <= hi
	}
	if !within(at[0], 10*time.Millisecond, 20*time.Millisecond) || !within(at[1], 20*time.Millisecond, 40*time.Millisecond) {
		t.Errorf("backoff: got %v then %v, want 10-20ms then 20-40ms", at[0].NextAt, at[1].NextAt)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(rcv.got()); n != 3 {
		t.Errorf("requests: got %d, want 3", n)
	}
}

func TestGivesUpAfterTheLimit(t *testing.T) {
	e := newTestEnv(t)
	rcv := newReceiver(t, 500, 500, 500, 500, 500, 500)
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: rcv.srv.URL})
	cfg := fastConfig("n1")
	cfg.MaxAttempts = 3
	e.start(cfg)
	ev := e.raise("t1", "al1", SeverityCritical)

	at := e.waitAttempts("t1", ch.ID, 3)
	if at[2].Status != DeliveryFailed || at[2].NextAt != nil {
		t.Errorf("last attempt: got %+v, want failed with no next attempt", at[2])
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.got()); n != 3 {
		t.Errorf("requests: got %d, want 3", n)
	}
	failed := streamEvents[events.NotificationFailedV1](t, e.rdb, events.NotificationFailed)
	did := channels.DeliveryID(ev.EventID.String(), ch.ID)
	if len(failed) != 1 || failed[0].DeliveryID != did || failed[0].Attempts != 3 || failed[0].ErrorClass != ClassHTTP5xx {
		t.Errorf("failed events: got %+v, want one for %s after 3 attempts, http_5xx", failed, did)
	}
	st, n, err := e.store.DeliveryStatus(context.Background(), ch.TenantID, did)
	if err != nil || st != DeliveryFailed || n != 3 {
		t.Errorf("delivery: got %s %d %v, want failed 3", st, n, err)
	}
}

func TestPermanentFailures(t *testing.T) {
	tests := []struct {
		name      string
		allow     bool
		answer    int
		wantClass string
		wantCode  int
		wantReqs  int
	}{
		{name: "private target without allow-list", allow: false, wantClass: ClassRefusedTarget, wantReqs: 0},
		{name: "redirect not followed", allow: true, answer: http.StatusFound, wantClass: ClassRedirect, wantCode: 302, wantReqs: 1},
		{name: "gone", allow: true, answer: http.StatusGone, wantClass: ClassHTTP4xx, wantCode: 410, wantReqs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			rcv := newReceiver(t, tc.answer)
			ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: rcv.srv.URL})
			cfg := fastConfig("n1")
			if !tc.allow {
				cfg.Allow = nil
			}
			e.start(cfg)
			e.raise("t1", "al1", SeverityCritical)
			at := e.waitAttempts("t1", ch.ID, 1)
			if at[0].Status != DeliveryFailed || at[0].ErrorClass != tc.wantClass || at[0].HTTPStatus != tc.wantCode {
				t.Errorf("attempt: got %+v, want failed at once, %s, HTTP %d", at[0], tc.wantClass, tc.wantCode)
			}
			time.Sleep(150 * time.Millisecond)
			if n := len(rcv.got()); n != tc.wantReqs {
				t.Errorf("requests: got %d, want %d", n, tc.wantReqs)
			}
		})
	}
}

func TestNoDuplicateWithTwoNotifiersAndARedeliveredEvent(t *testing.T) {
	e := newTestEnv(t)
	hook := newReceiver(t)
	slack := newReceiver(t)
	quiet := newReceiver(t)
	wh := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: hook.srv.URL})
	sl := e.channel("t1", channels.ChannelInput{Type: TypeSlack, URL: slack.srv.URL + "/services/T/B/x"})
	crit := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: quiet.srv.URL, MinSeverity: SeverityCritical})
	other := newReceiver(t)
	e.channel("t2", channels.ChannelInput{Type: TypeWebhook, URL: other.srv.URL})
	e.start(fastConfig("n1"))
	e.start(fastConfig("n2"))

	ev := e.raise("t1", "al1", SeverityWarning)
	e.xadd(ev) // the same event again: a redelivery
	ctx := context.Background()
	// And the first copy handed to the group once more, as a crashed
	// consumer's claim would.
	e.waitAttempts("t1", wh.ID, 1)
	if err := e.rdb.XGroupSetID(ctx, events.EventStream("t1"), Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	resolved, err := events.New(events.AlertResolved, "t1", "al1", events.AlertResolvedV1{
		AlertID: "al1", TenantID: "t1", DomainID: "dom1", Hostname: "shop.example.com", Port: 443, AlertType: events.AlertSSLExpiry,
		Severity: SeverityWarning, Title: "Certificate of shop.example.com expires in 7 days",
		ResolvedAt: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), Reason: "certificate replaced"})
	if err != nil {
		t.Fatal(err)
	}
	e.xadd(resolved)
	e.waitAttempts("t1", wh.ID, 2)
	e.waitAttempts("t1", sl.ID, 2)
	time.Sleep(300 * time.Millisecond)

	reqs := hook.got()
	if len(reqs) != 2 {
		t.Fatalf("webhook requests: got %d, want 2 (raised, resolved)", len(reqs))
	}
	var last WebhookBody
	if err := json.Unmarshal(reqs[1].body, &last); err != nil {
		t.Fatal(err)
	}
	if m := last.Messages[0]; m.Status != StatusResolved || m.AlertID != "al1" || m.Hostname != "shop.example.com" ||
		m.ResolvedAt == nil || m.ResolvedWhy != "certificate replaced" || m.Severity != SeverityWarning {
		t.Errorf("resolved message: got %+v, want al1 resolved with the raised alert's details", m)
	}
	if n := len(slack.got()); n != 2 {
		t.Errorf("slack requests: got %d, want 2", n)
	}
	var p struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(slack.got()[0].body, &p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Text, "[WARNING] Certificate of shop.example.com") || len(p.Blocks) != 2 || p.Blocks[0]["type"] != "section" {
		t.Errorf("slack payload: got %+v, want text and a section and a context block", p)
	}
	if n := len(quiet.got()); n != 0 {
		t.Errorf("critical-only channel: got %d requests for a warning, want 0", n)
	}
	if n := len(other.got()); n != 0 {
		t.Errorf("other tenant's channel: got %d requests, want 0", n)
	}
	if got, _ := e.channels.Attempts(ctx, "t1", crit.ID, 10); len(got) != 0 {
		t.Errorf("critical-only channel attempts: got %+v, want none", got)
	}
}

func TestDeletedChannelGivesUp(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: "http://127.0.0.1:1/"})
	did, _, err := e.store.Enqueue(ctx, ch, SampleMessage("ev1", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.channels.Delete(ctx, "t1", ch.ID); err != nil {
		t.Fatal(err)
	}
	e.start(fastConfig("n1"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _, err := e.store.DeliveryStatus(ctx, "t1", did)
		if err == nil && st == DeliveryFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery: got %q %v, want failed", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, _ := e.rdb.Exists(ctx, channels.AttemptsKey("t1", ch.ID)).Result(); n != 0 {
		t.Errorf("attempts list of the deleted channel: got it back, want it gone")
	}
}

func TestLeaseGivesADeliveryToOneWorker(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: "http://127.0.0.1:1/"})
	did, _, err := e.store.Enqueue(ctx, ch, SampleMessage("ev1", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewStore(StoreConfig{}, e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	claimed := 0
	for _, s := range []*Store{e.store, other, e.store, other} {
		wg.Go(func() {
			_, _, ok, err := s.claim(ctx, time.Minute)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				claimed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if claimed != 1 {
		t.Errorf("claims: got %d, want 1", claimed)
	}
	// A stale token records nothing.
	d := delivery{ID: did, ChannelID: ch.ID, TenantID: "t1"}
	ok, err := e.store.finish(ctx, d, "12345", Attempt{Attempt: 1, Status: DeliveryDelivered}, 0, true)
	if err != nil || ok {
		t.Errorf("finish with a stale lease: got %v %v, want false", ok, err)
	}
}
