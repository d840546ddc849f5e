package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/lease"
	"github.com/certfleet/certfleet/internal/registration"
)

// Registration lookups are scheduled per registrable domain (eTLD+1), not
// per domain: however many hosts, tenants and regions share one, it is
// looked up once per interval. The schedule is one for the deployment, and
// every key of it carries the hash tag of the jobs stream
// (events.StreamRegistrationJobs, which has no tag of its own: a key
// without braces hashes whole, so "{registration:jobs}" names its slot), so
// one Lua script updates the schedule and appends the job:
//
//	reg:domains:{registration:jobs}:<b>
//	                                 hash  domain id (Member: a UUID as its 16
//	                                 bytes) -> "<version ms> <registrable>";
//	                                 registrable empty when the domain references
//	                                 none (removed, paused, an IP); kept after
//	                                 removal until the domain's tombstone is
//	                                 swept. regBuckets buckets at first, split in
//	                                 two as they fill (buckets.go, regSet), so
//	                                 that they stay listpacks (a single hash,
//	                                 reg:domains:{registration:jobs}, before)
//	reg:split:{registration:jobs}    set   the buckets of reg:domains split in two
//	reg:schedule:{registration:jobs} zset  registrable -> next due (unix ms);
//	                                 exactly the referenced ones
//	reg:state:{registration:jobs}    hash  registrable -> "<looked up ms>
//	                                 <failures> <references>": the last result
//	                                 applied (0 0 before the first), and how many
//	                                 domains reference it, derived in the same
//	                                 script from the domain's previous
//	                                 registrable, so a redelivered or older event
//	                                 never moves it. Until 2026-12-07 (fifteenth)
//	                                 the references were a hash of their own,
//	                                 reg:refs:{registration:jobs}, some 77 B a
//	                                 registrable more: the scripts take a count
//	                                 from there over, and migrate folds the rest
//	                                 (refsLua)
//	reg:inflight:{registration:jobs} hash  registrable -> when its last job was
//	                                 dispatched (unix ms), until its result
//	reg:lease:{registration:jobs}    string the dispatching coordinator's token
//
// The domain events keep their shard keys as before; the registration keys
// are updated after the shard script by their own script, gated by the same
// event version, so both are idempotent and a crash between the two is
// repaired by the redelivery.
const regTag = "{" + events.StreamRegistrationJobs + "}"

// Registration keys; see above.
const (
	RegistrationScheduleKey = "reg:schedule:" + regTag
	RegistrationLeaseKey    = "reg:lease:" + regTag
	legacyRegDomainsKey     = "reg:domains:" + regTag
	legacyRegRefsKey        = "reg:refs:" + regTag
	regStateKey             = "reg:state:" + regTag
	regInflightKey          = "reg:inflight:" + regTag
)

// regBuckets is how many first-level buckets reg:domains is spread over:
// as many as the shards' schedule has in all (bucketsPerShard of 16
// shards); each splits in two as it fills (buckets.go). Part of the
// layout: it never changes.
const regBuckets = 512

// regBucketOf is the first-level bucket of a domain in reg:domains.
func regBucketOf(domainID string) int { return int(bucketHash(domainID) % regBuckets) }

// regBucketKey is bucket b of reg:domains.
func regBucketKey(b int) string { return regSet.hashKey(b) }

// regJobsMaxLen caps registration:jobs (XADD MAXLEN ~), as jobsMaxLen the
// scan jobs.
const regJobsMaxLen = 100_000

// Registration scheduling rules.
const (
	// regSoon is the lookup interval of a registration that expires
	// within regSoonWindow or has expired.
	regSoon       = 24 * time.Hour
	regSoonWindow = 30 * 24 * time.Hour
	// regFresh is how young a lookup may be for domain.check_requested
	// not to ask for another (POST /check serves it as it is).
	regFresh = time.Hour
	// regMinRetry is the earliest retry after a failed or rate-limited
	// lookup, whatever the server's Retry-After says.
	regMinRetry = time.Minute
)

