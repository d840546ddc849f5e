package coordinator

import (
	"context"
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

// dispatchScript appends the jobs of one batch of due domains of a bucket
// and reschedules them, all or nothing per domain:
//   - nothing happens unless the lease still holds our token (fencing: a
//     coordinator that lost its lease while paused cannot dispatch);
//   - a domain is skipped unless its due time and its value are still the
//     ones the batch was built from (another event or coordinator changed
//     it in between; the next tick sees the new state);
//   - a domain without a record (removed) is dropped from the schedule.
//
// Then it sets the bucket's score in the due index to the bucket's
// earliest due time, or drops the bucket from the index when it is empty:
// the batch may be empty, to correct a score that was too early.
//
// KEYS: lease, schedule bucket, domains bucket, jobs, due index. ARGV:
// token, maxlen, bucket, then per domain: id as kept (Member), due, value
// ("" = no record), next due, field count, fields and values of the
// stream entry. Returns {dispatched, dropped}, or -1 without the lease.
var dispatchScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local dispatched, dropped = 0, 0
local i = 4
while i <= #ARGV do
  local id, due, rec, nxt, nf = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4])
  local fields = {}
  for j = 1, 2 * nf do fields[j] = ARGV[i+4+j] end
  i = i + 5 + 2 * nf
  local score = redis.call('ZSCORE', KEYS[2], id)
  if score and tonumber(score) == tonumber(due) then
    local cur = redis.call('HGET', KEYS[3], id)
    if not cur or not string.find(cur, '|', 1, true) then
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
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  redis.call('ZADD', KEYS[5], first[2], ARGV[3])
else
  redis.call('ZREM', KEYS[5], ARGV[3])
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

// dueBucketsPerRound is how many buckets of a shard one round of
// dispatch reads and dispatches from (three round trips).
const dueBucketsPerRound = 256

// dispatchShard moves every domain of shard n that is due to the shard's
// job stream and returns how many jobs it appended. It reads only the
// buckets the due index lists as due, dueBucketsPerRound at a time and
// batchSize domains at a time per bucket; each round takes three round
// trips: the buckets' due domains, their records, the scripts.
func (c *Coordinator) dispatchShard(ctx context.Context, n int) (int, error) {
	total := 0
	left := map[int]int{} // per bucket read, due and not moved
	buckets, err := c.dueBuckets(ctx, n, nowMS())
	for err == nil && len(buckets) > 0 {
		round := buckets[:min(len(buckets), dueBucketsPerRound)]
		buckets = buckets[len(round):]
		var due [][]redis.Z
		if due, err = c.dueDomains(ctx, n, round, nowMS()); err != nil {
			break
		}
		var moved [][2]int
		if moved, err = c.dispatchBuckets(ctx, n, round, due); err != nil {
			break
		}
		for i, b := range round {
			dispatched, dropped := moved[i][0], moved[i][1]
			total += dispatched
			left[b] = len(due[i]) - dispatched - dropped
			// A full batch may have a next one. A batch where nothing
			// moved was changed under us; the next tick retries rather
			// than spinning.
			if len(due[i]) == batchSize && dispatched+dropped > 0 {
				buckets = append(buckets, b)
			}
		}
	}
	if err != nil {
		return total, err
	}
	var backlog int
	for _, k := range left {
		backlog += k
	}
	dueDomains.WithLabelValues(shardLabel(n)).Set(float64(backlog))
	if err := c.sweepTombstones(ctx, n, nowMS()-tombstoneTTL.Milliseconds()); err != nil {
		c.logger.Warn("sweep of tombstones failed, will retry next tick", zap.Int("shard", n), zap.Error(err))
	}
	return total, nil
}

// dueBuckets reads the buckets of shard n the due index lists as due at
// now, earliest first.
func (c *Coordinator) dueBuckets(ctx context.Context, n int, now int64) ([]int, error) {
	ms, err := c.rdb.ZRangeByScore(ctx, dueKey(n), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now, 10),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read due buckets of shard %d: %w", n, err)
	}
	out := make([]int, 0, len(ms))
	for _, m := range ms {
		b, err := strconv.Atoi(m)
		if err != nil || !validBucket(bucketsPerShard, b) {
			// Not one of ours: nothing to dispatch from it.
			c.logger.Warn("unknown bucket in the due index", zap.Int("shard", n), zap.String("bucket", m))
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// dueDomains reads the first batch of due domains of each bucket of
// shard n in buckets.
func (c *Coordinator) dueDomains(ctx context.Context, n int, buckets []int, now int64) ([][]redis.Z, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(buckets))
	for i, b := range buckets {
		cmds[i] = pipe.ZRangeByScoreWithScores(ctx, scheduleKey(n, b), &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now, 10), Count: batchSize,
		})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read due domains of shard %d: %w", n, err)
	}
	out := make([][]redis.Z, len(buckets))
	for i, cmd := range cmds {
		out[i] = cmd.Val()
	}
	return out, nil
}

