package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestDigestDay(t *testing.T) {
	cases := []struct {
		name    string
		now     string
		hour    int
		wantDay string
	}{
		{name: "before the hour: today", now: "2026-11-25T07:59:59Z", hour: 8, wantDay: "2026-11-25"},
		{name: "at the hour: tomorrow", now: "2026-11-25T08:00:00Z", hour: 8, wantDay: "2026-11-26"},
		{name: "after the hour: tomorrow", now: "2026-11-25T21:00:00Z", hour: 8, wantDay: "2026-11-26"},
		{name: "midnight digest", now: "2026-11-25T23:59:00Z", hour: 0, wantDay: "2026-11-26"},
		{name: "year end", now: "2026-12-31T09:00:00Z", hour: 8, wantDay: "2027-01-01"},
		{name: "another zone is read in UTC", now: "2026-11-25T07:30:00-05:00", hour: 8, wantDay: "2026-11-26"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now, err := time.Parse(time.RFC3339, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			day, at := digestDay(now, tc.hour)
			if day != tc.wantDay {
				t.Errorf("day: got %s, want %s", day, tc.wantDay)
			}
			if want := tc.wantDay + fmt.Sprintf("T%02d:00:00Z", tc.hour); at.Format(time.RFC3339) != want {
				t.Errorf("send time: got %s, want %s", at.Format(time.RFC3339), want)
			}
		})
	}
}

// testClock is a clock the test moves; notifiers read it concurrently.
type testClock struct{ ns atomic.Int64 }

func newTestClock(at time.Time) *testClock {
	c := &testClock{}
	c.set(at)
	return c
}

func (c *testClock) set(at time.Time)    { c.ns.Store(at.UnixNano()) }
func (c *testClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) add(d time.Duration) { c.set(c.now().Add(d)) }

