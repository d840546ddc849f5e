package notifier

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/claimlink"
)

// mailClaimLink mails the account of a held key's claim (apikey.created.v1
// with Held) the link that approves the key, when this notifier has an
// SMTP relay, a public URL and the secrets passphrase that seals links.
// The mail goes once per event: a marker set after the send keeps a
// redelivered event from mailing again. A failed send is logged and
// dropped, never retried through the batch: a relay that is down must not
// hold the alert events of the batch back, and the claimant can claim
// again for a new mail.
func (n *Notifier) mailClaimLink(ctx context.Context, ev events.Envelope) error {
	if n.claimLinks == nil || n.mailer == nil || !n.cfg.SMTP.Enabled() || n.cfg.PublicURL == "" {
		return nil
	}
	var p events.APIKeyCreatedV1
	if err := ev.Decode(&p); err != nil || !p.Held || p.Email == "" {
		return nil
	}
	marker := "notify:claimmail:" + events.TenantTag(ev.TenantID) + ":" + ev.EventID.String()
	if seen, err := n.rdb.Exists(ctx, marker).Result(); err != nil || seen > 0 {
		return err
	}
	exp := n.now().Add(n.cfg.ClaimLinkTTL).UTC().Truncate(time.Second)
	token, err := n.claimLinks.Token(ctx, claimlink.Claim{TenantID: ev.TenantID, KeyID: p.KeyID, ExpiresAt: exp})
	if err != nil {
		return err
	}
	link := n.cfg.PublicURL + "/api/v1.0/access/confirm/" + token
	body := fmt.Sprintf(`Someone claimed a KeyChest API key for the certfleet account %s
(key id %s, starting %q).

Until the account approves it, the key can add servers and read the results
of those servers only; they raise no alerts.

If you or someone you trust made this claim, open this page and press
its button to approve the key (opening the page alone approves nothing):

%s

The link works until %s. If you did not expect this, ignore this
email: the key stays limited. You can revoke it with
DELETE /api/v1/api-keys/%s.
`, p.Email, p.KeyID, p.Prefix, link, exp.Format(time.RFC1123), p.KeyID)
	if err := n.mailer.sendNotice(ctx, p.Email, "Approve the API key claimed for "+p.Email, body, ev.EventID.String()); err != nil {
		n.logger.Warn("claim approval mail failed", zap.String("tenant_id", ev.TenantID), zap.String("key_id", p.KeyID), zap.Error(err))
		return nil
	}
	n.logger.Info("claim approval mail sent", zap.String("tenant_id", ev.TenantID), zap.String("key_id", p.KeyID))
	return n.rdb.Set(ctx, marker, 1, n.cfg.ClaimLinkTTL).Err()
}

// sendNotice sends one plain-text message to one address: mail about the
// account itself, not an alert of a channel.
func (s *emailSender) sendNotice(ctx context.Context, to, subj, text, id string) error {
	if !s.cfg.Enabled() {
		return ErrEmailDisabled
	}
	rcpt, err := recipients([]string{to})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, h := range []struct{ k, v string }{
		{"From", s.from.String()},
		{"To", rcpt[0].String()},
		{"Subject", mime.QEncoding.Encode("utf-8", headerValue(subj))},
		{"Date", s.now().UTC().Format(time.RFC1123Z)},
		{"Message-ID", messageID(id, Channel{}, nil, s.from.Address)},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
		{"Auto-Submitted", "auto-generated"},
	} {
		buf.WriteString(h.k + ": " + headerValue(h.v) + "\r\n")
	}
	buf.WriteString("\r\n")
	qw := quotedprintable.NewWriter(&buf)
	if _, err := qw.Write([]byte(text)); err != nil {
		return err
	}
	if err := qw.Close(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.transmit(ctx, []*mail.Address{rcpt[0]}, buf.Bytes()); err != nil {
		return fmt.Errorf("send email via %s: %w", s.cfg.Addr, err)
	}
	return nil
}