// dispatchBuckets dispatches the due domains due[i] of each bucket
// buckets[i] of shard n and returns, per bucket, how many it dispatched
// and dropped. A bucket with none due still runs the script, which
// corrects its score in the due index.
func (c *Coordinator) dispatchBuckets(ctx context.Context, n int, buckets []int, due [][]redis.Z) ([][2]int, error) {
	ms := make([][]string, len(due))
	vals := make([]*redis.SliceCmd, len(due))
	pipe := c.rdb.Pipeline()
	reads := 0
	for i, zs := range due {
		if len(zs) == 0 {
			continue
		}
		ms[i] = make([]string, len(zs))
		for j, z := range zs {
			ms[i][j] = z.Member.(string)
		}
		vals[i] = pipe.HMGet(ctx, domainsKey(n, buckets[i]), ms[i]...)
		reads++
	}
	if reads > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read domains of shard %d: %w", n, err)
		}
	}
	now := nowMS()
	runs := make([]*redis.Cmd, len(due))
	for i, b := range buckets {
		var vs []any
		if vals[i] != nil {
			vs = vals[i].Val()
		}
		args := c.batchArgs(b, ms[i], due[i], vs, now)
		keys := []string{LeaseKey(n), scheduleKey(n, b), domainsKey(n, b), events.JobStream(n), dueKey(n)}
		runs[i] = dispatchScript.Eval(ctx, pipe, keys, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("dispatch shard %d: %w", n, err)
	}
	out := make([][2]int, len(due))
	for i, run := range runs {
		res := run.Val()
		if code, ok := res.(int64); ok && code == -1 {
			// Not an error when the lease loop released the shard while
			// this tick was running.
			if !c.isHeld(n) {
				return out, nil
			}
			c.setHeld(n, false)
			return out, errLeaseLost
		}
		counts, ok := res.([]any)
		if !ok || len(counts) != 2 {
			return out, fmt.Errorf("dispatch shard %d: unexpected script result %v", n, res)
		}
		d, _ := counts[0].(int64)
		r, _ := counts[1].(int64)
		out[i] = [2]int{int(d), int(r)}
		jobsDispatched.Add(float64(d))
		if d+r > 0 {
			c.logger.Debug("dispatched", zap.Int("shard", n), zap.Int("bucket", buckets[i]), zap.Int64("jobs", d), zap.Int64("dropped", r))
		}
	}
	return out, nil
}

// batchArgs builds the script arguments for a batch of due domains of a
// bucket, kept as ms (Member), with values vals: the jobs are built here, in Go,
// from the records read now, with the ids as text (IDOf); the script
// checks the records did not change before it appends them.
func (c *Coordinator) batchArgs(bucket int, ms []string, due []redis.Z, vals []any, now int64) []any {
	args := make([]any, 0, 3+len(due)*9)
	args = append(args, c.token, jobsMaxLen, bucket)
	for i, z := range due {
		id, dueMS := IDOf(ms[i]), int64(z.Score)
		raw, _ := vals[i].(string)
		var fields []any
		if raw != "" {
			_, rec, err := parseValue(raw)
			if errors.Is(err, errTombstone) {
				raw = ""
			} else if err == nil {
				fields, err = jobFields(id, rec, dueMS)
			}
			if err != nil {
				// A record we cannot read would fail forever: leave the
				// domain due (visible in due_domains) rather than block
				// the rest of the shard.
				c.logger.Error("cannot build job", zap.String("domain_id", id), zap.Error(err))
				continue
			}
		}
		args = append(args, ms[i], dueMS, raw, nextDue(dueMS, now, c.cfg.Interval), len(fields)/2)
		args = append(args, fields...)
	}
	return args
}

// jobFields returns the stream entry fields of the scan job for the domain
// id with record rec that fell due at dueMS.
func jobFields(id string, rec domainRecord, dueMS int64) ([]any, error) {
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
