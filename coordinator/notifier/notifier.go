// Package notifier delivers alerts to the channels tenants configure:
// webhooks (signed JSON), Slack incoming webhooks and email (email.go).
//
// The notifier reads alert.raised.v1 and alert.resolved.v1 from the events
// stream through the consumer group "notifier" and turns each into one
// delivery per matching channel. A delivery's id is derived from the event
// id and the channel id and is created with SETNX, so a redelivered event,
// or two notifier replicas reading it, never make a second delivery. Due
// deliveries wait in their tenant's Redis sorted set; a worker claims one
// under a lease (so two notifiers never send it at once) from the tenant
// whose turn comes first, a tenant having at most Config.TenantSends sends
// in flight and a channel whose sends keep timing out waiting behind its
// breaker (queue.go), sends it, records the attempt
// (a capped list per channel, and a notification.attempted.v1 event) and
// either finishes it or schedules a retry with exponential backoff, giving
// up visibly (notification.failed.v1) after MaxAttempts.
//
// A tenant's request to test a channel (channel.test_requested.v1, written
// by the API through internal/channels) is applied the same way: one
// delivery of a sample message, its id derived from the request's event id.
//
// Every outbound connection to a user-supplied URL goes through the
// guarded dialer (internal/guard): a private or loopback target is refused
// unless the operator allowed it (--allow-targets).
package notifier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/replicated"
)

// Channel types: internal/channels'. The senders are registered by them.
const (
	TypeWebhook = channels.TypeWebhook
	TypeSlack   = channels.TypeSlack
	TypeEmail   = channels.TypeEmail
)

// Severities, lowest first: the alert engine's (events/alerts.go).
const (
	SeverityInfo     = events.SeverityInfo
	SeverityWarning  = events.SeverityWarning
	SeverityCritical = events.SeverityCritical
)

// Channel is a tenant's channel, and Attempt one try of a delivery to it,
// as internal/channels keeps them: the notifier reads channels and writes
// attempts, and its senders and queue speak of both throughout.
type (
	Channel = channels.Channel
	Attempt = channels.Attempt
)

// Message statuses.
const (
	StatusTriggered = "triggered"
	StatusResolved  = "resolved"
	StatusTest      = "test"
)

// Message is what every sender renders: one alert raised or resolved (or a
// test message). It is stored with its delivery, so it carries everything
// a sender needs without reading the alert again.
type Message struct {
	// EventID is the id of the alert event (or of the test request).
	EventID string `json:"event_id"`
	// AlertID is the alert's id.
	AlertID string `json:"alert_id"`
	// Kind is the alert kind (ssl_expiry, ssl_expired, chain_invalid, ...).
	Kind string `json:"alert_type"`
	// Severity is info, warning or critical.
	Severity string `json:"severity"`
	// Status is StatusTriggered, StatusResolved or StatusTest.
	Status string `json:"status"`
	// Title is a one-line summary; Text the longer explanation.
	Title string `json:"title"`
	Text  string `json:"message"`
	// DomainID, Hostname and Port name the monitored endpoint.
	DomainID string `json:"domain_id"`
	Hostname string `json:"hostname"`
	Port     int    `json:"port,omitempty"`
	// ThresholdDays is the expiry threshold crossed, for ssl_expiry.
	ThresholdDays *int `json:"threshold_days"`
	// LeafSHA256, IPs and Regions say which certificate, where.
	LeafSHA256 string   `json:"leaf_sha256,omitempty"`
	IPs        []string `json:"ips,omitempty"`
	Regions    []string `json:"regions,omitempty"`
	// TriggeredAt is when the alert was raised.
	TriggeredAt time.Time `json:"triggered_at"`
	// ResolvedAt and ResolvedWhy are set for a resolved alert.
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
	ResolvedWhy string     `json:"resolved_reason,omitempty"`
	// Links point to the alert and the domain in the API.
	Links []Link `json:"links,omitempty"`
}

// Link is a titled URL a message points to.
type Link struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// Sender sends messages to one type of channel. A slice, so that a digest
// is one send; immediate deliveries pass one message. ch carries its opened
// Secret. An error is retried by the caller unless it wraps ErrPermanent.
type Sender interface {
	Send(ctx context.Context, ch Channel, msgs []Message) error
}

// ErrPermanent marks a send that no retry can fix (say, a receiver that
// answered 410 Gone, or a target the guard refuses): the delivery gives up
// at once.
var ErrPermanent = errors.New("permanent failure")