var (
	registrationsScheduled = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_coordinator_registrations_scheduled",
		Help: "Registrable domains in the registration lookup schedule, after the last tick of the coordinator holding its lease.",
	})
	lookupsDispatched = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_coordinator_registration_lookups_dispatched_total",
		Help: "Registration lookup jobs appended to registration:jobs.",
	})
	registrationsDue = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_coordinator_registrations_due",
		Help: "Registrable domains past their due time and not yet dispatched after the last tick; above zero for long means dispatch lags.",
	})
)

// regRefScript records which registrable domain a domain references and
// keeps the schedule to the referenced ones: a registrable domain that
// gains its first reference is due now (ZADD NX: another reference keeps
// its due time), one that loses its last leaves the schedule and its
// state. Events older than the last applied to the domain are no-ops.
//
// A domain still in the single hash of the layout before is read from
// there, and moved. Its bucket is found in the script (bucketLua).
//
// KEYS: split set of reg:domains, the references of the layout before
// (reg:refs), schedule, state, inflight, legacy domains. ARGV: domain id as kept (Member), version (unix ms),
// registrable ("" = none), now (unix ms), domain id as text (the legacy
// hash's field), bucket hash, buckets' prefix. Returns {applied (1 | 0),
// bucket, the bucket's entries}.
var regRefScript = redis.NewScript(bucketLua + refsLua + `
local id, version, reg = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local b = bucket_of(KEYS[1], tonumber(ARGV[6]), ` + strconv.Itoa(regBuckets) + `)
local dk = ARGV[7] .. b
local old = ''
local cur = redis.call('HGET', dk, id) or redis.call('HGET', KEYS[6], ARGV[5])
if cur then
  local v, r = string.match(cur, '^(%d+) (.*)$')
  if v and tonumber(v) > version then return {0, b, redis.call('HLEN', dk)} end
  old = r or ''
end
redis.call('HSET', dk, id, ARGV[2] .. ' ' .. reg)
redis.call('HDEL', KEYS[6], ARGV[5])
if old == reg then return {1, b, redis.call('HLEN', dk)} end
if old ~= '' and reg_refs(KEYS[4], KEYS[2], old, -1) <= 0 then
  redis.call('HDEL', KEYS[4], old)
  redis.call('ZREM', KEYS[3], old)
  redis.call('HDEL', KEYS[5], old)
end
if reg ~= '' then
  reg_refs(KEYS[4], KEYS[2], reg, 1)
  redis.call('ZADD', KEYS[3], 'NX', ARGV[4], reg)
end
return {1, b, redis.call('HLEN', dk)}
`)

// applyRegistrationRef applies a domain event to the registration
// schedule: host is the domain's host, "" when it references no
// registrable domain any more (removed or paused).
func (c *Coordinator) applyRegistrationRef(ctx context.Context, e events.Envelope, domainID, host string) error {
	reg := ""
	if host != "" {
		// A host without a registrable domain (an IP literal, a public
		// suffix) has no registration to look up.
		reg, _ = registration.Registrable(host)
	}
	m, err := Member(domainID)
	if err != nil {
		return malformed(e, err)
	}
	keys := []string{regSet.split, legacyRegRefsKey, RegistrationScheduleKey, regStateKey, regInflightKey, legacyRegDomainsKey}
	res, err := regRefScript.Run(ctx, c.rdb, keys, m, e.OccurredAt.UnixMilli(), reg, nowMS(), domainID, bucketHash(domainID), regSet.hash).Int64Slice()
	if err != nil || len(res) != 3 {
		return fmt.Errorf("apply %s %s to the registration schedule: %w (%v)", e.Name, domainID, err, res)
	}
	c.logger.Debug("registration reference", zap.String("domain_id", domainID), zap.String("registrable", reg), zap.Bool("applied", res[0] == 1))
	c.growIfFull(ctx, regSet, res[1], res[2])
	return nil
}

