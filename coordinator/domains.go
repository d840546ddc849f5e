package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// tombstoneTTL is how long a removed domain's tombstone is kept: an
// older event of the domain redelivered within it (a pending event claimed
// from a stopped coordinator) is a no-op; one later than that would add
// the domain again.
const tombstoneTTL = 7 * 24 * time.Hour

// applyDomainScript applies one domain event to a shard atomically.
// Events are applied only when not older than the last event applied to the
// domain (the version of its value or tombstone), so a redelivered or
// reordered event is a no-op. A new or re-activated domain is due now
// (ZADD NX), a known one keeps its due time, so redelivering domain.added
// never resets the schedule (a domain of a bulk import is due at its
// event's first_scan_delay_ms after the event instead of now, which
// spreads an import's first scans); a renamed one (another host or port in
// its record) is due now, since what the views hold was seen for the old
// name.
//
// A domain not written since the buckets came (migrate.go) is read from
// the keys of the layout before, and moved. A domain left scheduled
// lowers its bucket's score in the due index to its due time.
//
// KEYS: domains bucket, schedule bucket, removed, then the legacy domains,
// schedule and versions, then the due index. ARGV: op ("put" | "remove"),
// domain id as Member, record (encodeRecord), version (unix ms), due
// (unix ms: now, or later for a delayed first scan), active ("1" | "0"),
// record as legacy JSON, domain id as text (the legacy keys' field and
// member), bucket.
var applyDomainScript = redis.NewScript(`
local id, version, tid = ARGV[2], tonumber(ARGV[4]), ARGV[8]
local last, prev
local cur = redis.call('HGET', KEYS[1], id)
if cur then
  last = tonumber(string.match(cur, '^%d+'))
  prev = string.match(cur, '^%d+|(.*)$')
else
  last = tonumber(redis.call('HGET', KEYS[6], tid))
  local old = redis.call('HGET', KEYS[4], tid)
  if old then prev = (old == ARGV[7]) and ARGV[3] or old end
end
if last and last > version then return 0 end
if not cur then
  local due = redis.call('ZSCORE', KEYS[5], tid)
  if due then redis.call('ZADD', KEYS[2], due, id) end
  redis.call('HDEL', KEYS[4], tid)
  redis.call('ZREM', KEYS[5], tid)
  redis.call('HDEL', KEYS[6], tid)
end
if ARGV[1] == 'remove' then
  redis.call('HSET', KEYS[1], id, ARGV[4])
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], ARGV[4], id)
  return 1
end
redis.call('HSET', KEYS[1], id, ARGV[4] .. '|' .. ARGV[3])
redis.call('ZREM', KEYS[3], id)
if ARGV[6] == '1' then
  if prev and prev ~= ARGV[3] then
    redis.call('ZADD', KEYS[2], ARGV[5], id)
  else
    redis.call('ZADD', KEYS[2], 'NX', ARGV[5], id)
  end
  redis.call('ZADD', KEYS[7], 'LT', redis.call('ZSCORE', KEYS[2], id), ARGV[9])
else
  redis.call('ZREM', KEYS[2], id)
end
return 1
`)

// applyEvent is the handler of the events stream. Events other than domain
// events are not the coordinator's business and are acknowledged.
func (c *Coordinator) applyEvent(ctx context.Context, e events.Envelope) error {
	var (
		op, domainID string
		rec          domainRecord
		active       = true
		due          = nowMS()
	)
	switch e.Name {
	case events.DomainAdded:
		var p events.DomainAddedV1
		if err := e.Decode(&p); err != nil {
			return malformed(e, err)
		}
		op, domainID, rec = "put", p.DomainID, domainRecord{TenantID: e.TenantID, Host: p.Host, Port: p.Port}
		due = firstDue(e.OccurredAt.UnixMilli(), p.FirstScanDelayMS, due)
	case events.DomainUpdated:
		var p events.DomainUpdatedV1
		if err := e.Decode(&p); err != nil {
			return malformed(e, err)
		}
		op, domainID, rec, active = "put", p.DomainID, domainRecord{TenantID: e.TenantID, Host: p.Host, Port: p.Port}, p.Active
	case events.DomainCheckRequested:
		var p events.DomainCheckRequestedV1
		if err := e.Decode(&p); err != nil {
			return malformed(e, err)
		}
		return c.checkNow(ctx, e, p.DomainID)
	case events.RegistrationLookedUp:
		return c.applyRegistrationResult(ctx, e)
	case events.DomainRemoved:
		var p events.DomainRemovedV1
		if err := e.Decode(&p); err != nil {
			return malformed(e, err)
		}
		op, domainID = "remove", p.DomainID
	default:
		return nil
	}
	if domainID == "" {
		domainID = e.AggregateID
	}
	if domainID == "" || (op == "put" && rec.Host == "") {
		return malformed(e, fmt.Errorf("missing domain id or host"))
	}
	if op == "put" && rec.Port == 0 {
		rec.Port = 443
	}
	var body, legacy string
	if op == "put" {
		var err error
		if body, err = encodeRecord(rec); err != nil {
			return malformed(e, err)
		}
		js, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("marshal domain record: %w", err)
		}
		legacy = string(js)
	}
	m, err := Member(domainID)
	if err != nil {
		return malformed(e, err)
	}
	n, b := ShardOf(domainID, c.cfg.Shards), bucketOf(domainID)
	activeArg := "0"
	if active {
		activeArg = "1"
	}
	keys := []string{domainsKey(n, b), scheduleKey(n, b), removedKey(n),
		legacyDomainsKey(n), legacyScheduleKey(n), legacyVersionsKey(n), dueKey(n)}
	applied, err := applyDomainScript.Run(ctx, c.rdb, keys,
		op, m, body, e.OccurredAt.UnixMilli(), due, activeArg, legacy, domainID, b).Int()
	if err != nil {
		return fmt.Errorf("apply %s %s to shard %d: %w", e.Name, domainID, n, err)
	}
	c.logger.Debug("domain event",
		zap.String("event", e.Name), zap.String("domain_id", domainID),
		zap.Int("shard", n), zap.Bool("applied", applied == 1))
	host := rec.Host
	if !active {
		host = ""
	}
	return c.applyRegistrationRef(ctx, e, domainID, host)
}

