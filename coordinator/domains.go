package coordinator

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// domainRecord is the value of a domain in domains:{NN}: what a job needs
// besides the domain id.
type domainRecord struct {
	TenantID string `json:"tenant_id"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
}

// applyDomainScript applies one domain event to a shard atomically.
// Events are applied only when not older than the last event applied to the
// domain (versions:{NN}), so a redelivered or reordered event is a no-op. A
// new or re-activated domain is due now (ZADD NX), a known one keeps its due
// time, so redelivering domain.added never resets the schedule (a domain
// of a bulk import is due at its event's first_scan_delay_ms after the
// event instead of now, which spreads an import's first scans); a renamed
// one (another host or port in its record) is due now, since what the views
// hold was seen for the old name.
//
// KEYS: domains, schedule, versions. ARGV: op ("put" | "remove"), domain id,
// record JSON, version (unix ms), due (unix ms: now, or later for a
// delayed first scan), active ("1" | "0").
var applyDomainScript = redis.NewScript(`
local id, version = ARGV[2], tonumber(ARGV[4])
local last = redis.call('HGET', KEYS[3], id)
if last and tonumber(last) > version then return 0 end
redis.call('HSET', KEYS[3], id, ARGV[4])
if ARGV[1] == 'remove' then
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  return 1
end
local prev = redis.call('HGET', KEYS[1], id)
redis.call('HSET', KEYS[1], id, ARGV[3])
if ARGV[6] == '1' then
  if prev and prev ~= ARGV[3] then
    redis.call('ZADD', KEYS[2], ARGV[5], id)
  else
    redis.call('ZADD', KEYS[2], 'NX', ARGV[5], id)
  end
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
	body, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("marshal domain record: %w", err)
	}
	n := ShardOf(domainID, c.cfg.Shards)
	activeArg := "0"
	if active {
		activeArg = "1"
	}
	keys := []string{DomainsKey(n), ScheduleKey(n), versionsKey(n)}
	applied, err := applyDomainScript.Run(ctx, c.rdb, keys,
		op, domainID, string(body), e.OccurredAt.UnixMilli(), due, activeArg).Int()
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
// scan is due at once anyway) is left alone.
//
// KEYS: schedule. ARGV: domain id, now (unix ms). Returns 1 when scheduled.
var checkNowScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', 'LT', ARGV[2], ARGV[1])
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
	n := ShardOf(domainID, c.cfg.Shards)
	scheduled, err := checkNowScript.Run(ctx, c.rdb, []string{ScheduleKey(n)}, domainID, nowMS()).Int()
	if err != nil {
		return fmt.Errorf("apply %s %s to shard %d: %w", e.Name, domainID, n, err)
	}
	c.logger.Debug("domain event",
		zap.String("event", e.Name), zap.String("domain_id", domainID),
		zap.Int("shard", n), zap.Bool("applied", scheduled == 1))
	return c.checkRegistrationNow(ctx, domainID)
}