// startWithClock runs a notifier on clock, sending email through srv,
// until the test ends.
func (e *testEnv) startWithClock(cfg Config, clock *testClock, srv *testenv.SMTPServer) *Notifier {
	e.t.Helper()
	n := e.newNotifier(cfg)
	n.now = clock.now
	email, err := newEmailSender(SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", ServerName: "localhost", ExtraRootsPEM: srv.RootPEM}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	// The subject dates a digest by the day it is sent.
	email.(*emailSender).now = clock.now
	n.Registry().Register(TypeEmail, email)
	return e.run(n)
}

func (e *testEnv) waitDigestItems(channelID, day string, n int64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := e.rdb.HLen(context.Background(), digestItemsKey(channelID, day)).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("digest %s of %s: got %d messages, want %d", day, channelID, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func digestSubject(t *testing.T, m testenv.SMTPMessage) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(m.Data)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	s, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject: %v", err)
	}
	return s
}

// Two notifiers share the alert stream and both watch the digest hour: the
// day's alerts (one of them delivered twice) reach the digest channel as
// one email, once; an alert after the hour waits for the next day's.
func TestDigestSentOnceByTwoNotifiers(t *testing.T) {
	e := newTestEnv(t)
	srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: true})
	clock := newTestClock(time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC))
	cfg := func(name string) Config {
		c := fastConfig(name)
		c.DigestHour = 8
		return c
	}
	n1 := e.startWithClock(cfg("n1"), clock, srv)
	e.startWithClock(cfg("n2"), clock, srv)
	digestCh := e.channel("t1", channels.ChannelInput{Type: TypeEmail, Name: "daily", Digest: true, To: []string{"ops@example.com"}})
	if err := e.channels.ConfirmRecipient(context.Background(), "t1", "ops@example.com"); err != nil {
		t.Fatal(err)
	}
	// A channel of another tenant never sees t1's alerts.
	other := e.channel("t2", channels.ChannelInput{Type: TypeEmail, Name: "other", Digest: true, To: []string{"t2@example.com"}})

	first := e.raise("t1", "a1", SeverityWarning)
	e.raise("t1", "a2", SeverityCritical)
	e.raise("t1", "a3", SeverityInfo)
	e.xadd(first) // a redelivery: same event id
	e.waitDigestItems(digestCh.ID, "2026-11-25", 3)
	// And a notifier that handles it again directly.
	msg, ok := n1.message(first)
	if !ok {
		t.Fatal("first event does not render")
	}
	if err := n1.digest.collect(context.Background(), digestCh, msg); err != nil {
		t.Fatal(err)
	}
	e.waitDigestItems(digestCh.ID, "2026-11-25", 3)
	if n := e.rdb.Exists(context.Background(), digestItemsKey(other.ID, "2026-11-25")).Val(); n != 0 {
		t.Errorf("other tenant's digest: got %d keys, want none", n)
	}

	time.Sleep(200 * time.Millisecond)
	if got := len(srv.Messages()); got != 0 {
		t.Fatalf("emails before the digest hour: got %d, want 0", got)
	}

	clock.set(time.Date(2026, 11, 25, 8, 0, 1, 0, time.UTC))
	got := srv.WaitMessages(1, 10*time.Second)
	// Both notifiers keep passing over the due set: give them the time to
	// send a second one, if they could.
	time.Sleep(500 * time.Millisecond)
	got = srv.Messages()
	if len(got) != 1 {
		t.Fatalf("digest emails: got %d, want 1", len(got))
	}
	if s := digestSubject(t, got[0]); !strings.HasPrefix(s, "[certfleet digest] 2026-11-25: 3 alerts: 1 critical, 1 warning, 1 info") {
		t.Errorf("subject: got %q, want the day's 3 alerts", s)
	}
	attempts := e.waitAttempts("t1", digestCh.ID, 1)
	if a := attempts[0]; !a.Digest || a.Messages != 3 || a.Status != DeliveryDelivered {
		t.Errorf("attempt: got digest=%v messages=%d status=%s, want a delivered digest of 3", a.Digest, a.Messages, a.Status)
	}
	if n := e.rdb.Exists(context.Background(), digestItemsKey(digestCh.ID, "2026-11-25")).Val(); n != 0 {
		t.Errorf("collected messages after the digest: got %d keys, want none", n)
	}

	// After the hour: the redelivered first alert stays sent; a new one
	// waits for tomorrow.
	clock.set(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	e.xadd(first)
	e.raise("t1", "a4", SeverityCritical)
	e.waitDigestItems(digestCh.ID, "2026-11-26", 1)
	time.Sleep(200 * time.Millisecond)
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("emails before the next digest hour: got %d, want 1", got)
	}
	clock.set(time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC))
	got = srv.WaitMessages(2, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	got = srv.Messages()
	if len(got) != 2 {
		t.Fatalf("emails after the second digest hour: got %d, want 2", len(got))
	}
	if s := digestSubject(t, got[1]); !strings.HasPrefix(s, "[certfleet digest] 2026-11-26: 1 alert: 1 critical") {
		t.Errorf("second subject: got %q, want 1 critical alert", s)
	}
}

