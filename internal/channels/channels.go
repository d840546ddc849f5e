// Package channels keeps the notification channels of tenants in Redis:
// where a tenant's alerts go (webhook, Slack, email), their validation, the
// sealing of their secrets, the channel.* events, and the list of delivery
// attempts the notifier records for each. The API writes channels and asks
// for test messages through it; the notifier (coordinator/notifier) reads
// channels and opens their secrets through it, and alone sends and records
// deliveries.
package channels

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/idempotency"
	"github.com/certfleet/certfleet/internal/printable"
)

// Channel types.
const (
	TypeWebhook = "webhook"
	TypeSlack   = "slack"
	TypeEmail   = "email"
)

// Limits of a channel.
const (
	MaxNameLen    = 100
	MaxURLLen     = 2048
	MinSecretLen  = 16
	MaxSecretLen  = 256
	MaxRecipients = 20
)

var (
	// ErrNotFound is returned for a channel that does not exist or belongs
	// to another tenant.
	ErrNotFound = errors.New("channel not found")
	// ErrNoPassphrase is returned when a channel with a secret is written
	// or delivered but no secrets passphrase is configured.
	ErrNoPassphrase = errors.New("webhook secrets are disabled: the server has no secrets passphrase (--secrets-passphrase)")
)

// InvalidError is a channel the request describes wrongly; its message
// names the field.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Key names. The notifier's queue writes AttemptsKey (its finish script);
// everything else here is this package's alone.
// A channel's keys carry its tenant's tag (events.TenantTag), so a script
// writes the channel, the tenant's index and the tenant's event stream in
// one Redis Cluster slot.
func channelKey(tenant, id string) string {
	return "notify:channel:" + events.TenantTag(tenant) + ":" + id
}
func tenantChannelsKey(tenant string) string {
	return "notify:tenant:" + events.TenantTag(tenant) + ":" + tenant + ":channels"
}
func secretAAD(channelID string) []byte { return []byte("notify:channel:" + channelID + ":secret") }

// AttemptsKey is the capped list of a channel's latest delivery attempts
// (JSON Attempt records, newest first): written by the notifier, read by
// Store.Attempts, deleted with the channel. It carries the tenant's tag, so
// the notifier's finish script records an attempt and appends its event
// in one Redis Cluster slot.
func AttemptsKey(tenant, channelID string) string {
	return "notify:channel:" + events.TenantTag(tenant) + ":" + channelID + ":attempts"
}

// saltKey holds the scrypt salt of the secrets key, created once.
const saltKey = "notify:seal:salt"

// DeliveryID is the id of the delivery of event eventID to channel
// channelID: derived from both, so that the same event read twice (a
// redelivery, a second notifier) names the same delivery. The API derives
// a test message's id with it before the notifier queues it.
func DeliveryID(eventID, channelID string) string {
	sum := sha256.Sum256([]byte(eventID + "|" + channelID))
	return "dl_" + hex.EncodeToString(sum[:16])
}

// Severities, lowest first: the alert engine's (events/alerts.go).
var severities = []string{events.SeverityInfo, events.SeverityWarning, events.SeverityCritical}

// ValidSeverity tells whether s is a known severity.
func ValidSeverity(s string) bool { return slices.Contains(severities, s) }

// SeverityRank orders severities: info 1, warning 2, critical 3, anything
// else 0.
func SeverityRank(s string) int { return slices.Index(severities, s) + 1 }