// DialFunc dials a network address; senders take one so that every
// connection to a user-supplied address goes through the guard.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Registry maps channel types to their senders.
type Registry struct {
	senders map[string]Sender
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{senders: make(map[string]Sender)} }

// Register sets the sender of channel type typ, replacing any before.
func (r *Registry) Register(typ string, s Sender) { r.senders[typ] = s }

// Sender returns the sender of typ.
func (r *Registry) Sender(typ string) (Sender, bool) {
	s, ok := r.senders[typ]
	return s, ok
}

// Types lists the registered channel types, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.senders))
	for t := range r.senders {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Group is the notifier's consumer group on the events stream.
const Group = "notifier"

// Config configures a Notifier. The email part (SMTPConfig, its defaults
// and validation, newEmailSender) lives in email.go.
type Config struct {
	// Consumer names this notifier in the consumer group and in delivery
	// leases; unique per replica. Default hostname-pid.
	Consumer string
	// ClaimIdle is how long an event stays pending with a stopped replica
	// before another claims it (--claim-idle). Default
	// stream.DefaultClaimIdle.
	ClaimIdle time.Duration
	// Allow lists the private ranges webhook and Slack URLs may reach
	// (--allow-targets); everything public is allowed.
	Allow []netip.Prefix
	// Passphrase opens webhook secrets (--secrets-passphrase); without it a
	// channel with a secret cannot be delivered to.
	Passphrase string
	// MaxAttempts is how many times a delivery is tried before it gives
	// up. Default 8.
	MaxAttempts int
	// Backoff is the pause after the first failed attempt; it doubles after
	// each failure up to MaxBackoff, with jitter (internal/backoff). Default 1s.
	Backoff time.Duration
	// MaxBackoff caps the pause between attempts. Default 5m.
	MaxBackoff time.Duration
	// Workers is how many deliveries this notifier sends at once. Default 4.
	Workers int
	// TenantSends is how many deliveries of one tenant are sent at once,
	// over every notifier (--notify-tenant-sends, StoreConfig.TenantSends):
	// a tenant whose receivers hang holds at most this many workers.
	// Default 1.
	TenantSends int
	// Lease is how long a claimed delivery belongs to the worker sending
	// it; a notifier that dies mid-send frees it after this. It must exceed
	// Timeout. Default 1m.
	Lease time.Duration
	// Poll is how often idle workers look for due deliveries. Default 250ms.
	Poll time.Duration
	// Timeout bounds one webhook or Slack send (connect, TLS, request,
	// response). Default 10s. An email send is bounded by SMTP.Timeout.
	Timeout time.Duration
	// SMTP is the operator's relay for email channels (email.go); an
	// empty SMTP.Addr makes email deliveries fail permanently, saying so.
	SMTP SMTPConfig
	// MaxResponseBytes is the most of a receiver's answer read (the rest is
	// dropped). Default 64 KiB.
	MaxResponseBytes int64
	// AttemptsKept is how many attempts are kept per channel for
	// GET /api/v1/channels/{id}/deliveries. Default 200.
	AttemptsKept int
	// PublicURL is the API's base URL, for links in messages (optional;
	// without it no claim approval mail is sent, claimmail.go).
	PublicURL string
	// ClaimLinkTTL is how long a mailed claim approval link, or recipient
	// confirmation link (confirmmail.go), works. Default
	// claimlink.DefaultTTL.
	ClaimLinkTTL time.Duration
	// ConfirmPerTenant and ConfirmPerAddress limit the confirmation mails
	// to email recipients: per tenant, and per address whatever the
	// tenant. Default DefaultConfirmPerTenant, DefaultConfirmPerAddress.
	ConfirmPerTenant, ConfirmPerAddress ratelimit.Limit
	// Wait is how many replicas must hold a delivery before the alert
	// event it comes from is acknowledged (StoreConfig.Wait). Default: no
	// wait.
	Wait replicated.Config
	// DigestHour is the UTC hour digests are sent at (digest.go), 0-23;
	// zero is midnight (the --digest-hour flag defaults to 8).
	DigestHour int
}

func (c *Config) setDefaults() {
	if c.Consumer == "" {
		c.Consumer = stream.ConsumerName("notifier", true)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 8
	}
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.TenantSends == 0 {
		c.TenantSends = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	c.SMTP.setDefaults()
	if c.Lease == 0 {
		c.Lease = max(time.Minute, 2*c.Timeout, 2*c.SMTP.Timeout)
	}
	if c.Poll == 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 64 << 10
	}
	if c.AttemptsKept == 0 {
		c.AttemptsKept = 200
	}
	if c.ClaimLinkTTL == 0 {
		c.ClaimLinkTTL = claimlink.DefaultTTL
	}
	if c.ConfirmPerTenant == (ratelimit.Limit{}) {
		c.ConfirmPerTenant = DefaultConfirmPerTenant
	}
	if c.ConfirmPerAddress == (ratelimit.Limit{}) {
		c.ConfirmPerAddress = DefaultConfirmPerAddress
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxAttempts < 1 || c.MaxAttempts > 50 {
		errs = append(errs, fmt.Errorf("max attempts must be 1-50, got %d", c.MaxAttempts))
	}
	if c.Backoff <= 0 || c.MaxBackoff < c.Backoff {
		errs = append(errs, fmt.Errorf("backoff must be positive and at most max backoff, got %s and %s", c.Backoff, c.MaxBackoff))
	}
	if c.TenantSends < 1 {
		errs = append(errs, fmt.Errorf("tenant sends must be positive, got %d", c.TenantSends))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers must be positive, got %d", c.Workers))
	}
	if c.Timeout <= 0 || c.Lease <= c.Timeout || c.Lease <= c.SMTP.Timeout {
		errs = append(errs, fmt.Errorf("lease (%s) must exceed the send timeouts (%s, smtp %s), which must be positive", c.Lease, c.Timeout, c.SMTP.Timeout))
	}
	errs = append(errs, c.SMTP.validate()...)
	if c.Poll <= 0 {
		errs = append(errs, fmt.Errorf("poll must be positive, got %s", c.Poll))
	}
	if c.MaxResponseBytes < 1 || c.AttemptsKept < 1 {
		errs = append(errs, errors.New("max response bytes and attempts kept must be positive"))
	}
	for _, l := range []ratelimit.Limit{c.ConfirmPerTenant, c.ConfirmPerAddress} {
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("confirmation mail limit: %w", err))
		}
	}
	if c.DigestHour < 0 || c.DigestHour > 23 {
		errs = append(errs, fmt.Errorf("digest hour must be 0-23, got %d", c.DigestHour))
	}
	return errors.Join(errs...)
}