// regCheckScript makes the registrable domain of a domain due now unless
// it was looked up within the fresh window, or a lookup dispatched within
// it has no result yet (a domain added and checked at once is one
// lookup). A registrable domain due earlier keeps its due time (and so
// its job id).
//
// KEYS: split set of reg:domains, state, schedule, inflight, legacy
// domains. ARGV: domain id as kept (Member), now (unix ms), fresh (ms),
// domain id as text (the legacy hash's field), bucket hash, buckets'
// prefix. Returns 1 when it made it due.
var regCheckScript = redis.NewScript(bucketLua + `
local dk = ARGV[6] .. bucket_of(KEYS[1], tonumber(ARGV[5]), ` + strconv.Itoa(regBuckets) + `)
local cur = redis.call('HGET', dk, ARGV[1]) or redis.call('HGET', KEYS[5], ARGV[4])
if not cur then return 0 end
local reg = string.match(cur, '^%d+ (.*)$')
if not reg or reg == '' then return 0 end
local st = redis.call('HGET', KEYS[2], reg)
if st and tonumber(ARGV[2]) - tonumber(string.match(st, '^(%d+)')) < tonumber(ARGV[3]) then return 0 end
local sent = redis.call('HGET', KEYS[4], reg)
if sent and tonumber(ARGV[2]) - tonumber(sent) < tonumber(ARGV[3]) then return 0 end
return redis.call('ZADD', KEYS[3], 'XX', 'LT', 'CH', ARGV[2], reg)
`)

// checkRegistrationNow applies domain.check_requested to the registration
// schedule.
func (c *Coordinator) checkRegistrationNow(ctx context.Context, domainID string) error {
	m, err := Member(domainID)
	if err != nil {
		return err
	}
	keys := []string{regSet.split, regStateKey, RegistrationScheduleKey, regInflightKey, legacyRegDomainsKey}
	if err := regCheckScript.Run(ctx, c.rdb, keys, m, nowMS(), regFresh.Milliseconds(), domainID, bucketHash(domainID), regSet.hash).Err(); err != nil {
		return fmt.Errorf("check registration of %s: %w", domainID, err)
	}
	return nil
}

// refsLua defines reg_refs(state, legacy, reg, d): it adds d to the
// references reg's state (in the hash state) counts, taking over the
// count of the layout before (the hash legacy, reg:refs) when the state
// holds none, writes the state back ("0 0 <n>" before a first result)
// and returns the new count; reg_state(state, legacy, reg) reads
// "<looked up ms> <failures>" and the count the same way.
const refsLua = `
local function reg_state(state, legacy, reg)
  local st = redis.call('HGET', state, reg)
  local ms, f, n = '0', '0', nil
  if st then
    local a, b, c = string.match(st, '^(%d+) (%d+) ?(%d*)$')
    if a then ms, f, n = a, b, tonumber(c) end
  end
  if not n then n = tonumber(redis.call('HGET', legacy, reg) or '0') end
  return ms, f, n
end
local function reg_refs(state, legacy, reg, d)
  local ms, f, n = reg_state(state, legacy, reg)
  n = n + d
  redis.call('HSET', state, reg, ms .. ' ' .. f .. ' ' .. n)
  redis.call('HDEL', legacy, reg)
  return n
end
`

// regResultScript applies a lookup result: the registration's state and
// its next due time. It is a no-op for a registrable domain no longer
// referenced and for a result not newer than the one applied (a
// redelivery); it refuses (-1) when the state's result is no longer the
// one the next due time was computed from (another coordinator applied a
// result in between; its references may move meanwhile): the consumer
// retries with the new state.
//
// KEYS: state, schedule, inflight, the references of the layout before
// (reg:refs). ARGV: registrable, expected state ("" = none), new state
// ("<looked up ms> <failures>"; the references are kept), looked up
// (unix ms), next due (unix ms).
var regResultScript = redis.NewScript(refsLua + `
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= '' and tonumber(string.match(cur, '^(%d+)')) >= tonumber(ARGV[4]) then return 0 end
-- Only the result the next due time was computed from must be the same:
-- the references move with every domain added or removed meanwhile.
local function result(st) return string.match(st, '^%d+ %d+') or st end
if result(cur) ~= result(ARGV[2]) then return -1 end
local _, _, n = reg_state(KEYS[1], KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. n)
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[5], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`)

// errStateMoved means a registration's state changed while a result was
// being applied; the result is applied again from the new state.
var errStateMoved = errors.New("registration state changed meanwhile")

