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
// lowers its bucket's score in the due index to its due time. The bucket
// is found in the script, down the split ones (bucketLua).
//
// KEYS: split set, removed, then the legacy domains, schedule and
// versions, then the due index. ARGV: op ("put" | "remove"), domain id as
// Member, record (encodeRecord), version (unix ms), due (unix ms: now, or
// later for a delayed first scan), active ("1" | "0"), record as legacy
// JSON, domain id as text (the legacy keys' field and member), bucket
// hash, domains and schedule prefixes (shardSet). Returns {applied
// (1 | 0), bucket, the bucket's entries}.
var applyDomainScript = redis.NewScript(bucketLua + `
local id, version, tid = ARGV[2], tonumber(ARGV[4]), ARGV[8]
local b = bucket_of(KEYS[1], tonumber(ARGV[9]), ` + strconv.Itoa(bucketsPerShard) + `)
local dk, sk = ARGV[10] .. b, ARGV[11] .. b
local last, prev
local cur = redis.call('HGET', dk, id)
if cur then
  last = tonumber(string.match(cur, '^%d+'))
  prev = string.match(cur, '^%d+|(.*)$')
else
  last = tonumber(redis.call('HGET', KEYS[5], tid))
  local old = redis.call('HGET', KEYS[3], tid)
  if old then prev = (old == ARGV[7]) and ARGV[3] or old end
end
if last and last > version then return {0, b, redis.call('HLEN', dk)} end
if not cur then
  local due = redis.call('ZSCORE', KEYS[4], tid)
  if due then redis.call('ZADD', sk, due, id) end
  redis.call('HDEL', KEYS[3], tid)
  redis.call('ZREM', KEYS[4], tid)
  redis.call('HDEL', KEYS[5], tid)
end
if ARGV[1] == 'remove' then
  redis.call('HSET', dk, id, ARGV[4])
  redis.call('ZREM', sk, id)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  return {1, b, redis.call('HLEN', dk)}
end
redis.call('HSET', dk, id, ARGV[4] .. '|' .. ARGV[3])
redis.call('ZREM', KEYS[2], id)
if ARGV[6] == '1' then
  if prev and prev ~= ARGV[3] then
    redis.call('ZADD', sk, ARGV[5], id)
  else
    redis.call('ZADD', sk, 'NX', ARGV[5], id)
  end
  redis.call('ZADD', KEYS[6], 'LT', redis.call('ZSCORE', sk, id), b)
else
  redis.call('ZREM', sk, id)
end
return {1, b, redis.call('HLEN', dk)}
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
	n := ShardOf(domainID, c.cfg.Shards)
	activeArg := "0"
	if active {
		activeArg = "1"
	}
	s := shardSet(n)
	keys := []string{s.split, removedKey(n),
		legacyDomainsKey(n), legacyScheduleKey(n), legacyVersionsKey(n), dueKey(n)}
	res, err := applyDomainScript.Run(ctx, c.rdb, keys,
		op, m, body, e.OccurredAt.UnixMilli(), due, activeArg, legacy, domainID, bucketHash(domainID), s.hash, s.zset).Int64Slice()
	if err != nil || len(res) != 3 {
		return fmt.Errorf("apply %s %s to shard %d: %w (%v)", e.Name, domainID, n, err, res)
	}
	c.logger.Debug("domain event",
		zap.String("event", e.Name), zap.String("domain_id", domainID),
		zap.Int("shard", n), zap.Bool("applied", res[0] == 1))
	c.growIfFull(ctx, s, res[1], res[2])
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
// KEYS: split set, due index. ARGV: domain id (Member), now (unix ms),
// bucket hash, schedule prefix. Returns 1 when scheduled.
var checkNowScript = redis.NewScript(bucketLua + `
local b = bucket_of(KEYS[1], tonumber(ARGV[3]), ` + strconv.Itoa(bucketsPerShard) + `)
local sk = ARGV[4] .. b
if not redis.call('ZSCORE', sk, ARGV[1]) then return 0 end
redis.call('ZADD', sk, 'XX', 'LT', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 'LT', ARGV[2], b)
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
	s := shardSet(n)
	scheduled, err := checkNowScript.Run(ctx, c.rdb, []string{s.split, dueKey(n)}, m, nowMS(), bucketHash(domainID), s.zset).Int()
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
// KEYS: removed, split set. ARGV: cutoff (unix ms), domains prefix, then
// per domain its id as kept (Member) and its bucket hash. Returns those
// of the tombstones dropped.
var sweepScript = redis.NewScript(bucketLua + `
local cutoff, dropped = tonumber(ARGV[1]), {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local v = redis.call('ZSCORE', KEYS[1], id)
  if v and tonumber(v) <= cutoff then
    redis.call('ZREM', KEYS[1], id)
    local dk = ARGV[2] .. bucket_of(KEYS[2], tonumber(ARGV[i+1]), ` + strconv.Itoa(bucketsPerShard) + `)
    local cur = redis.call('HGET', dk, id)
    if cur and not string.find(cur, '|', 1, true) and tonumber(cur) <= cutoff then
      redis.call('HDEL', dk, id)
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
// KEYS: the split set of reg:domains. ARGV: cutoff (unix ms), the
// buckets' prefix, then per domain its id as kept (Member) and its bucket
// hash.
var regSweepScript = redis.NewScript(bucketLua + `
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. bucket_of(KEYS[1], tonumber(ARGV[i+1]), ` + strconv.Itoa(regBuckets) + `)
  local cur = redis.call('HGET', key, ARGV[i])
  local v = cur and string.match(cur, '^(%d+) $')
  if v and tonumber(v) <= tonumber(ARGV[1]) then redis.call('HDEL', key, ARGV[i]) end
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
		s := shardSet(n)
		args := []any{cutoffMS, s.hash}
		for _, m := range ms {
			args = append(args, m, bucketHash(IDOf(m)))
		}
		dropped, err := sweepScript.Run(ctx, c.rdb, []string{removedKey(n), s.split}, args...).StringSlice()
		if err != nil {
			return err
		}
		if len(dropped) > 0 {
			args := []any{cutoffMS, regSet.hash}
			for _, m := range dropped {
				args = append(args, m, bucketHash(IDOf(m)))
			}
			if err := regSweepScript.Run(ctx, c.rdb, []string{regSet.split}, args...).Err(); err != nil {
				return err
			}
		}
		c.logger.Debug("tombstones dropped", zap.Int("shard", n), zap.Int("tombstones", len(dropped)))
		if len(ms) < batchSize {
			return nil
		}
	}
}
