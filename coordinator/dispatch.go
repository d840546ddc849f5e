package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// errLeaseLost means the shard's lease no longer carries our token.
var errLeaseLost = errors.New("lease lost")

// dispatchScript appends the jobs of one batch of due domains of a shard and
// reschedules them, all or nothing per domain:
//   - nothing happens unless the lease still holds our token (fencing: a
//     coordinator that lost its lease while paused cannot dispatch);
//   - a domain is skipped unless its due time and its record are still the
//     ones the batch was built from (another event or coordinator changed it
//     in between; the next tick sees the new state);
//   - a domain without a record (removed) is dropped from the schedule.
//
// KEYS: lease, schedule, domains, jobs. ARGV: token, maxlen, then per domain:
// id, due, record ("" = none), next due, field count, fields and values of
// the stream entry. Returns {dispatched, dropped}, or -1 without the lease.
var dispatchScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local dispatched, dropped = 0, 0
local i = 3
while i <= #ARGV do
  local id, due, rec, nxt, nf = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4])
  local fields = {}
  for j = 1, 2 * nf do fields[j] = ARGV[i+4+j] end
  i = i + 5 + 2 * nf
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) == tonumber(due) then
    local cur = redis.call('HGET', KEYS[3], id)
    if not cur then
      if rec == '' then
        redis.call('ZREM', KEYS[2], id)
        dropped = dropped + 1
      end
    elseif cur == rec and nf > 0 then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
      redis.call('ZADD', KEYS[2], 'XX', nxt, id)
      dispatched = dispatched + 1
    end
  end
end
return {dispatched, dropped}
`)

// nextDue is the due time after a job for due was dispatched at now. It is
// due+interval, unless that has passed already (the coordinators were down
// longer than an interval): then it is the first due+k*interval after now.
// So an overdue domain gets exactly one catch-up job, not one per missed
// interval, and keeps its phase: domains stay spread over the interval as
// they were added instead of bunching up at the moment the fleet came back.
func nextDue(due, now int64, interval time.Duration) int64 {
	iv := interval.Milliseconds()
	next := due + iv
	if next <= now {
		next = due + ((now-due)/iv+1)*iv
	}
	return next
}

// dispatch dispatches the due domains of every held shard, and the due
// registration lookups while holding their lease.
func (c *Coordinator) dispatch(ctx context.Context) {
	if _, err := c.dispatchRegistrations(ctx); err != nil {
		if errors.Is(err, errLeaseLost) {
			c.logger.Warn("registration lease lost")
		} else {
			c.logger.Warn("dispatch of registration lookups failed, will retry next tick", zap.Error(err))
		}
	}
	for _, n := range c.HeldShards() {
		if ctx.Err() != nil {
			return
		}
		if !c.isHeld(n) {
			continue
		}
		if _, err := c.dispatchShard(ctx, n); err != nil {
			if errors.Is(err, errLeaseLost) {
				c.logger.Warn("lease lost, shard dropped", zap.Int("shard", n))
				continue
			}
			c.logger.Warn("dispatch failed, will retry next tick", zap.Int("shard", n), zap.Error(err))
		}
	}
}

// dispatchShard moves every domain of shard n that is due to the shard's job
// stream, batchSize at a time, and returns how many jobs it appended.
func (c *Coordinator) dispatchShard(ctx context.Context, n int) (int, error) {
	total := 0
	for {
		now := nowMS()
		due, err := c.rdb.ZRangeByScoreWithScores(ctx, ScheduleKey(n), &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now, 10), Count: batchSize,
		}).Result()
		if err != nil {
			return total, fmt.Errorf("read due domains of shard %d: %w", n, err)
		}
		if len(due) == 0 {
			break
		}
		args, err := c.batchArgs(ctx, n, due, now)
		if err != nil {
			return total, err
		}
		keys := []string{LeaseKey(n), ScheduleKey(n), DomainsKey(n), events.JobStream(n)}
		res, err := dispatchScript.Run(ctx, c.rdb, keys, args...).Result()
		if err != nil {
			return total, fmt.Errorf("dispatch shard %d: %w", n, err)
		}
		if code, ok := res.(int64); ok && code == -1 {
			// Not an error when the lease loop released the shard while
			// this tick was running.
			if !c.isHeld(n) {
				return total, nil
			}
			c.setHeld(n, false)
			return total, errLeaseLost
		}
		counts, ok := res.([]any)
		if !ok || len(counts) != 2 {
			return total, fmt.Errorf("dispatch shard %d: unexpected script result %v", n, res)
		}
		dispatched, _ := counts[0].(int64)
		dropped, _ := counts[1].(int64)
		total += int(dispatched)
		jobsDispatched.Add(float64(dispatched))
		c.logger.Debug("dispatched", zap.Int("shard", n), zap.Int64("jobs", dispatched), zap.Int64("dropped", dropped))
		// A short batch was the last one. A batch where nothing moved was
		// changed under us; the next tick retries rather than spinning.
		if len(due) < batchSize || dispatched+dropped == 0 {
			break
		}
	}
	backlog, err := c.rdb.ZCount(ctx, ScheduleKey(n), "-inf", strconv.FormatInt(nowMS(), 10)).Result()
	if err == nil {
		dueDomains.WithLabelValues(shardLabel(n)).Set(float64(backlog))
	}
	return total, nil
}

// batchArgs builds the script arguments for a batch of due domains: the jobs
// are built here, in Go, from the records read now; the script checks the
// records did not change before it appends them.
func (c *Coordinator) batchArgs(ctx context.Context, n int, due []redis.Z, now int64) ([]any, error) {
	ids := make([]string, len(due))
	for i, z := range due {
		ids[i] = z.Member.(string)
	}
	recs, err := c.rdb.HMGet(ctx, DomainsKey(n), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("read domains of shard %d: %w", n, err)
	}
	args := make([]any, 0, 2+len(due)*9)
	args = append(args, c.token, jobsMaxLen)
	for i, z := range due {
		id, dueMS := ids[i], int64(z.Score)
		raw, _ := recs[i].(string)
		var fields []any
		if raw != "" {
			fields, err = jobFields(id, raw, dueMS)
			if err != nil {
				// A record we cannot read would fail forever: leave the
				// domain due (visible in due_domains) rather than block
				// the rest of the shard.
				c.logger.Error("cannot build job", zap.String("domain_id", id), zap.Error(err))
				continue
			}
		}
		args = append(args, id, dueMS, raw, nextDue(dueMS, now, c.cfg.Interval), len(fields)/2)
		args = append(args, fields...)
	}
	return args, nil
}

// jobFields returns the stream entry fields of the scan job for the domain
// id with record raw that fell due at dueMS.
func jobFields(id, raw string, dueMS int64) ([]any, error) {
	var rec domainRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return nil, fmt.Errorf("decode domain record: %w", err)
	}
	jobID := events.JobID(id, dueMS)
	env, err := events.NewWithID(jobID, events.ScanRequested, rec.TenantID, id, events.ScanRequestedV1{
		JobID:       jobID,
		DomainID:    id,
		Host:        rec.Host,
		Port:        rec.Port,
		ScheduledAt: time.UnixMilli(dueMS).UTC(),
	})
	if err != nil {
		return nil, err
	}
	return env.StreamFields()
}