// applyRegistrationResult schedules the next lookup of a registrable
// domain from a registration.looked_up.v1 event.
func (c *Coordinator) applyRegistrationResult(ctx context.Context, e events.Envelope) error {
	r, err := events.DecodeRegistrationLookedUp(e)
	if err != nil {
		return malformed(e, err)
	}
	prev, err := c.rdb.HGet(ctx, regStateKey, r.Domain).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read registration state of %s: %w", r.Domain, err)
	}
	_, failures := parseRegState(prev)
	failures = nextFailures(r.Status, failures)
	next := registrationNextDue(r, failures, c.cfg.RegistrationInterval, c.cfg.RegistrationRetry)
	looked := r.LookedUpAt.UnixMilli()
	state := strconv.FormatInt(looked, 10) + " " + strconv.Itoa(failures)
	keys := []string{regStateKey, RegistrationScheduleKey, regInflightKey, legacyRegRefsKey}
	res, err := regResultScript.Run(ctx, c.rdb, keys, r.Domain, prev, state, looked, next.UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("apply registration result of %s: %w", r.Domain, err)
	}
	if res == -1 {
		return fmt.Errorf("apply registration result of %s: %w", r.Domain, errStateMoved)
	}
	c.logger.Debug("registration result", zap.String("registrable", r.Domain), zap.String("status", r.Status),
		zap.Int("failures", failures), zap.Time("next_due", next), zap.Bool("applied", res == 1))
	return nil
}

// parseRegState reads a reg:state value ("<looked up ms> <failures>",
// then the references, refsLua); the zero values when there is none.
func parseRegState(s string) (lookedUpMS int64, failures int) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, 0
	}
	lookedUpMS, _ = strconv.ParseInt(f[0], 10, 64)
	failures, _ = strconv.Atoi(f[1])
	return lookedUpMS, failures
}

// nextFailures is the count of failed lookups in a row after one with
// status, given the count before.
func nextFailures(status string, before int) int {
	switch status {
	case events.RegistrationError, events.RegistrationRateLimited:
		return before + 1
	}
	return 0
}

// registrationNextDue is when to look a registration up again after the
// result r, the failures-th failure in a row (0 after an answer):
//   - an answer (ok, no expiry, not found): one interval after the lookup,
//     but daily when the registration expires within 30 days or expired;
//   - a failure: after the retry policy's pause for that many failures,
//     capped at the interval, and never before a Retry-After the server
//     gave (a rate-limited answer with one waits exactly that long).
func registrationNextDue(r events.RegistrationV1, failures int, interval time.Duration, retry backoff.Policy) time.Time {
	at := r.LookedUpAt
	if failures == 0 {
		next := at.Add(interval)
		if r.ExpiresAt != nil && r.ExpiresAt.Sub(at) < regSoonWindow {
			next = at.Add(min(interval, regSoon))
		}
		return next
	}
	if r.Status == events.RegistrationRateLimited && r.RetryAfter != nil {
		return clampTime(*r.RetryAfter, at.Add(regMinRetry), at.Add(interval))
	}
	if retry.Max <= 0 || retry.Max > interval {
		retry.Max = interval
	}
	next := at.Add(retry.Delay(failures))
	if r.RetryAfter != nil && r.RetryAfter.After(next) {
		next = *r.RetryAfter
	}
	return clampTime(next, at.Add(regMinRetry), at.Add(interval))
}

func clampTime(t, lo, hi time.Time) time.Time {
	if t.Before(lo) {
		return lo
	}
	if t.After(hi) {
		return hi
	}
	return t
}

// regDispatchScript appends the jobs of a batch of due registrable domains
// and moves each to its provisional next due time (one interval on, as a
// scan; its result sets the real one), all or nothing per domain:
// nothing happens unless the lease holds our token, and a domain is
// skipped unless its due time is still the one read.
//
// KEYS: lease, schedule, jobs, inflight. ARGV: token, maxlen, now, then
// per registrable domain: name, due, next due, field count, fields and
// values of the entry. Returns the number dispatched, or -1 without the
// lease.
var regDispatchScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local dispatched = 0
local i = 4
while i <= #ARGV do
  local reg, due, nxt, nf = ARGV[i], ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3])
  local fields = {}
  for j = 1, 2 * nf do fields[j] = ARGV[i+3+j] end
  i = i + 4 + 2 * nf
  local score = redis.call('ZSCORE', KEYS[2], reg)
  if score and tonumber(score) == tonumber(due) then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
    redis.call('ZADD', KEYS[2], 'XX', nxt, reg)
    redis.call('HSET', KEYS[4], reg, ARGV[3])
    dispatched = dispatched + 1
  end
