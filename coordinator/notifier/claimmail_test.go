package notifier

import (
	"bytes"
	"context"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestClaimLinkMailedOnce: a held claim's event mails the account one link
// (the event handled twice mails once) whose token opens to the tenant and
// key; a key that is not held, or a notifier without a public URL, mails
// nothing.
func TestClaimLinkMailedOnce(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	srv := testenv.SMTP(t, testenv.SMTPOptions{})
	cfg := fastConfig("n0")
	cfg.SMTP = SMTPConfig{Addr: srv.Addr, From: "certfleet <noreply@certfleet.example>", StartTLS: StartTLSOff}
	cfg.PublicURL = "https://certfleet.example"
	n := e.newNotifier(cfg)

	claim := func(held bool) events.Envelope {
		ev, err := events.New(events.APIKeyCreated, "tenant-1", "key-1", events.APIKeyCreatedV1{
			KeyID: uuid.NewString(), Prefix: "abcd", Kind: "claimed", Held: held, Email: "ops@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	held := claim(true)
	for range 2 {
		if err := n.handle(ctx, []stream.Entry{{Event: held}, {Event: claim(false)}}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("mails: got %d, want 1", len(msgs))
	}
	if strings.Join(msgs[0].To, ",") != "ops@example.com" {
		t.Fatalf("recipient: got %v", msgs[0].To)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(msgs[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	if _, err := body.ReadFrom(quotedprintable.NewReader(m.Body)); err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`https://certfleet\.example/api/v1\.0/access/confirm/(\S+)`).FindStringSubmatch(body.String())
	if link == nil {
		t.Fatalf("no approval link in:\n%s", body)
	}
	var p events.APIKeyCreatedV1
	_ = held.Decode(&p)
	c, err := claimlink.New(testPassphrase, e.rdb, nil).Open(ctx, link[1])
	if err != nil || c.TenantID != "tenant-1" || c.KeyID != p.KeyID || c.ExpiresAt.Before(time.Now().Add(71*time.Hour)) {
		t.Fatalf("token: got %+v %v, want tenant-1, key %s, about 72h", c, err, p.KeyID)
	}

	cfg.PublicURL = ""
	quiet := e.newNotifier(cfg)
	if err := quiet.handle(ctx, []stream.Entry{{Event: claim(true)}}); err != nil {
		t.Fatal(err)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("mails without a public URL: got %d new, want 0", got-1)
	}
}