// Channel is where a tenant's alerts go.
type Channel struct {
	// ID is the channel's random id ("ch_" + 20 hex digits).
	ID string `json:"id"`
	// TenantID is the account owning the channel.
	TenantID string `json:"tenant_id"`
	// Type is TypeWebhook, TypeSlack or TypeEmail.
	Type string `json:"type"`
	// Name is the tenant's label for the channel.
	Name string `json:"name"`
	// MinSeverity drops messages below it ("info" lets everything through).
	MinSeverity string `json:"min_severity"`
	// Digest collects the channel's messages into one a day (the
	// notifier's digest.go).
	Digest bool `json:"digest"`
	// URL is where webhook and Slack messages are POSTed.
	URL string `json:"url,omitempty"`
	// SealedSecret is the webhook signing secret sealed with internal/seal
	// (additional data: secretAAD(ID)); empty when the channel has none.
	SealedSecret string `json:"sealed_secret,omitempty"`
	// Secret is the opened signing secret: filled in by OpenSecret just
	// before a send, never stored or shown.
	Secret string `json:"-"`
	// To lists the email recipients (1-20).
	To []string `json:"to,omitempty"`
	// Confirm: each recipient in To gets the channel's messages only once
	// its owner confirmed it (confirm.go). Every write since double
	// opt-in sets it on email channels; a channel written before has it
	// false, and its recipients count as confirmed, so an upgrade silences
	// no working channel (its next update moves them into the tenant's
	// confirmed set).
	Confirm bool `json:"confirm,omitempty"`
	// CreatedAt and UpdatedAt are set by the store.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Idem is the fingerprint of the creation's Idempotency-Key request
	// (internal/idempotency); empty when it had none.
	Idem string `json:"idem,omitempty"`
	// Replayed: Create found the channel an earlier attempt of the same
	// request made (never stored).
	Replayed bool `json:"-"`
}

// Accepts tells whether the channel wants a message of severity sev.
func (c Channel) Accepts(sev string) bool {
	return SeverityRank(sev) >= SeverityRank(c.MinSeverity)
}

