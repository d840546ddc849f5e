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
// below touches one Redis Cluster slot. Each tenant has its own due set
// (delivery id by due time, or by lease end while a send holds it) and
// the sends it has in flight (busy: delivery id by lease end); each
// partition has a ready set of its tenants by when one of their
// deliveries may next be claimed, and claim visits the partitions in
// turn. A tenant at its cap of sends in flight (StoreConfig.TenantSends)
// is ready only when one of them ends, so however many deliveries it has
// waiting, and however slow its receivers, it holds at most that many
// workers and the partition's other tenants go first. A channel's breaker
// (breakerTimeouts) holds its timeouts in a row and when it is open. The
// attempt list's name is internal/channels' AttemptsKey.
func dueKeyIn(tag, tenant string) string  { return dueKeyPrefix(tag) + tenant }
func busyKeyIn(tag, tenant string) string { return busyKeyPrefix(tag) + tenant }
func dueKeyPrefix(tag string) string      { return "notify:due:" + tag + ":" }
func busyKeyPrefix(tag string) string     { return "notify:busy:" + tag + ":" }
func readyKeyIn(tag string) string        { return "notify:ready:" + tag }
func breakerKeyPrefix(tag string) string  { return "notify:breaker:" + tag + ":" }
func breakerKeyIn(tag, channel string) string {
	return breakerKeyPrefix(tag) + channel
}
func deliveryKeyIn(tag, id string) string {
	return "notify:delivery:" + tag + ":" + id
}
func tenantDeliveryKey(tenant, id string) string {
	return deliveryKeyIn(events.TenantTag(tenant), id)
}

// breakerTimeouts is how many sends in a row to one channel must time out
// before its breaker opens: until the last one's retry falls due, the
// channel's other deliveries are not tried but wait behind it (claim moves
// them there, in their order, without an attempt), so a receiver that
// hangs costs its tenant one timeout per backoff, not one per alert. The
// retry is the probe: a send that does not time out closes the breaker.
const breakerTimeouts = 3

// legacyDueKeyIn is the due set of a partition as releases before the
// per-tenant due sets kept it (every delivery of the partition); claim
// moves what it holds into the tenants' due sets, so deliveries queued by
// a notifier of before are sent too.
func legacyDueKeyIn(tag string) string { return "notify:due:" + tag }

// queueLua starts every queue script: now on the Redis clock, and reset,
// which puts a tenant in its partition's ready set at the time its first
// delivery is due, but not before one of its sends ends when it has cap
// of them in flight (leases past their end no longer count: their
// notifier died, and the delivery is due again), or takes it out when it
// has nothing queued.
const queueLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function reset(ready, due, busy, tenant, cap)
  redis.call('ZREMRANGEBYSCORE', busy, '-inf', now)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', ready, tenant)
    return
  end
  local at = tonumber(first[2])
  if redis.call('ZCARD', busy) >= cap then
    local ends = redis.call('ZRANGE', busy, 0, 0, 'WITHSCORES')
    at = math.max(at, tonumber(ends[2]))
  end
  redis.call('ZADD', ready, at, tenant)
end
`

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
// KEYS: delivery, the tenant's due set, the partition's ready set, the
// tenant's busy set. ARGV: delivery id, channel id, tenant, event id,
// messages JSON (an array), ttl seconds, digest ("1" or "0"), sends in
// flight a tenant may have.
var enqueueScript = redis.NewScript(queueLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'channel_id', ARGV[2], 'tenant_id', ARGV[3], 'event_id', ARGV[4],
  'messages', ARGV[5], 'digest', ARGV[7], 'attempts', 0, 'status', 'pending', 'created_ms', now)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
reset(KEYS[3], KEYS[2], KEYS[4], ARGV[3], tonumber(ARGV[8]))
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
	n, err := s.enqueues.RunScript(ctx, enqueueScript,
		[]string{deliveryKeyIn(tag, id), dueKeyIn(tag, ch.TenantID), readyKeyIn(tag), busyKeyIn(tag, ch.TenantID)},
		id, ch.ID, ch.TenantID, eventID, string(body), int(deliveryTTL.Seconds()), flag, s.cfg.TenantSends).Int()
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

// claimScript takes, in a partition, the first due delivery of the
// tenant that is ready first, under a lease: its score in the tenant's
// due set moves to the lease's end, and that score is the lease token
// finishScript checks; the lease also counts in the tenant's busy set
// until then. First it moves up to 100 deliveries of the legacy due set
// (legacyDueKeyIn) into their tenants' due sets, keeping their scores.
// A delivery whose channel's breaker is open (breakerTimeouts) is not
// claimed but moved behind the breaker's end, in the order met (its
// until + a sequence number, in ms). The tenants' and channels' keys are
// named from ARGV in the script; they share the partition's slot. KEYS:
// ready set, legacy due set. ARGV: lease ms, sends in flight a tenant may
// have, the prefixes of due sets, busy sets, deliveries and breakers.
// Returns {id, token, tenant} or nil.
var claimScript = redis.NewScript(queueLua + `
local ready, lease, cap = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  local old = redis.call('ZRANGE', KEYS[2], 0, 99, 'WITHSCORES')
  for i = 1, #old, 2 do
    local tenant = redis.call('HGET', ARGV[5] .. old[i], 'tenant_id')
    if tenant then
      redis.call('ZADD', ARGV[3] .. tenant, 'NX', old[i + 1], old[i])
      reset(ready, ARGV[3] .. tenant, ARGV[4] .. tenant, tenant, cap)
    end
    redis.call('ZREM', KEYS[2], old[i])
  end
