package notifier

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Webhook headers.
const (
	HeaderTimestamp = "X-Certfleet-Timestamp"
	HeaderSignature = "X-Certfleet-Signature"
	HeaderDelivery  = "X-Certfleet-Delivery"
)

// WebhookBody is the JSON a webhook receives: one message, or a digest's
// several.
type WebhookBody struct {
	// DeliveryID is the same for every attempt of one delivery: a receiver
	// drops the repeats of an at-least-once delivery by it.
	DeliveryID string `json:"delivery_id"`
	// ChannelID is the channel delivered to.
	ChannelID string `json:"channel_id"`
	// SentAt is when this attempt was made.
	SentAt time.Time `json:"sent_at"`
	// Digest tells the messages were collected into a daily digest.
	Digest   bool      `json:"digest"`
	Messages []Message `json:"messages"`
}

// Sign returns the X-Certfleet-Signature value of body sent at ts with
// secret: "sha256=" and the hex HMAC-SHA256 of "<ts>.<body>".
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify is what a receiver does (and what the tests do): the signature
// must match and the timestamp be within maxAge of now, either way, so a
// captured request cannot be replayed later.
func Verify(secret, tsHeader, sigHeader string, body []byte, now time.Time, maxAge time.Duration) error {
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s %q", HeaderTimestamp, tsHeader)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("timestamp %d is %s away from now: replayed or clock skew", ts, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(Sign(secret, ts, body)), []byte(sigHeader)) {
		return fmt.Errorf("signature does not match")
	}
	return nil
}

// webhookSender POSTs WebhookBody, signed when the channel has a secret.
type webhookSender struct {
	client  *http.Client
	maxResp int64
	now     func() time.Time
}

func (w *webhookSender) Send(ctx context.Context, ch Channel, msgs []Message) error {
	now := w.now().UTC()
	body, err := json.Marshal(WebhookBody{
		DeliveryID: DeliveryIDFrom(ctx), ChannelID: ch.ID, SentAt: now.Truncate(time.Second),
		Digest: IsDigest(ctx), Messages: msgs,
	})
	if err != nil {
		return fmt.Errorf("encode webhook body: %w", err)
	}
	h := http.Header{}
	ts := now.Unix()
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	if id := DeliveryIDFrom(ctx); id != "" {
		h.Set(HeaderDelivery, id)
	}
	if ch.Secret != "" {
		h.Set(HeaderSignature, Sign(ch.Secret, ts, body))
	} else if ch.SealedSecret != "" {
		return &SendError{Class: ClassSecret, Err: fmt.Errorf("channel %s has a secret that was not opened", ch.ID)}
	}
	return postJSON(ctx, w.client, ch.URL, body, h, w.maxResp)
}

type (
	deliveryIDKey struct{}
	digestKey     struct{}
)

// WithDigest tells senders the messages are a daily digest.
func WithDigest(ctx context.Context) context.Context {
	return context.WithValue(ctx, digestKey{}, true)
}

// IsDigest tells whether WithDigest marked ctx.
func IsDigest(ctx context.Context) bool {
	v, _ := ctx.Value(digestKey{}).(bool)
	return v
}

// WithDeliveryID tells senders which delivery they send (a webhook's
// X-Certfleet-Delivery, an email's Message-ID).
func WithDeliveryID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, deliveryIDKey{}, id)
}

// DeliveryIDFrom returns the delivery id WithDeliveryID set, or "".
func DeliveryIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(deliveryIDKey{}).(string)
	return id
}
