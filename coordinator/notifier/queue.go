package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
)

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryRetrying  = "retrying"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Queue keys. A delivery, its channel's attempt list and its events live
// in the slot of the tenant's partition (events.TenantTag), so each script
// below touches one Redis Cluster slot; the due set is split the same way,
// one per partition, and claim visits them in turn. The attempt list's
// name is internal/channels' AttemptsKey.
func dueKeyIn(tag string) string { return "notify:due:" + tag }
func deliveryKeyIn(tag, id string) string {
	return "notify:delivery:" + tag + ":" + id
}
func tenantDeliveryKey(tenant, id string) string {
	return deliveryKeyIn(events.TenantTag(tenant), id)
}

// deliveryTTL is how long a delivery record (and so its dedup marker)
// outlives its creation: far beyond any redelivery of its cause.
const deliveryTTL = 30 * 24 * time.Hour

// delivery is a queued message for one channel, as stored in Redis.
type delivery struct {
	ID        string
	ChannelID string
	TenantID  string
	EventID   string
	// Messages is one message, or a digest's several.
	Messages []Message
	// Digest tells the delivery is a digest (EnqueueDigest).
	Digest   bool
	Attempts int
	Status   string
}

// enqueueScript creates a delivery unless it exists and makes it due now.
// KEYS: delivery, due set. ARGV: delivery id, channel id, tenant, event id,
// messages JSON (an array), ttl seconds, digest ("1" or "0").
var enqueueScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'channel_id', ARGV[2], 'tenant_id', ARGV[3], 'event_id', ARGV[4],
  'messages', ARGV[5], 'digest', ARGV[7], 'attempts', 0, 'status', 'pending', 'created_ms', now)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
`)

// Enqueue creates the delivery of msg to ch, due at once, unless a
// delivery of msg.EventID to ch exists already. It returns the delivery id
// and whether this call created it.
func (s *Store) Enqueue(ctx context.Context, ch Channel, msg Message) (string, bool, error) {
	return s.enqueue(ctx, ch, msg.EventID, []Message{msg}, false)
}

// EnqueueDigest creates one delivery of msgs to ch, due at once, unless
// the delivery named by key exists already: digest.go calls it with a key
// naming the channel's day ("2026-11-25"), so however many notifiers
// race for a day's digest, one delivery is made, then retried, leased and
// recorded like any other (its attempts carry event id "digest|<key>").
func (s *Store) EnqueueDigest(ctx context.Context, ch Channel, key string, msgs []Message) (string, bool, error) {
	if len(msgs) == 0 {
		return "", false, errors.New("enqueue digest: no messages")
	}
	return s.enqueue(ctx, ch, "digest|"+key, msgs, true)
}

func (s *Store) enqueue(ctx context.Context, ch Channel, eventID string, msgs []Message, digest bool) (string, bool, error) {
	id := channels.DeliveryID(eventID, ch.ID)
	body, err := json.Marshal(msgs)
	if err != nil {
		return "", false, fmt.Errorf("encode messages: %w", err)
	}
	flag := "0"
	if digest {
		flag = "1"
	}
	tag := events.TenantTag(ch.TenantID)
	n, err := s.enqueues.RunScript(ctx, enqueueScript, []string{deliveryKeyIn(tag, id), dueKeyIn(tag)},
		id, ch.ID, ch.TenantID, eventID, string(body), int(deliveryTTL.Seconds()), flag).Int()
	if err != nil {
		return "", false, fmt.Errorf("enqueue delivery %s: %w", id, err)
	}
	return id, n == 1, nil
}

// SampleMessage is the message a channel test sends.
func SampleMessage(eventID string, now time.Time) Message {
	days := 14
	return Message{
		EventID: eventID, AlertID: "test", Kind: "ssl_expiry", Severity: SeverityInfo, Status: StatusTest,
		Title:    "Test notification from certfleet",
		Text:     "This is a test message: the channel works. A real alert names the domain, the certificate and what changed.",
		DomainID: "example", Hostname: "example.com", Port: 443, ThresholdDays: &days,
		TriggeredAt: now.UTC().Truncate(time.Second),
	}
}

// claimScript takes the first due delivery under a lease: its score moves
// to the lease's end, and that score is the lease token finishScript
// checks. KEYS: due set. ARGV: lease ms. Returns {id, score} or nil.
var claimScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #ids == 0 then return false end
local lease = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], lease, ids[1])
return {ids[1], tostring(lease)}
`)

// claim returns a due delivery and its lease token, or ok false. It tries
// the partitions' due sets from a random one on, so notifiers spread over
// them and none is starved.
func (s *Store) claim(ctx context.Context, lease time.Duration) (d delivery, token string, ok bool, err error) {
	tags := events.TenantTags()
	first := rand.IntN(len(tags))
	for i := range tags {
		d, token, ok, err = s.claimIn(ctx, tags[(first+i)%len(tags)], lease)
		if ok || err != nil {
			return d, token, ok, err
		}
	}
	return delivery{}, "", false, nil
}

