package events

import "time"

// Notification channel and delivery events (coordinator/notifier). Secrets
// never appear in them: a channel event says only whether one is set.
const (
	ChannelCreated       = "channel.created.v1"
	ChannelUpdated       = "channel.updated.v1"
	ChannelDeleted       = "channel.deleted.v1"
	ChannelTestRequested = "channel.test_requested.v1"
	// ConfirmationRequested and RecipientConfirmed are an email
	// recipient's double opt-in (internal/channels' confirm.go).
	ConfirmationRequested = "channel.confirmation_requested.v1"
	RecipientConfirmed    = "channel.recipient_confirmed.v1"
	NotificationAttempted = "notification.attempted.v1"
	NotificationFailed    = "notification.failed.v1"
)

// ChannelV1 is the state of a notification channel after it was created or
// updated (ChannelCreated, ChannelUpdated). AggregateID is the channel id.
type ChannelV1 struct {
	ChannelID   string   `json:"channel_id"`
	Type        string   `json:"type"`
	Name        string   `json:"name"`
	MinSeverity string   `json:"min_severity"`
	Digest      bool     `json:"digest"`
	URL         string   `json:"url,omitempty"`
	SecretSet   bool     `json:"secret_set"`
	To          []string `json:"to,omitempty"`
}

// ChannelDeletedV1: a channel was deleted; its pending deliveries give up.
type ChannelDeletedV1 struct {
	ChannelID string `json:"channel_id"`
}

// ChannelTestRequestedV1: a tenant asked for a sample message to be sent
// to a channel (POST /api/v1/channels/{id}/test). AggregateID is the
// channel id. The notifier applies it by queueing the delivery
// DeliveryID, which the API derived from the event id and the channel id
// (internal/channels.DeliveryID) and answered with; a redelivered event
// names the same delivery, so it is queued once.
type ChannelTestRequestedV1 struct {
	ChannelID  string `json:"channel_id"`
	DeliveryID string `json:"delivery_id"`
}

// ConfirmationRequestedV1: a tenant asked for the confirmation mail of a
// pending recipient of its email channel to be sent again (POST
// /api/v1/channels/{id}/confirmations). AggregateID is the channel id.
// The notifier mails the link, within its limits per tenant and address.
type ConfirmationRequestedV1 struct {
	ChannelID string `json:"channel_id"`
	Address   string `json:"address"`
}

// RecipientConfirmedV1: the owner of Address confirmed, through its
// mailed link, that it receives the tenant's alerts. AggregateID is the
// address in lower case; the confirmation holds for every email channel of
// the tenant.
type RecipientConfirmedV1 struct {
	Address string `json:"address"`
}

// NotificationAttemptedV1 is one attempt to deliver a message to a
// channel. AggregateID is the delivery id, which is derived from the cause
// (alert event id + channel id), so all attempts of a delivery share it.
type NotificationAttemptedV1 struct {
	DeliveryID string `json:"delivery_id"`
	ChannelID  string `json:"channel_id"`
	// EventID is the alert event (or test request) delivered.
	EventID string `json:"event_id"`
	AlertID string `json:"alert_id,omitempty"`
	// Attempt counts from 1.
	Attempt int `json:"attempt"`
	// Status is "delivered", "retrying" or "failed" (this was the last).
	Status string `json:"status"`
	// HTTPStatus is the receiver's status code; 0 when there was none.
	HTTPStatus int `json:"http_status,omitempty"`
	// ErrorClass is a fixed vocabulary (timeout, refused_target, dns,
	// connect, tls, http_4xx, http_5xx, redirect, secret, config,
	// channel_deleted, unconfirmed, smtp, other);
	// empty on success.
	ErrorClass string `json:"error_class,omitempty"`
	// Error is a short description of the failure.
	Error      string     `json:"error,omitempty"`
	DurationMS int64      `json:"duration_ms"`
	At         time.Time  `json:"at"`
	NextAt     *time.Time `json:"next_attempt_at,omitempty"`
}

// NotificationFailedV1: a delivery gave up after its last attempt.
type NotificationFailedV1 struct {
	DeliveryID string `json:"delivery_id"`
	ChannelID  string `json:"channel_id"`
	EventID    string `json:"event_id"`
	AlertID    string `json:"alert_id,omitempty"`
	Attempts   int    `json:"attempts"`
	ErrorClass string `json:"error_class"`
	Error      string `json:"error"`
}