// applyTestRequest queues the sample message a channel.test_requested.v1
// asks for, whatever the channel's severity filter and digest setting. The
// delivery id is derived from the event id and the channel id, as the API
// that answered with it did, so a redelivered request queues nothing more.
// A request that cannot be applied (undecodable, or its channel deleted
// since) is logged and dropped: retrying cannot fix it.
func (n *Notifier) applyTestRequest(ctx context.Context, ev events.Envelope) error {
	req, err := decodeTestRequest(ev)
	log := n.logger.With(zap.String("event_id", ev.EventID.String()), zap.String("tenant_id", ev.TenantID))
	if err != nil {
		log.Error("skipping undecodable test request", zap.Error(err))
		return nil
	}
	ch, err := n.channels.Get(ctx, ev.TenantID, req.ChannelID)
	if errors.Is(err, channels.ErrNotFound) {
		log.Info("skipping the test request of a deleted channel", zap.String("channel_id", req.ChannelID))
		return nil
	}
	if err != nil {
		return err
	}
	id, created, err := n.store.Enqueue(ctx, ch, SampleMessage(ev.EventID.String(), ev.OccurredAt))
	if err != nil {
		return err
	}
	if created {
		log.Debug("test delivery queued", zap.String("delivery_id", id), zap.String("channel_id", ch.ID))
	}
	return nil
}

// decodeTestRequest reads a channel.test_requested.v1 event and checks that
// the delivery it names is the one its event id and channel derive: the id
// the API answered with is the one the notifier queues.
func decodeTestRequest(ev events.Envelope) (events.ChannelTestRequestedV1, error) {
	var req events.ChannelTestRequestedV1
	if err := ev.Decode(&req); err != nil {
		return req, err
	}
	if req.ChannelID == "" || req.ChannelID != ev.AggregateID {
		return req, fmt.Errorf("test request %s: channel %q does not match its aggregate %q", ev.EventID, req.ChannelID, ev.AggregateID)
	}
	if want := channels.DeliveryID(ev.EventID.String(), req.ChannelID); req.DeliveryID != want {
		return req, fmt.Errorf("test request %s: delivery %q, want %q", ev.EventID, req.DeliveryID, want)
	}
	return req, nil
}
