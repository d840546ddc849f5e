package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Envelope is the common wrapper of every event.
type Envelope struct {
	// EventID identifies the event; consumers deduplicate on it.
	EventID uuid.UUID `json:"event_id"`
	// Name is the versioned event name, e.g. "domain.added.v1".
	Name string `json:"name"`
	// OccurredAt is when the fact happened (UTC, millisecond precision).
	OccurredAt time.Time `json:"occurred_at"`
	// TenantID is the account the event belongs to; empty for system events.
	TenantID string `json:"tenant_id"`
	// AggregateID is the id of the thing the event is about (domain id, key id...).
	AggregateID string `json:"aggregate_id"`
	// Payload is the event-specific body, one of the *V1 types of this package.
	Payload json.RawMessage `json:"payload"`
}

// New builds an envelope with a fresh random event id.
func New(name, tenantID, aggregateID string, payload any) (Envelope, error) {
	return NewWithID(uuid.New(), name, tenantID, aggregateID, payload)
}

// NewWithID builds an envelope with a caller-chosen event id, for events
// whose id must be deterministic so that a redelivered cause yields the same
// event (see ScanEventID).
func NewWithID(id uuid.UUID, name, tenantID, aggregateID string, payload any) (Envelope, error) {
	if name == "" {
		return Envelope{}, errors.New("event name is empty")
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return Envelope{}, fmt.Errorf("marshal %s payload: %w", name, err)
	}
	return Envelope{
		EventID:     id,
		Name:        name,
		OccurredAt:  time.Now().UTC().Truncate(time.Millisecond),
		TenantID:    tenantID,
		AggregateID: aggregateID,
		Payload:     body,
	}, nil
}

// Decode unmarshals the payload into v.
func (e Envelope) Decode(v any) error {
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("decode %s payload of event %s: %w", e.Name, e.EventID, err)
	}
	return nil
}

// Marshal returns the JSON form of the envelope, as stored in the stream's
// "payload" field and in ClickHouse.
func (e Envelope) Marshal() ([]byte, error) {
	return json.Marshal(e)
}

// Unmarshal parses a JSON envelope and checks its required fields.
func Unmarshal(data []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: %w", err)
	}
	if e.EventID == uuid.Nil || e.Name == "" {
		return Envelope{}, fmt.Errorf("decode envelope: missing event_id or name")
	}
	return e, nil
}

// Message wraps the envelope in a watermill message whose UUID is the event id.
func (e Envelope) Message() (*message.Message, error) {
	body, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	return message.NewMessage(e.EventID.String(), body), nil
}

// FromMessage extracts the envelope from a watermill message.
func FromMessage(m *message.Message) (Envelope, error) {
	return Unmarshal(m.Payload)
}

// StreamValues returns the fields of a Redis stream entry carrying e, in the
// format watermill-redisstream's default marshaller writes. Lua scripts that
// XADD events take these values as arguments.
func (e Envelope) StreamValues() (map[string]any, error) {
	body, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		watermillUUIDField: e.EventID.String(),
		payloadField:       string(body),
	}, nil
}

// FromStreamValues decodes a Redis stream entry written by the publisher or
// by a Lua script.
func FromStreamValues(values map[string]any) (Envelope, error) {
	raw, ok := values[payloadField].(string)
	if !ok {
		return Envelope{}, fmt.Errorf("stream entry has no %q field", payloadField)
	}
	return Unmarshal([]byte(raw))
}

const (
	watermillUUIDField = "_watermill_message_uuid"
	payloadField       = "payload"
)

// scanNamespace is the UUIDv5 namespace for scan event ids.
var scanNamespace = uuid.MustParse("6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90")

// ScanEventID is the id of the scan.completed event for one job seen from
// one region: deterministic, so that a job redelivered to the region after a
// crash produces the same event and the history keeps it once.
func ScanEventID(jobID uuid.UUID, region string) uuid.UUID {
	return uuid.NewSHA1(scanNamespace, []byte(jobID.String()+"|"+region))
}