// Attempt is one try of a delivery, as GET
// /api/v1/channels/{id}/deliveries lists it.
type Attempt struct {
	DeliveryID string `json:"delivery_id"`
	EventID    string `json:"event_id"`
	AlertID    string `json:"alert_id,omitempty"`
	AlertType  string `json:"alert_type,omitempty"`
	// Digest tells the delivery was a daily digest of Messages messages.
	Digest   bool `json:"digest"`
	Messages int  `json:"messages"`
	// Attempt counts from 1.
	Attempt int `json:"attempt"`
	// Status is delivered, retrying (another attempt is scheduled) or
	// failed (the delivery gave up).
	Status     string `json:"status"`
	HTTPStatus int    `json:"http_status,omitempty"`
	ErrorClass string `json:"error_class,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	// At is when the attempt ended; NextAt when the next one is due.
	At     time.Time  `json:"at"`
	NextAt *time.Time `json:"next_attempt_at,omitempty"`
}

// ChannelInput is what a client sends to create or replace a channel.
type ChannelInput struct {
	Type        string
	Name        string
	URL         string
	MinSeverity string
	Digest      bool
	To          []string
	// Secret: nil keeps the current secret (on update), "" removes it, any
	// other value replaces it.
	Secret *string
	// Idempotency makes a Create's retry find the channel its first
	// attempt made (the zero value: none).
	Idempotency idempotency.Request
}

// normalize checks in and returns the channel it describes (without id,
// tenant, secret and times).
func normalize(in ChannelInput) (Channel, error) {
	ch := Channel{Type: in.Type, Name: strings.TrimSpace(in.Name), MinSeverity: in.MinSeverity, Digest: in.Digest}
	switch in.Type {
	case TypeWebhook, TypeSlack, TypeEmail:
	case "":
		return ch, invalid(`field "type" is required: webhook, slack or email`)
	default:
		return ch, invalid(`field "type" must be webhook, slack or email, got %q`, in.Type)
	}
	if ch.Name == "" {
		ch.Name = in.Type
	}
	if utf8.RuneCountInString(ch.Name) > MaxNameLen || printable.HasControl(ch.Name) {
		return ch, invalid(`field "name" must be at most %d printable characters`, MaxNameLen)
	}
	if ch.MinSeverity == "" {
		ch.MinSeverity = events.SeverityInfo
	}
	if !ValidSeverity(ch.MinSeverity) {
		return ch, invalid(`field "min_severity" must be info, warning or critical, got %q`, in.MinSeverity)
	}
	switch in.Type {
	case TypeWebhook, TypeSlack:
		if err := checkURL(in.URL); err != nil {
			return ch, err
		}
		ch.URL = in.URL
		if len(in.To) > 0 {
			return ch, invalid(`field "to" is for email channels only`)
		}
		if in.Type == TypeSlack && in.Secret != nil && *in.Secret != "" {
			return ch, invalid(`field "secret" is for webhook channels only (a Slack URL is its own secret)`)
		}
	case TypeEmail:
		if in.URL != "" {
			return ch, invalid(`field "url" is for webhook and slack channels only`)
		}
		if in.Secret != nil && *in.Secret != "" {
			return ch, invalid(`field "secret" is for webhook channels only`)
		}
		if len(in.To) < 1 || len(in.To) > MaxRecipients {
			return ch, invalid(`field "to" must list 1 to %d email addresses, got %d`, MaxRecipients, len(in.To))
		}
		seen := make(map[string]bool, len(in.To))
		for _, a := range in.To {
			addr, err := mail.ParseAddress(a)
			// HasControl: net/mail takes any non-ASCII rune, C1 controls
			// and bidi overrides included, into a header.
			if err != nil || addr.Address != strings.TrimSpace(a) || printable.HasControl(a) {
				return ch, invalid(`field "to": %q is not a bare email address (name@example.com)`, a)
			}
			lower := strings.ToLower(addr.Address)
			if seen[lower] {
				return ch, invalid(`field "to": %q is listed twice`, a)
			}
			seen[lower] = true
			ch.To = append(ch.To, addr.Address)
		}
	}
	if in.Secret != nil && *in.Secret != "" {
		n := len(*in.Secret)
		if n < MinSecretLen || n > MaxSecretLen || printable.HasControl(*in.Secret) {
			return ch, invalid(`field "secret" must be %d to %d printable characters`, MinSecretLen, MaxSecretLen)
		}
	}
	return ch, nil
}

// checkURL accepts absolute http and https URLs with a host. Which
// addresses the host may resolve to is the guard's business at send time:
// a name's answers change, so a check here would prove nothing.
func checkURL(raw string) error {
	if raw == "" {
		return invalid(`field "url" is required`)
	}
	if len(raw) > MaxURLLen {
		return invalid(`field "url" must be at most %d characters`, MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return invalid(`field "url" must be an absolute http or https URL, got %q`, raw)
	}
	if u.User != nil {
		return invalid(`field "url" must not carry credentials (user:password@)`)
	}
	if u.Fragment != "" || printable.HasControl(raw) {
		return invalid(`field "url" must not have a fragment or control characters`)
	}
	return nil
}

// Shown is ch as a key reads it: a key without write (canWrite false)
// sees the URL redacted as the events carry it (RedactURL), because a
// Slack, Teams or Discord webhook URL is itself the credential to post
// into the tenant's chat, and a read key monitors, it does not speak for
// the tenant. A write key, which may replace the URL anyway, sees it whole.
func (ch Channel) Shown(canWrite bool) Channel {
	if !canWrite {
		ch.URL = RedactURL(ch.URL)
	}
	return ch
}

// RedactURL keeps a URL's scheme, host and the first path segment: a Slack
// incoming-webhook URL's path is its secret, and events live for ever
// (so do delivery errors, which read keys list, and logs).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return ""
	}
	path := u.Path
	if len(path) > 1 {
		if i := strings.IndexByte(path[1:], '/'); i >= 0 {
			path = path[:i+1] + "/..."
		}
	}
	return u.Scheme + "://" + u.Host + path
}

// validID tells whether id has the form of a channel id, so that no
// client-chosen text becomes part of a key.
func validID(id string) bool {
	if len(id) != 23 || !strings.HasPrefix(id, "ch_") {
		return false
	}
	_, err := hex.DecodeString(id[3:])
	return err == nil && strings.ToLower(id) == id
}