end
return dispatched
`)

// dispatchRegistrations appends a job for every due registrable domain
// while this coordinator holds the registration lease, and returns how
// many it appended.
func (c *Coordinator) dispatchRegistrations(ctx context.Context) (int, error) {
	if !c.holdsRegistration() {
		return 0, nil
	}
	total := 0
	for {
		now := nowMS()
		due, err := c.rdb.ZRangeByScoreWithScores(ctx, RegistrationScheduleKey, &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now, 10), Count: batchSize,
		}).Result()
		if err != nil {
			return total, fmt.Errorf("read due registrations: %w", err)
		}
		if len(due) == 0 {
			break
		}
		args := make([]any, 0, 2+len(due)*8)
		args = append(args, c.token, regJobsMaxLen, now)
		for _, z := range due {
			reg, dueMS := z.Member.(string), int64(z.Score)
			fields, err := registrationJobFields(reg, dueMS)
			if err != nil {
				return total, err
			}
			args = append(args, reg, dueMS, nextDue(dueMS, now, c.cfg.RegistrationInterval), len(fields)/2)
			args = append(args, fields...)
		}
		keys := []string{RegistrationLeaseKey, RegistrationScheduleKey, events.StreamRegistrationJobs, regInflightKey}
		n, err := regDispatchScript.Run(ctx, c.rdb, keys, args...).Int()
		if err != nil {
			return total, fmt.Errorf("dispatch registrations: %w", err)
		}
		if n == -1 {
			c.setRegistrationHeld(false)
			return total, errLeaseLost
		}
		total += n
		lookupsDispatched.Add(float64(n))
		c.logger.Debug("dispatched registration lookups", zap.Int("jobs", n))
		if len(due) < batchSize || n == 0 {
			break
		}
	}
	pipe := c.rdb.Pipeline()
	backlog := pipe.ZCount(ctx, RegistrationScheduleKey, "-inf", strconv.FormatInt(nowMS(), 10))
	scheduled := pipe.ZCard(ctx, RegistrationScheduleKey)
	if _, err := pipe.Exec(ctx); err == nil {
		registrationsDue.Set(float64(backlog.Val()))
		registrationsScheduled.Set(float64(scheduled.Val()))
	}
	return total, nil
}

// registrationJobFields returns the stream entry fields of the lookup of
// reg due at dueMS.
func registrationJobFields(reg string, dueMS int64) ([]any, error) {
	env, err := events.NewWithID(events.RegistrationJobID(reg, dueMS), events.RegistrationRequested, "", reg,
		events.RegistrationRequestedV1{Domain: reg, ScheduledAt: time.UnixMilli(dueMS).UTC()})
	if err != nil {
		return nil, err
	}
	return env.StreamFields()
}

// balanceRegistrationLease renews the registration lease when held, and
// otherwise tries to take it: one coordinator of the fleet dispatches the
// lookups.
func (c *Coordinator) balanceRegistrationLease(ctx context.Context) {
	if c.holdsRegistration() {
		ok, err := lease.Renew(ctx, c.rdb, RegistrationLeaseKey, c.token, c.cfg.LeaseTTL)
		if err != nil {
			c.logger.Warn("renew registration lease failed", zap.Error(err))
			return
		}
		if !ok {
			c.logger.Warn("registration lease lost")
			c.setRegistrationHeld(false)
		}
		return
	}
	ok, err := lease.Acquire(ctx, c.rdb, RegistrationLeaseKey, c.token, c.cfg.LeaseTTL)
	if err != nil {
		c.logger.Warn("acquire registration lease failed", zap.Error(err))
		return
	}
	if ok {
		c.setRegistrationHeld(true)
		c.logger.Info("registration lease acquired")
	}
}

// releaseRegistrationLease gives the registration lease up on the way out.
func (c *Coordinator) releaseRegistrationLease(ctx context.Context) {
	if !c.holdsRegistration() {
		return
	}
	if _, err := lease.Release(ctx, c.rdb, RegistrationLeaseKey, c.token); err != nil {
		c.logger.Warn("release registration lease failed", zap.Error(err))
	}
	c.setRegistrationHeld(false)
}

func (c *Coordinator) holdsRegistration() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regHeld
}

func (c *Coordinator) setRegistrationHeld(held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regHeld = held
}

// regBackfilledKey marks that the domains scheduled before registration
// lookups existed have their references.
const regBackfilledKey = "reg:backfilled:" + regTag

// bucketSnapshotScript reads, in one step, what the registration schedule
// needs of some domains of a bucket: value (record and version) and
// whether they are active (scheduled), so a reference is never built from
// a record of one event and the activity of another.
//
// KEYS: domains bucket, schedule bucket. ARGV: domain ids as kept
// (Member). Returns per id: value ("" = none), "1" when active.
var bucketSnapshotScript = redis.NewScript(`
local out = {}
for i, id in ipairs(ARGV) do
  out[#out+1] = redis.call('HGET', KEYS[1], id) or ''
  out[#out+1] = redis.call('ZSCORE', KEYS[2], id) and '1' or ''
end
return out
`)

// backfillRegistrations gives the domains of a fleet that predates
// registration lookups their references, once per deployment: every
// domain's reference is applied with the version of its last domain
// event, so one applied meanwhile by the event consumer wins, and two
// coordinators backfilling at once apply the same.
func (c *Coordinator) backfillRegistrations(ctx context.Context) error {
	done, err := c.rdb.Exists(ctx, regBackfilledKey).Result()
	if err != nil || done == 1 {
		return err
	}
	total := 0
	for n := range c.cfg.Shards {
		// A bucket split meanwhile is scanned empty or in part: its
		// domains get their references from their next event.
		bs, err := shardSet(n).leaves(ctx, c.rdb)
		if err != nil {
			return err
		}
		for _, b := range bs {
			err := c.scanIDs(ctx, domainsKey(n, b), false, func(ms []string) error {
				k, err := c.backfillBatch(ctx, n, b, ms)
				total += k
				return err
			})
			if err != nil {
				return err
			}
		}
	}
	if err := c.rdb.Set(ctx, regBackfilledKey, time.Now().UTC().Format(time.RFC3339), 0).Err(); err != nil {
		return fmt.Errorf("mark registration backfill done: %w", err)
	}
	c.logger.Info("registration references backfilled", zap.Int("domains", total))
	return nil
}

// backfillBatch applies the references of the domains ms (fields of
// bucket b of shard n, as kept) and returns how many it applied.
func (c *Coordinator) backfillBatch(ctx context.Context, n, b int, ms []string) (int, error) {
	args := make([]any, len(ms))
	for i, m := range ms {
		args[i] = m
	}
	snap, err := bucketSnapshotScript.Run(ctx, c.rdb, []string{domainsKey(n, b), scheduleKey(n, b)}, args...).StringSlice()
	if err != nil || len(snap) != 2*len(ms) {
		return 0, fmt.Errorf("read domains of shard %d: %w (%d values)", n, err, len(snap))
	}
	applied := 0
	for i, m := range ms {
		id, raw, active := IDOf(m), snap[2*i], snap[2*i+1] == "1"
		if raw == "" {
			continue // gone meanwhile
		}
		version, rec, err := parseValue(raw)
		if errors.Is(err, errTombstone) {
			continue
		}
		if err != nil {
			c.logger.Error("cannot read domain record", zap.String("domain_id", id), zap.Error(err))
			continue
		}
		host := rec.Host
		if !active {
			host = ""
		}
		e := events.Envelope{Name: "backfill", OccurredAt: time.UnixMilli(version)}
		if err := c.applyRegistrationRef(ctx, e, id, host); err != nil {
			return applied, err
		}
		applied++
	}
	return applied, nil
}
