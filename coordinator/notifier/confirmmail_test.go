package notifier

import (
	"bytes"
	"context"
	"fmt"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

// confirmConfig is a notifier with the test relay, a public URL and the
// passphrase: everything confirmation mails need.
func confirmConfig(name string, srv *testenv.SMTPServer) Config {
	cfg := fastConfig(name)
	cfg.SMTP = SMTPConfig{Addr: srv.Addr, From: "certfleet <noreply@certfleet.example>", StartTLS: StartTLSOff}
	cfg.PublicURL = "https://certfleet.example"
	return cfg
}

// confirmToken returns the token of the confirmation link in m.
func confirmToken(t *testing.T, m testenv.SMTPMessage) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	if _, err := body.ReadFrom(quotedprintable.NewReader(msg.Body)); err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`https://certfleet\.example/api/v1/recipients/confirm/(\S+)`).FindStringSubmatch(body.String())
	if link == nil {
		t.Fatalf("no confirmation link in:\n%s", body)
	}
	return link[1]
}

// sentTo returns the messages whose envelope names addr.
func sentTo(msgs []testenv.SMTPMessage, addr string) []testenv.SMTPMessage {
	var out []testenv.SMTPMessage
	for _, m := range msgs {
		if slices.Contains(m.To, addr) {
			out = append(out, m)
		}
	}
	return out
}

// TestUnconfirmedRecipientsGetOnlyTheConfirmation: a new email channel's
// pending recipient is mailed one link (an update keeping it mails nothing
// more) and none of the channel's alerts or test messages, which its
// confirmed recipients and the account's own address get; once confirmed,
// it gets the next alert. A channel with no confirmed recipient sends
// nothing and says why.
func TestUnconfirmedRecipientsGetOnlyTheConfirmation(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	srv := testenv.SMTP(t, testenv.SMTPOptions{})
	e.start(confirmConfig("n0", srv))
	tenant := events.TenantID("owner@example.com")
	if err := e.channels.ConfirmRecipient(ctx, tenant, "known@example.com"); err != nil {
		t.Fatal(err)
	}
	ch := e.channel(tenant, channels.ChannelInput{Type: TypeEmail, To: []string{"owner@example.com", "known@example.com", "new@example.com"}})

	msgs := srv.WaitMessages(1, 10*time.Second)
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"new@example.com"}) {
		t.Fatalf("after creating the channel: got %d mails %v, want one, to new@example.com", len(msgs), msgs)
	}
	r, err := claimlink.New(testPassphrase, e.rdb, nil).OpenRecipient(ctx, confirmToken(t, msgs[0]))
	if err != nil || r.TenantID != tenant || r.Address != "new@example.com" || r.ExpiresAt.Before(time.Now().Add(71*time.Hour)) {
		t.Fatalf("link: got %+v %v, want tenant %s, new@example.com, about 72h", r, err, tenant)
	}
	if _, err := e.channels.Update(ctx, tenant, ch.ID, channels.ChannelInput{Name: "renamed", To: ch.To}); err != nil {
		t.Fatal(err)
	}

	e.raise(tenant, "alert-1", SeverityCritical)
	if _, err := e.channels.EnqueueTest(ctx, tenant, ch.ID); err != nil {
		t.Fatal(err)
	}
	for _, a := range e.waitAttempts(tenant, ch.ID, 2) {
		if a.Status != DeliveryDelivered {
			t.Fatalf("attempt: got %+v, want delivered", a)
		}
	}
	msgs = srv.Messages()
	if n := len(sentTo(msgs, "new@example.com")); n != 1 || len(msgs) != 3 {
		t.Fatalf("mails: got %d, %d of them to new@example.com, want 3, only the confirmation to it", len(msgs), n)
	}
	for _, m := range msgs[1:] {
		if !slices.Equal(m.To, []string{"owner@example.com", "known@example.com"}) {
			t.Errorf("alert or test mail to %v, want the owner and known@example.com", m.To)
		}
	}

	if err := e.channels.ConfirmRecipient(ctx, tenant, r.Address); err != nil {
		t.Fatal(err)
	}
	e.raise(tenant, "alert-2", SeverityCritical)
	e.waitAttempts(tenant, ch.ID, 3)
	if got := srv.Messages()[3].To; !slices.Equal(got, ch.To) {
		t.Errorf("alert after the confirmation: to %v, want %v", got, ch.To)
	}

	lonely := e.channel(tenant, channels.ChannelInput{Type: TypeEmail, To: []string{"stranger@example.com"}})
	srv.WaitMessages(5, 10*time.Second) // its confirmation
	if _, err := e.channels.EnqueueTest(ctx, tenant, lonely.ID); err != nil {
		t.Fatal(err)
	}
	if a := e.waitAttempts(tenant, lonely.ID, 1)[0]; a.Status != DeliveryFailed || a.ErrorClass != ClassUnconfirmed {
		t.Errorf("test of a channel with no confirmed recipient: got %+v, want failed, %s", a, ClassUnconfirmed)
	}
	if n := len(sentTo(srv.Messages(), "stranger@example.com")); n != 1 {
		t.Errorf("mails to stranger@example.com: got %d, want its confirmation only", n)
	}
}

