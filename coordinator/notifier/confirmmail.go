package notifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// Email recipients' double opt-in (internal/channels' confirm.go): an
// email channel's recipient gets its alerts, digests and test messages
// only once its owner confirmed it, so a tenant cannot make the
// operator's relay mail addresses that never asked. Each pending
// recipient is mailed one link (claimlink.Recipient) when a channel
// lists it, and again when the tenant asks (channel.confirmation_requested.v1),
// within limits per tenant and per address.

// Default limits of confirmation mails: per tenant, and per address
// whatever the tenant (the address's owner is the one to protect).
var (
	DefaultConfirmPerTenant  = ratelimit.Limit{Rate: 20, Period: time.Hour}
	DefaultConfirmPerAddress = ratelimit.Limit{Rate: 3, Period: 24 * time.Hour}
)

// confirmLimitPrefix prefixes the limiter keys of confirmation mails.
const confirmLimitPrefix = "confirmlimit:"

// ClassUnconfirmed is a delivery to an email channel none of whose
// recipients has confirmed yet: nothing is sent, and retrying cannot
// change that (a later confirmation gets the later messages).
const ClassUnconfirmed = "unconfirmed"

var confirmMails = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_notifier_confirmation_mails_total",
	Help: "Confirmation mails to email channels' recipients, by outcome (sent, limited, failed).",
}, []string{"outcome"})

// addressHash names an address in keys without writing it there.
func addressHash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(addr)))
	return hex.EncodeToString(sum[:16])
}

// mailConfirmations mails the confirmation link to the pending
// recipients of the email channel a channel.created.v1 or
// channel.updated.v1 names (each at most once per link lifetime per
// tenant and address, so an update that keeps a recipient mails it no
// more), or to the one a channel.confirmation_requested.v1 names. It
// needs an SMTP relay, a public URL and the secrets passphrase (which
// seals links); without them recipients stay pending. A failed or limited
// mail is logged and dropped, as a claim's is (claimmail.go): the tenant
// can ask again.
func (n *Notifier) mailConfirmations(ctx context.Context, ev events.Envelope) error {
	if n.claimLinks == nil || n.mailer == nil || !n.cfg.SMTP.Enabled() || n.cfg.PublicURL == "" {
		return nil
	}
	resend := ev.Name == events.ConfirmationRequested
	var chID, only string
	if resend {
		var p events.ConfirmationRequestedV1
		if err := ev.Decode(&p); err != nil || p.ChannelID == "" {
			return nil
		}
		chID, only = p.ChannelID, p.Address
	} else {
		var p events.ChannelV1
		if err := ev.Decode(&p); err != nil || p.Type != TypeEmail {
			return nil
		}
		chID = p.ChannelID
	}
	ch, err := n.channels.Get(ctx, ev.TenantID, chID)
	if errors.Is(err, channels.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	pending, err := n.channels.Pending(ctx, ev.TenantID, ch)
	if err != nil {
		return err
	}
	for _, addr := range pending[0] {
		if resend && !strings.EqualFold(addr, only) {
			continue
		}
		if err := n.mailConfirmation(ctx, ev, addr, resend); err != nil {
			return err
		}
	}
	return nil
}

// mailConfirmation mails addr its link, once per marker: the event (a
// redelivery mails nothing more) for a resend, the tenant and address for
// a channel's write.
func (n *Notifier) mailConfirmation(ctx context.Context, ev events.Envelope, addr string, resend bool) error {
	h := addressHash(addr)
	marker := "notify:confirmmail:" + events.TenantTag(ev.TenantID) + ":" + ev.TenantID + ":" + h
	if resend {
		marker = "notify:confirmmail:" + events.TenantTag(ev.TenantID) + ":" + ev.EventID.String() + ":" + h
	}
	if seen, err := n.rdb.Exists(ctx, marker).Result(); err != nil || seen > 0 {
		return err
	}
	log := n.logger.With(zap.String("tenant_id", ev.TenantID), zap.String("event_id", ev.EventID.String()))
	for _, l := range []struct {
		key   string
		limit ratelimit.Limit
	}{{"t:" + ev.TenantID, n.cfg.ConfirmPerTenant}, {"a:" + h, n.cfg.ConfirmPerAddress}} {
		res, err := n.confirmLimits.Allow(ctx, l.key, l.limit)
		if err != nil {
			return err
		}
		if !res.Allowed {
			confirmMails.WithLabelValues("limited").Inc()
			log.Warn("confirmation mail over its limit, dropped", zap.String("limit", l.key[:1]), zap.Duration("retry_after", res.RetryAfter))
			return nil
		}
	}
	exp := n.now().Add(n.cfg.ClaimLinkTTL).UTC().Truncate(time.Second)
	token, err := n.claimLinks.RecipientToken(ctx, claimlink.Recipient{TenantID: ev.TenantID, Address: addr, ExpiresAt: exp})
	if err != nil {
		return err
	}
	// Nothing the tenant wrote goes into the mail (not the channel's
	// name): a confirmation mail must not carry a tenant's text to an
	// address that never asked for it. The page the link opens names the
	// account.
	body := fmt.Sprintf(`An account of the certfleet certificate monitoring service at
%s
wants to send its TLS certificate alerts to %s.

If you expect these alerts, open this page and press its button to
confirm (opening the page alone confirms nothing):

%s

The link works until %s. If you did not expect this, ignore this
email: no alert is sent to this address until it is confirmed.
`, n.cfg.PublicURL, addr, n.cfg.PublicURL+"/api/v1/recipients/confirm/"+token, exp.Format(time.RFC1123))
	if err := n.mailer.sendNotice(ctx, addr, "Confirm that "+addr+" receives certfleet alerts", body, "confirm-"+ev.EventID.String()+"-"+h); err != nil {
		confirmMails.WithLabelValues("failed").Inc()
		log.Warn("confirmation mail failed", zap.Error(err))
		return nil
	}
	confirmMails.WithLabelValues("sent").Inc()
	log.Info("confirmation mail sent")
	return n.rdb.Set(ctx, marker, 1, n.cfg.ClaimLinkTTL).Err()
}