end
local skip = 0
for _ = 1, 8 do
  local first = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', skip, 1)
  if #first == 0 then return false end
  local tenant = first[1]
  local due, busy = ARGV[3] .. tenant, ARGV[4] .. tenant
  redis.call('ZREMRANGEBYSCORE', busy, '-inf', now)
  if redis.call('ZCARD', busy) < cap then
    for _ = 1, 32 do
      local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, 1)
      if #ids == 0 then break end
      local ch = redis.call('HGET', ARGV[5] .. ids[1], 'channel_id')
      local breaker = ARGV[6] .. (ch or '')
      local untl = tonumber(redis.call('HGET', breaker, 'until') or '0')
      if not ch or untl <= now then
        local token = now + lease
        redis.call('ZADD', due, token, ids[1])
        redis.call('ZADD', busy, token, ids[1])
        reset(ready, due, busy, tenant, cap)
        return {ids[1], tostring(token), tenant}
      end
      redis.call('ZADD', due, untl + redis.call('HINCRBY', breaker, 'seq', 1), ids[1])
    end
  end
  -- At its cap, its place stale (a script of before) or its due
  -- deliveries behind a breaker: set its place right, try the next
  -- (past it, if more of its deliveries are left to move).
  reset(ready, due, busy, tenant, cap)
  local at = redis.call('ZSCORE', ready, tenant)
  if at and tonumber(at) <= now then skip = skip + 1 end