// TestConfirmationMailLimits: past its limit per tenant a channel's new
// recipients are not mailed, and past its limit per address an address is
// not mailed again, asked by this tenant or another; a resend within the
// limits is mailed, once however often its event is read.
func TestConfirmationMailLimits(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	srv := testenv.SMTP(t, testenv.SMTPOptions{})
	cfg := confirmConfig("n0", srv)
	cfg.ConfirmPerTenant = ratelimit.Limit{Rate: 3, Period: time.Hour}
	cfg.ConfirmPerAddress = ratelimit.Limit{Rate: 3, Period: time.Hour}
	e.start(cfg)

	spammer := events.TenantID("spammer@example.com")
	var to []string
	for i := range 5 {
		to = append(to, fmt.Sprintf("victim%d@example.com", i))
	}
	e.channel(spammer, channels.ChannelInput{Type: TypeEmail, To: to})
	// The three within the limit, however slow the start (a loaded
	// machine under -race took over 2 s), then no fourth.
	if got := len(srv.WaitMessages(3, 20*time.Second)); got != 3 {
		t.Fatalf("confirmation mails for 5 new recipients: got %d, want 3 (the tenant's limit)", got)
	}
	if got := len(srv.WaitMessages(4, 2*time.Second)); got != 3 {
		t.Fatalf("confirmation mails for 5 new recipients: got %d after the first 3, want 3 (the tenant's limit)", got)
	}

	// One address, asked by one tenant, then again, then by another.
	a, b := events.TenantID("a@example.com"), events.TenantID("b@example.com")
	ch := e.channel(a, channels.ChannelInput{Type: TypeEmail, To: []string{"target@example.com"}})
	srv.WaitMessages(4, 10*time.Second)
	if err := e.channels.RequestConfirmation(ctx, a, ch.ID, "target@example.com"); err != nil {
		t.Fatal(err)
	}
	if got := len(sentTo(srv.WaitMessages(5, 10*time.Second), "target@example.com")); got != 2 {
		t.Fatalf("mails to target after a resend: got %d, want 2", got)
	}
	// The resend's event read again mails nothing more; another tenant
	// listing the address mails it; past the address's limit (3) a resend
	// is not mailed.
	all, err := events.ReadEventsNamed(ctx, e.rdb, events.ConfirmationRequested)
	if err != nil || len(all) != 1 {
		t.Fatalf("confirmation requests: got %d %v, want 1", len(all), err)
	}
	e.xadd(all[0])
	time.Sleep(300 * time.Millisecond)
	if got := len(sentTo(srv.Messages(), "target@example.com")); got != 2 {
		t.Fatalf("mails to target after its resend was read again: got %d, want 2", got)
	}
	e.channel(b, channels.ChannelInput{Type: TypeEmail, To: []string{"target@example.com"}})
	if got := len(sentTo(srv.WaitMessages(6, 10*time.Second), "target@example.com")); got != 3 {
		t.Fatalf("mails to target after another tenant listed it: got %d, want 3", got)
	}
	if err := e.channels.RequestConfirmation(ctx, a, ch.ID, "target@example.com"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := len(sentTo(srv.Messages(), "target@example.com")); got != 3 {
		t.Errorf("mails to target: got %d, want 3 (its limit)", got)
	}
}