// firstDue is when a new domain's first scan is due: its event's time
// plus the event's delay, never before now. The delay counts from the
// event, not from when the coordinator reads it, so a coordinator catching
// up on a backlog keeps an import's spread (whatever of it is still ahead).
func firstDue(occurredMS, delayMS, nowMS int64) int64 {
	if delayMS <= 0 {
		return nowMS
	}
	return max(nowMS, occurredMS+delayMS)
}

// malformed marks a domain event no retry can apply: the consumer
// dead-letters it (stream.Permanent), where an operator sees it, instead of
// dropping it.
func malformed(e events.Envelope, err error) error {
	return stream.Permanent(fmt.Errorf("malformed %s event %s: %w", e.Name, e.EventID, err))

}

// checkNowScript makes a scheduled domain due now. A domain already due
// earlier keeps its due time (and so its job id); one not in the schedule
// (unknown, removed, inactive, or added but not applied yet, whose first
// scan is due at once anyway) is left alone. The bucket's score in the
// due index is lowered to now with it.
//
// KEYS: schedule, due index. ARGV: domain id (Member), now (unix ms),
// bucket. Returns 1 when scheduled.
var checkNowScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', 'LT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 'LT', ARGV[2], ARGV[3])
return 1
`)

// checkNow applies domain.check_requested: the shard holding the domain
// dispatches it on its next tick.
func (c *Coordinator) checkNow(ctx context.Context, e events.Envelope, domainID string) error {
	if domainID == "" {
		domainID = e.AggregateID
	}
	if domainID == "" {
		return malformed(e, fmt.Errorf("missing domain id"))
	}
	m, err := Member(domainID)
	if err != nil {
		return malformed(e, err)
	}
	n := ShardOf(domainID, c.cfg.Shards)
	_, schedule := DomainKeys(domainID, c.cfg.Shards)
	scheduled, err := checkNowScript.Run(ctx, c.rdb, []string{schedule, dueKey(n)}, m, nowMS(), bucketOf(domainID)).Int()
	if err != nil {
		return fmt.Errorf("apply %s %s to shard %d: %w", e.Name, domainID, n, err)
	}
	c.logger.Debug("domain event",
		zap.String("event", e.Name), zap.String("domain_id", domainID),
		zap.Int("shard", n), zap.Bool("applied", scheduled == 1))
	return c.checkRegistrationNow(ctx, domainID)
}

// sweepScript drops the tombstones removed at or before a cutoff, unless
// the domain came back or was removed again meanwhile.
//
// KEYS: removed, then per domain its domains bucket. ARGV: cutoff (unix
// ms), then the domain ids as kept (Member), in the order of their
// buckets (ARGV[i] is in KEYS[i]). Returns those of the tombstones
// dropped.
var sweepScript = redis.NewScript(`
local cutoff, dropped = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local v = redis.call('ZSCORE', KEYS[1], id)
  if v and tonumber(v) <= cutoff then
    redis.call('ZREM', KEYS[1], id)
    local cur = redis.call('HGET', KEYS[i], id)
    if cur and not string.find(cur, '|', 1, true) and tonumber(cur) <= cutoff then
      redis.call('HDEL', KEYS[i], id)
      dropped[#dropped+1] = id
    end
  end
end
return dropped
`)

// regSweepScript drops the registration references of removed domains
// (an empty registrable) whose version is at or before a cutoff: those
// whose shard tombstone was dropped.
//
// KEYS: per domain its reg:domains bucket. ARGV: cutoff (unix ms), then
// the domain ids as kept (Member; ARGV[i+1] is in KEYS[i]).
var regSweepScript = redis.NewScript(`
for i, key in ipairs(KEYS) do
  local cur = redis.call('HGET', key, ARGV[i+1])
  local v = cur and string.match(cur, '^(%d+) $')
  if v and tonumber(v) <= tonumber(ARGV[1]) then redis.call('HDEL', key, ARGV[i+1]) end
end
return 0
`)

// sweepTombstones drops the tombstones of shard n removed at or before
// cutoffMS, with their registration references, batchSize at a time.
func (c *Coordinator) sweepTombstones(ctx context.Context, n int, cutoffMS int64) error {
	for {
		ms, err := c.rdb.ZRangeByScore(ctx, removedKey(n), &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(cutoffMS, 10), Count: batchSize,
		}).Result()
		if err != nil || len(ms) == 0 {
			return err
		}
		keys := []string{removedKey(n)}
		args := []any{cutoffMS}
		for _, m := range ms {
			keys = append(keys, domainsKey(n, bucketOf(IDOf(m))))
			args = append(args, m)
		}
		dropped, err := sweepScript.Run(ctx, c.rdb, keys, args...).StringSlice()
		if err != nil {
			return err
		}
		if len(dropped) > 0 {
			keys, args := keys[:0], args[:1]
			for _, m := range dropped {
				keys = append(keys, regDomainsKey(IDOf(m)))
				args = append(args, m)
			}
			if err := regSweepScript.Run(ctx, c.rdb, keys, args...).Err(); err != nil {
				return err
			}
		}
		c.logger.Debug("tombstones dropped", zap.Int("shard", n), zap.Int("tombstones", len(dropped)))
		if len(ms) < batchSize {
			return nil
		}
	}
}