end
return false
`)

// claim returns a due delivery and its lease token, or ok false. It tries
// the partitions' ready sets from a random one on, so notifiers spread
// over them and none is starved.
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

// claimIn is claim on the ready set of one partition.
func (s *Store) claimIn(ctx context.Context, tag string, lease time.Duration) (d delivery, token string, ok bool, err error) {
	res, err := claimScript.Run(ctx, s.rdb, []string{readyKeyIn(tag), legacyDueKeyIn(tag)}, lease.Milliseconds(),
		s.cfg.TenantSends, dueKeyPrefix(tag), busyKeyPrefix(tag), deliveryKeyIn(tag, ""), breakerKeyPrefix(tag)).StringSlice()
	if errors.Is(err, redis.Nil) {
		return delivery{}, "", false, nil
	}
	if err != nil {
		return delivery{}, "", false, fmt.Errorf("claim delivery: %w", err)
	}
	id, token, tenant := res[0], res[1], res[2]
	rec, err := s.rdb.HGetAll(ctx, deliveryKeyIn(tag, id)).Result()
	if err != nil {
		return delivery{}, "", false, fmt.Errorf("read delivery %s: %w", id, err)
	}
	d = delivery{ID: id, ChannelID: rec["channel_id"], TenantID: tenant, EventID: rec["event_id"],
		Status: rec["status"], Digest: rec["digest"] == "1"}
	d.Attempts, _ = strconv.Atoi(rec["attempts"])
	if len(rec) == 0 {
		// Expired record: nothing to send.
		return delivery{}, "", false, s.drop(ctx, d, token, "")
	}
	if err := json.Unmarshal([]byte(rec["messages"]), &d.Messages); err != nil || len(d.Messages) == 0 {
		// Retrying cannot fix it, and its lease would hold its tenant's
		// turn: it gives up, saying why in its record.
		return delivery{}, "", false, errors.Join(fmt.Errorf("decode delivery %s: %w", id, err), s.drop(ctx, d, token, "undecodable delivery record"))
	}
	return d, token, true, nil
}

// dropScript takes a claimed delivery out of the queue without an
// attempt, if the lease is still the caller's; a record left is marked
// failed, with the reason. KEYS: the tenant's due set, the partition's
// ready set, the tenant's busy set, the delivery. ARGV: id, lease token,
// tenant, sends in flight a tenant may have, reason.
var dropScript = redis.NewScript(queueLua + `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'status', 'failed', 'last_class', 'other', 'last_error', ARGV[5])
end
reset(KEYS[2], KEYS[1], KEYS[3], ARGV[3], tonumber(ARGV[4]))
return 1
`)

// drop runs dropScript on d, claimed with token.
func (s *Store) drop(ctx context.Context, d delivery, token, reason string) error {
	tag := events.TenantTag(d.TenantID)
	err := dropScript.Run(ctx, s.rdb, []string{dueKeyIn(tag, d.TenantID), readyKeyIn(tag), busyKeyIn(tag, d.TenantID),
		deliveryKeyIn(tag, d.ID)}, d.ID, token, d.TenantID, s.cfg.TenantSends, reason).Err()
	if err != nil {
		return fmt.Errorf("drop delivery %s: %w", d.ID, err)
	}
	return nil
}

// finishScript records an attempt if the lease is still the caller's,
// frees the tenant's send in flight, and counts the channel's timeouts in
// a row: at breakerTimeouts its breaker opens until this delivery's retry
// (the probe) falls due; a send that does not time out closes it. KEYS
// (one slot, the tenant's): the tenant's due set, delivery, attempts list,
// the tenant's event stream, the partition's ready set, the tenant's busy
// set, the channel's breaker. ARGV: 1 id, 2 lease token, 3 status, 4 retry
// delay ms, 5 attempts, 6 attempt JSON, 7 attempts kept (0: do not list),
// 8 maxlen, 9 error class, 10 error, 11 tenant, 12 sends in flight a
// tenant may have, 13 timeouts that open the breaker, 14 number of fields
// of the attempted event, its fields, then the failed event's fields if
// any.
var finishScript = redis.NewScript(queueLua + `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == 'retrying' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[9] == 'timeout' then -- ClassTimeout
  local n = redis.call('HINCRBY', KEYS[7], 'timeouts', 1)
  if n >= tonumber(ARGV[13]) and ARGV[3] == 'retrying' then
    redis.call('HSET', KEYS[7], 'until', now + tonumber(ARGV[4]), 'seq', 0)
  end
  redis.call('PEXPIRE', KEYS[7], tonumber(ARGV[4]) + 3600000)
else
  redis.call('DEL', KEYS[7])
end
reset(KEYS[5], KEYS[1], KEYS[6], ARGV[11], tonumber(ARGV[12]))
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'attempts', ARGV[5], 'last_class', ARGV[9], 'last_error', ARGV[10])
local kept = tonumber(ARGV[7])
if kept > 0 then
  redis.call('LPUSH', KEYS[3], ARGV[6])
  redis.call('LTRIM', KEYS[3], 0, kept - 1)
end
local na = tonumber(ARGV[14])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', unpack(ARGV, 15, 14 + na))
if #ARGV > 14 + na then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', unpack(ARGV, 15 + na))
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
		a.ErrorClass, a.Error, d.TenantID, s.cfg.TenantSends, breakerTimeouts, len(fields)}
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
	tag := events.TenantTag(d.TenantID)
	n, err := finishScript.Run(ctx, s.rdb,
		[]string{dueKeyIn(tag, d.TenantID), deliveryKeyIn(tag, d.ID), channels.AttemptsKey(d.TenantID, d.ChannelID),
			events.EventStream(d.TenantID), readyKeyIn(tag), busyKeyIn(tag, d.TenantID), breakerKeyIn(tag, d.ChannelID)}, args...).Int()
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

// depthScript counts the deliveries queued in a partition: those of the
// tenants in its ready set, and those a notifier of before left in the
// legacy due set. KEYS: ready set, legacy due set. ARGV: due sets' prefix.
var depthScript = redis.NewScript(`
local n = redis.call('ZCARD', KEYS[2])
for _, tenant in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('ZCARD', ARGV[1] .. tenant)
end
return n
`)

// Depth returns how many deliveries wait in the queue (due now or later,
// retries included), over every partition.
func (s *Store) Depth(ctx context.Context) (int64, error) {
	pipe := s.rdb.Pipeline()
	tags := events.TenantTags()
	cmds := make([]*redis.Cmd, len(tags))
	for i, tag := range tags {
		cmds[i] = depthScript.Eval(ctx, pipe, []string{readyKeyIn(tag), legacyDueKeyIn(tag)}, dueKeyPrefix(tag))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("queue depth: %w", err)
	}
	var n int64
	for _, c := range cmds {
		v, _ := c.Int64()
		n += v
	}
	return n, nil
}