// Many passes racing over due days (notifiers, or one passing again after
// a crash between making the delivery and clearing the day) make one
// delivery per day.
func TestDigestFlushRace(t *testing.T) {
	e := newTestEnv(t)
	clock := newTestClock(time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC))
	fresh := e.channel("t1", channels.ChannelInput{Type: TypeEmail, Digest: true, To: []string{"ops@example.com"}})
	crashed := e.channel("t1", channels.ChannelInput{Type: TypeEmail, Digest: true, To: []string{"dev@example.com"}})
	var ds []*digests
	for i := range 8 {
		cfg := fastConfig(fmt.Sprintf("n%d", i))
		cfg.DigestHour = 8
		n, err := New(cfg, e.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		n.now = clock.now
		ds = append(ds, n.digest.(*digests))
	}
	ctx := context.Background()
	for i := range 20 {
		m := sampleMessage(SeverityWarning, StatusTriggered)
		m.EventID, m.AlertID = fmt.Sprintf("evt-%d", i), fmt.Sprintf("alert-%d", i)
		for _, ch := range []Channel{fresh, crashed} {
			if err := ds[i%len(ds)].collect(ctx, ch, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock.set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	// The crash: a notifier closed the day and made its delivery, then
	// died before clearing it.
	raws, err := closeScript.Run(ctx, e.rdb, []string{digestStateKey(crashed.ID, "2026-11-25"), digestItemsKey(crashed.ID, "2026-11-25")},
		60).StringSlice()
	if err != nil || len(raws) != 20 {
		t.Fatalf("close: got %d messages (%v), want 20", len(raws), err)
	}
	if _, made, err := e.store.EnqueueDigest(ctx, crashed, "2026-11-25", []Message{sampleMessage(SeverityWarning, StatusTriggered)}); err != nil || !made {
		t.Fatalf("enqueue before the crash: made %v, %v", made, err)
	}
	var made atomic.Int64
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() {
			n, err := d.flushDue(ctx)
			if err != nil {
				t.Error(err)
			}
			made.Add(int64(n))
		})
	}
	wg.Wait()
	if got := made.Load(); got != 1 {
		t.Errorf("deliveries made by the racing passes: got %d, want 1 (the fresh day's)", got)
	}
	due, err := e.rdb.ZRange(ctx, dueKeyIn(events.TenantTag("t1"), "t1"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 {
		t.Fatalf("queued deliveries: got %v, want one per day", due)
	}
	if rec := e.rdb.HGetAll(ctx, tenantDeliveryKey("t1", channels.DeliveryID("digest|2026-11-25", fresh.ID))).Val(); rec["digest"] != "1" || strings.Count(rec["messages"], `"event_id"`) != 20 {
		t.Errorf("fresh digest: got digest=%s with %d messages, want a digest of 20", rec["digest"], strings.Count(rec["messages"], `"event_id"`))
	}
	for _, ch := range []Channel{fresh, crashed} {
		if n := e.rdb.Exists(ctx, digestItemsKey(ch.ID, "2026-11-25")).Val(); n != 0 {
			t.Errorf("collected messages of %s after the passes: got %d keys, want none", ch.ID, n)
		}
	}
	if n := e.rdb.ZCard(ctx, digestDueKey).Val(); n != 0 {
		t.Errorf("due days after the passes: got %d, want 0", n)
	}
}

func TestDigestMessagesCap(t *testing.T) {
	var msgs []Message
	for i := range maxDigestMessages + 40 {
		m := sampleMessage(SeverityInfo, StatusTriggered)
		if i%100 == 0 {
			m.Severity = SeverityCritical
		}
		m.EventID, m.AlertID = fmt.Sprintf("e%04d", i), fmt.Sprintf("a%04d", i)
		msgs = append(msgs, m)
	}
	got := digestMessages(msgs)
	if len(got) != maxDigestMessages {
		t.Fatalf("messages: got %d, want %d", len(got), maxDigestMessages)
	}
	for i := range 6 {
		if got[i].Severity != SeverityCritical {
			t.Errorf("message %d: got %s, want the 6 critical ones first", i, got[i].Severity)
		}
	}
	if last := got[len(got)-1]; last.Kind != "digest_truncated" || !strings.HasPrefix(last.Title, "41 more alerts") {
		t.Errorf("last message: got %s %q, want 41 more alerts", last.Kind, last.Title)
	}
}

// BenchmarkDigestCollect is what a digest channel costs per alert against
// an immediate delivery (Store.Enqueue, the baseline), and what making a
// 500-message day into one delivery costs.
func BenchmarkDigestCollect(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	n, err := New(Config{Consumer: "bench"}, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	ch, err := n.channels.Create(context.Background(), "t1", channels.ChannelInput{Type: TypeEmail, Digest: true, To: []string{"ops@example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	i := 0
	next := func() Message {
		i++
		m := sampleMessage(SeverityWarning, StatusTriggered)
		m.EventID, m.AlertID = fmt.Sprintf("evt-%d", i), fmt.Sprintf("alert-%d", i)
		return m
	}
	b.Run("enqueue", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := n.store.Enqueue(ctx, ch, next()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("collect", func(b *testing.B) {
		for b.Loop() {
			if err := n.digest.collect(ctx, ch, next()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("flush-500", func(b *testing.B) {
		d := n.digest.(*digests)
		day := 0
		for b.Loop() {
			b.StopTimer()
			day++
			key := fmt.Sprintf("bench-%d", day)
			for range 500 {
				m := next()
				body, _ := json.Marshal(m)
				rdb.HSet(ctx, digestItemsKey(ch.ID, key), m.EventID, body)
			}
			b.StartTimer()
			if created, err := d.flush(ctx, "t1", ch.ID, key); err != nil || !created {
				b.Fatalf("flush: %v %v", created, err)
			}
		}
	})
}