// claimIn is claim on the due set of one partition.
func (s *Store) claimIn(ctx context.Context, tag string, lease time.Duration) (d delivery, token string, ok bool, err error) {
	res, err := claimScript.Run(ctx, s.rdb, []string{dueKeyIn(tag)}, lease.Milliseconds()).StringSlice()
	if errors.Is(err, redis.Nil) {
		return delivery{}, "", false, nil
	}
	if err != nil {
		return delivery{}, "", false, fmt.Errorf("claim delivery: %w", err)
	}
	id, token := res[0], res[1]
	rec, err := s.rdb.HGetAll(ctx, deliveryKeyIn(tag, id)).Result()
	if err != nil {
		return delivery{}, "", false, fmt.Errorf("read delivery %s: %w", id, err)
	}
	if len(rec) == 0 {
		// Expired record: nothing to send.
		s.rdb.ZRem(ctx, dueKeyIn(tag), id)
		return delivery{}, "", false, nil
	}
	d = delivery{ID: id, ChannelID: rec["channel_id"], TenantID: rec["tenant_id"], EventID: rec["event_id"],
		Status: rec["status"], Digest: rec["digest"] == "1"}
	d.Attempts, _ = strconv.Atoi(rec["attempts"])
	if err := json.Unmarshal([]byte(rec["messages"]), &d.Messages); err != nil || len(d.Messages) == 0 {
		return delivery{}, "", false, fmt.Errorf("decode delivery %s: %w", id, err)
	}
	return d, token, true, nil
}

// finishScript records an attempt if the lease is still the caller's.
// KEYS (one slot, the tenant's): due set, delivery, attempts list, the
// tenant's event stream. ARGV: 1 id, 2
// lease token, 3 status, 4 retry delay ms, 5 attempts, 6 attempt JSON, 7
// attempts kept (0: do not list), 8 maxlen, 9 error class, 10 error, 11
// number of fields of the attempted event, its fields, then the failed
// event's fields if any.
var finishScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == 'retrying' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'attempts', ARGV[5], 'last_class', ARGV[9], 'last_error', ARGV[10])
local kept = tonumber(ARGV[7])
if kept > 0 then
  redis.call('LPUSH', KEYS[3], ARGV[6])
  redis.call('LTRIM', KEYS[3], 0, kept - 1)
end
local na = tonumber(ARGV[11])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', unpack(ARGV, 12, 11 + na))
if #ARGV > 11 + na then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', unpack(ARGV, 12 + na))
end
return 1
`)

// finish records attempt a of d and moves d on: done, retried after delay,
// or given up. It returns false when the lease was lost (another notifier
// owns the delivery now) and nothing was recorded.
func (s *Store) finish(ctx context.Context, d delivery, token string, a Attempt, delay time.Duration, listed bool) (bool, error) {
	body, err := json.Marshal(a)
	if err != nil {
		return false, fmt.Errorf("encode attempt: %w", err)
	}
	att, err := events.New(events.NotificationAttempted, d.TenantID, d.ID, events.NotificationAttemptedV1{
		DeliveryID: d.ID, ChannelID: d.ChannelID, EventID: d.EventID, AlertID: a.AlertID, Attempt: a.Attempt,
		Status: a.Status, HTTPStatus: a.HTTPStatus, ErrorClass: a.ErrorClass, Error: a.Error,
		DurationMS: a.DurationMS, At: a.At, NextAt: a.NextAt,
	})
	if err != nil {
		return false, err
	}
	fields, err := att.StreamFields()
	if err != nil {
		return false, err
	}
	kept := 0
	if listed {
		kept = s.cfg.AttemptsKept
	}
	args := []any{d.ID, token, a.Status, delay.Milliseconds(), a.Attempt, string(body), kept, s.cfg.MaxLen,
		a.ErrorClass, a.Error, len(fields)}
	args = append(args, fields...)
	if a.Status == DeliveryFailed {
		failed, err := events.New(events.NotificationFailed, d.TenantID, d.ID, events.NotificationFailedV1{
			DeliveryID: d.ID, ChannelID: d.ChannelID, EventID: d.EventID, AlertID: a.AlertID,
			Attempts: a.Attempt, ErrorClass: a.ErrorClass, Error: a.Error,
		})
		if err != nil {
			return false, err
		}
		ff, err := failed.StreamFields()
		if err != nil {
			return false, err
		}
		args = append(args, ff...)
	}
	n, err := finishScript.Run(ctx, s.rdb,
		[]string{dueKeyIn(events.TenantTag(d.TenantID)), tenantDeliveryKey(d.TenantID, d.ID),
			channels.AttemptsKey(d.TenantID, d.ChannelID), events.EventStream(d.TenantID)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("record attempt %d of %s: %w", a.Attempt, d.ID, err)
	}
	return n == 1, nil
}

// DeliveryStatus returns the status and attempt count of the tenant's
// delivery id.
func (s *Store) DeliveryStatus(ctx context.Context, tenant, id string) (status string, attempts int, err error) {
	rec, err := s.rdb.HMGet(ctx, tenantDeliveryKey(tenant, id), "status", "attempts").Result()
	if err != nil {
		return "", 0, fmt.Errorf("read delivery %s: %w", id, err)
	}
	st, _ := rec[0].(string)
	if st == "" {
		return "", 0, redis.Nil
	}
	n, _ := strconv.Atoi(fmt.Sprint(rec[1]))
	return st, n, nil
}

// Depth returns how many deliveries wait in the queue (due now or later,
// retries included), over every partition's due set.
func (s *Store) Depth(ctx context.Context) (int64, error) {
	pipe := s.rdb.Pipeline()
	tags := events.TenantTags()
	cmds := make([]*redis.IntCmd, len(tags))
	for i, tag := range tags {
		cmds[i] = pipe.ZCard(ctx, dueKeyIn(tag))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("queue depth: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
