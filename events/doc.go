// Package events defines certfleet's event types, the envelope every event
// travels in, the Redis stream names that carry them, and the publisher that
// appends them; package events/stream consumes them.
//
// Events are named <aggregate>.<past tense>.v<N>. Fields are only ever added
// to a payload; a breaking change is a new version with a new name. Every
// event carries a UUID (event_id) and every consumer is idempotent, because
// delivery is at least once.
//
// On the wire an event is a Redis stream entry in watermill-redisstream's
// format: the field "_watermill_message_uuid" holds the event id and
// "payload" holds the JSON envelope. Lua scripts on the command side write
// the same fields (see StreamValues), so one decoder reads both.
package events
