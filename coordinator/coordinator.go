// Package coordinator keeps certfleet's scan schedule and turns due domains
// into scan jobs, and registrable domains due for a registration lookup
// into lookup jobs.
//
// The schedule lives in Redis, split into shards. Every key of shard NN
// carries the hash tag {NN} (events.ShardTag), so one Lua script touches a
// single Redis Cluster slot:
//
//	domains:{NN}:<b>      hash  domain id -> "<version>|<tenant>|<port>|<host>"
//	                      (record.go); version is the occurred_at (unix ms) of
//	                      the last domain event applied. A removed domain
//	                      keeps "<version>" (a tombstone) for tombstoneTTL, so
//	                      that a late redelivery of an older event cannot
//	                      bring it back
//	schedule:{NN}:<b>     zset  domain id -> next due time (unix ms); only
//	                      active domains
//	split:{NN}            set   the buckets split in two (buckets.go)
//	due:{NN}              zset  bucket b -> at most the earliest due time
//	                      of schedule:{NN}:<b> (unix ms); the due index
//	                      (see below)
//	domains:{NN}:removed  zset  domain id -> version of its tombstone
//	lease:{NN}            string owner token, with a TTL
//	jobs:{NN}             stream scan.requested.v1 jobs (events.JobStream)
//
// Every domain id in these keys, as a field or member, is Member(id): a
// UUID as its 16 raw bytes (shortid.Bytes), 20 B less per domain and key
// than its 36 characters; IDOf reads it back. The buckets are still
// chosen from the id as text (bucketOf, ShardOf). Ids kept as text, as
// before 2026-12-06 (sixth), are converted at start (migrate.go).
//
// A shard's domains are spread over buckets b, bucketsPerShard at
// first, split in two as they fill (buckets.go), so that each hash and
// sorted set stays small enough for Redis's compact listpack encoding
// whatever the fleet's size; split:{NN} lists the split ones. The keys of
// the layout before, domains:{NN}, schedule:{NN} and versions:{NN}, are
// moved to the buckets at start (migrate.go).
//
// Dispatch reads only the buckets the due index due:{NN} lists as due,
// not every bucket. The index may say a bucket is due earlier than it is
// (a domain rescheduled later or removed: dispatch reads the bucket, finds
// nothing due and corrects the score) but never later: every script that
// gives a domain a due time lowers its bucket's score to it (ZADD LT) in
// the same step, dispatch sets the score to the bucket's earliest due time
// in the script that reschedules, and buildDueIndex lowers every score to
// its bucket's earliest at start and every migrateEvery (migrate.go), which
// also bounds what a coordinator of before, writing no index during a
// rollout, can delay.
//
// A coordinator consumes domain events from the events stream (group
// "coordinator") into the schedule, holds leases on a fair share of the
// shards, and every tick moves the due domains of its shards to their job
// streams. The job is appended and the domain rescheduled in one script that
// first checks the lease still carries this coordinator's token and that the
// domain's due time is still the one read, so two coordinators running at
// once never dispatch the same job, even across lease handovers.
//
// The same domain events also keep the registration lookup schedule, one
// per registrable domain for the whole fleet, dispatched by the holder of
// one more lease to registration:jobs (see registration.go); the lookup
// results (registration.looked_up.v1, on the events streams) set each next
// lookup.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/shortid"
)

// Group is the consumer group the coordinators share on the events stream.
const Group = "coordinator"

// CoordinatorsKey is the sorted set where every running coordinator
// heartbeats (member = its token, score = expiry in unix ms).
const CoordinatorsKey = "coordinators"

// jobsMaxLen caps each jobs stream (XADD MAXLEN ~): a region whose agents
// are down for long loses its oldest jobs instead of filling Redis; the
// schedule dispatches the domains again at their next due time anyway.
const jobsMaxLen = 100_000

// batchSize is how many due domains of one shard one script dispatches.
const batchSize = 500

// bucketsPerShard is how many first-level buckets the domains and the
// schedule of a shard are spread over; each splits in two as it fills
// (buckets.go). Part of the layout: it never changes.
const bucketsPerShard = 32

// domainsKey is a bucket of the domains of a shard.
func domainsKey(shard, bucket int) string { return shardSet(shard).hashKey(bucket) }

// scheduleKey is a bucket of the next due times of a shard.
func scheduleKey(shard, bucket int) string { return shardSet(shard).zsetKey(bucket) }

// dueKey is the due index of a shard: bucket -> earliest due time, or
// earlier (see the package comment).
func dueKey(shard int) string { return "due:" + events.ShardTag(shard) }

// removedKey lists the tombstones of a shard by removal time.
func removedKey(shard int) string { return "domains:" + events.ShardTag(shard) + ":removed" }

// DomainKeys are the keys holding a domain: its record (a hash, field
// Member(domainID)) and its next due time (a sorted set, member
// Member(domainID); only while active), in the bucket the split set reads
// now (buckets.go).
func DomainKeys(ctx context.Context, rdb redis.UniversalClient, domainID string, shards int) (domains, schedule string, err error) {
	s := shardSet(ShardOf(domainID, shards))
	b, err := s.of(ctx, rdb, domainID)
	if err != nil {
		return "", "", err
	}
	return s.hashKey(b), s.zsetKey(b), nil
}

// Member is the field or member that stands for the domain id domainID
// in the schedule's keys (DomainKeys, the tombstones, reg:domains):
// shortid.Bytes, a UUID as its 16 raw bytes, any other id as it is. An
// id of 16 bytes that is not a UUID is refused.
func Member(domainID string) (string, error) {
	m, err := shortid.Bytes(domainID)
	if err != nil {
		return "", fmt.Errorf("domain id: %w", err)
	}
	return m, nil
}

// IDOf is the domain id a field or member of the schedule's keys stands
// for (Member's inverse, shortid.FromBytes); an id kept as text reads as
// it is.
func IDOf(m string) string { return shortid.FromBytes(m) }

// DomainState reports whether the schedule holds a domain's record (not
// only its tombstone) and whether the domain is scheduled (active).
func DomainState(ctx context.Context, rdb redis.UniversalClient, domainID string, shards int) (known, scheduled bool, err error) {
	domains, schedule, err := DomainKeys(ctx, rdb, domainID, shards)
	if err != nil {
		return false, false, err
	}
	m, err := Member(domainID)
	if err != nil {
		return false, false, err
	}
	pipe := rdb.Pipeline()
	val := pipe.HGet(ctx, domains, m)
	due := pipe.ZScore(ctx, schedule, m)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, false, fmt.Errorf("read domain %s: %w", domainID, err)
	}
	_, _, perr := parseValue(val.Val())
	return val.Err() == nil && !errors.Is(perr, errTombstone), due.Err() == nil, nil
}

// ScheduledCount is the number of domains in the schedule (active ones).
func ScheduledCount(ctx context.Context, rdb redis.UniversalClient, shards int) (int64, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, 0, shards*bucketsPerShard)
	for n := range shards {
		bs, err := shardSet(n).leaves(ctx, rdb)
		if err != nil {
			return 0, err
		}
		for _, b := range bs {
			cmds = append(cmds, pipe.ZCard(ctx, scheduleKey(n, b)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("count scheduled domains: %w", err)
	}
	var total int64
	for _, c := range cmds {
		total += c.Val()
	}
	return total, nil
}

// LeaseKey is the lease of a shard; its value is the holder's token.
func LeaseKey(shard int) string { return "lease:" + events.ShardTag(shard) }

// The keys of a shard before the buckets (see migrate.go).
func legacyDomainsKey(shard int) string  { return "domains:" + events.ShardTag(shard) }
func legacyScheduleKey(shard int) string { return "schedule:" + events.ShardTag(shard) }
func legacyVersionsKey(shard int) string { return "versions:" + events.ShardTag(shard) }

// ShardOf is the shard of a domain: FNV-1a (32 bit) of the domain id string,
// modulo shards.
func ShardOf(domainID string, shards int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(domainID))
	return int(h.Sum32() % uint32(shards))
}

var (
	jobsDispatched = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_coordinator_jobs_dispatched_total",
		Help: "Scan jobs appended to the jobs streams.",
	})
	leasesHeld = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_coordinator_leases_held",
		Help: "Shard leases held by the coordinators of this process.",
	})
	bucketSplits = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_coordinator_bucket_splits_total",
		Help: "Schedule buckets split in two as they filled (coordinator/buckets.go).",
	})
	dueDomains = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certfleet_coordinator_due_domains",
		Help: "Domains past their due time and not yet dispatched, per held shard, after the last tick; above zero for long means dispatch lags.",
	}, []string{"shard"})
)

// Config configures a Coordinator.
type Config struct {
	// Name identifies this coordinator as the consumer in the "coordinator"
	// group and in its lease token. Default: hostname-pid.
	Name string
	// ClaimIdle is how long a domain event stays pending with a stopped
	// coordinator before another claims it. Default
	// stream.DefaultClaimIdle.
	ClaimIdle time.Duration
	// Shards is the number of job shards; it must match the agents' (checked
	// against Redis at start). Default events.DefaultShards.
	Shards int
	// Interval is how often each domain is scanned. Default 12h.
	Interval time.Duration
	// Tick is how often the due domains are dispatched; a new domain waits
	// at most about one tick for its first job. Default 1s.
	Tick time.Duration
	// LeaseTTL is how long a shard lease lives without renewal, i.e. how
	// long a crashed coordinator's shards stay idle. Leases are renewed and
	// rebalanced every LeaseTTL/3. Default 10s.
	LeaseTTL time.Duration
	// RegistrationInterval is how often the registration of each
	// registrable domain is looked up (daily within 30 days of its
	// expiry). Default 7 days.
	RegistrationInterval time.Duration
	// RegistrationRetry paces the lookups of a registration after failed
	// ones; its Max is capped at RegistrationInterval. Default 15m
	// doubling up to RegistrationInterval.
	RegistrationRetry backoff.Policy
	// TrimEvery is how often the streams are trimmed of what every
	// consumer group has read and acknowledged (TrimStreams); 0 never.
	TrimEvery time.Duration
	// BucketSize is the number of entries past which a schedule bucket
	// is split in two (buckets.go); keep it below Redis's hash- and
	// zset-max-listpack-entries (128 by default). Default 100.
	BucketSize int
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = stream.ConsumerName("coordinator", true)
	}
	if c.Shards == 0 {
		c.Shards = events.DefaultShards
	}
	if c.Interval == 0 {
		c.Interval = 12 * time.Hour
	}
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.RegistrationInterval == 0 {
		c.RegistrationInterval = 7 * 24 * time.Hour
	}
	if c.RegistrationRetry.Initial == 0 {
		c.RegistrationRetry.Initial = 15 * time.Minute
	}
	if c.RegistrationRetry.Max == 0 {
		c.RegistrationRetry.Max = c.RegistrationInterval
	}
	if c.BucketSize == 0 {
		c.BucketSize = defaultBucketSize
	}
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Shards < 1 || c.Shards > 100 {
		errs = append(errs, fmt.Errorf("shards must be between 1 and 100, got %d", c.Shards))
	}
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("interval must be at least 1s, got %s", c.Interval))
	}
	if c.Tick < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("tick must be at least 10ms, got %s", c.Tick))
	}
	if c.LeaseTTL < 300*time.Millisecond {
		errs = append(errs, fmt.Errorf("lease ttl must be at least 300ms, got %s", c.LeaseTTL))
	}
	if c.RegistrationInterval < time.Second {
		errs = append(errs, fmt.Errorf("registration interval must be at least 1s, got %s", c.RegistrationInterval))
	}
	if c.RegistrationRetry.Initial < 0 || c.RegistrationRetry.Max < c.RegistrationRetry.Initial {
		errs = append(errs, fmt.Errorf("registration retry pauses must be positive with max at least initial, got %s and %s",
			c.RegistrationRetry.Initial, c.RegistrationRetry.Max))
	}
	if c.BucketSize < 1 || c.BucketSize > 100_000 {
		errs = append(errs, fmt.Errorf("bucket size must be between 1 and 100000, got %d", c.BucketSize))
	}
	return errors.Join(errs...)
}

// Coordinator consumes domain events into the schedule and dispatches due
// domains of the shards it leases.
type Coordinator struct {
	cfg      Config
	rdb      redis.UniversalClient
	consumer *stream.Consumer
	logger   *zap.Logger
	// token is this instance's lease value and heartbeat member; unique per
	// instance even when two share a Name.
	token string

	mu   sync.Mutex
	held map[int]bool
	// regHeld: this coordinator holds the registration lease.
	regHeld bool
}

// New returns a coordinator; Run starts it.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Coordinator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("coordinator: redis client is nil")
	}
	logger = logger.Named("coordinator").With(zap.String("coordinator", cfg.Name))
	// Domain events are applied one at a time, in stream order: a domain's
	// events are on one stream (its tenant's partition).
	consumer, err := stream.New(stream.Config{
		Streams: events.EventStreams(), Group: Group, Consumer: cfg.Name, ClaimIdle: cfg.ClaimIdle,
	}, rdb, logger)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	return &Coordinator{
		cfg:      cfg,
		rdb:      rdb,
		consumer: consumer,
		logger:   logger,
		token:    cfg.Name + "/" + uuid.NewString(),
		held:     map[int]bool{},
	}, nil
}

// Register adds the coordinator's event consumer to r's health checks.
func (c *Coordinator) Register(r *health.Registry) {
	c.consumer.Register(r, "coordinator_events")
}

// Run consumes domain events, keeps leases and dispatches jobs until ctx is
// done. On the way out it releases its leases and its heartbeat, so that
// another coordinator takes its shards over at once instead of after the
// lease TTL.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := events.CheckShards(ctx, c.rdb, c.cfg.Shards); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Domains in the layout before the buckets are moved before anything
	// reads the buckets (migrate.go).
	c.migrateLegacy(ctx)
	// Ids kept as text are converted before anything reads or writes the
	// buckets by Member: the scripts find a domain by one form only.
	if err := c.migrateIDs(ctx); err != nil {
		return err
	}
	// Take leases before the first tick, so a fresh coordinator dispatches
	// right away.
	c.balanceLeases(ctx)

	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { runErr = err })
		cancel()
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		err := c.consumer.RunEach(ctx, func(ctx context.Context, e stream.Entry) error {
			return c.applyEvent(ctx, e.Event)
		})
		if err != nil {
			fail(fmt.Errorf("consume domain events: %w", err))
		}
	}()
	go func() {
		defer wg.Done()
		c.loop(ctx, c.cfg.LeaseTTL/3, c.balanceLeases)
	}()
	go func() {
		defer wg.Done()
		c.loop(ctx, c.cfg.Tick, c.dispatch)
	}()
	wg.Go(func() { c.loop(ctx, migrateEvery, c.migrateLegacy) })
	wg.Go(func() { c.loop(ctx, migrateEvery, c.growBuckets) })
	if c.cfg.TrimEvery > 0 {
		wg.Go(func() { c.loop(ctx, c.cfg.TrimEvery, c.TrimStreams) })
	}
	wg.Go(func() {
		// Not fatal: the next start tries again.
		if err := c.backfillRegistrations(ctx); err != nil && ctx.Err() == nil {
			c.logger.Warn("registration backfill failed", zap.Error(err))
		}
	})
	wg.Wait()

	stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stopCancel()
	c.releaseAll(stopCtx)
	return runErr
}

func (c *Coordinator) loop(ctx context.Context, every time.Duration, f func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// TrimStreams removes from every stream of the pipeline what every
// consumer group has read and acknowledged (stream.TrimAcknowledged): the
// policy that keeps a stream's memory to its backlog. XADD's MAXLEN ~
// (events.DefaultMaxLen) stays as the backstop for a group that stopped
// reading for good. Several coordinators trimming at once is harmless.
func (c *Coordinator) TrimStreams(ctx context.Context) {
	streams := append(events.EventStreams(), events.StreamResults, events.StreamRegistrationJobs)
	for i := range c.cfg.Shards {
		streams = append(streams, events.JobStream(i))
	}
	var total int64
	for _, st := range streams {
		n, err := stream.TrimAcknowledged(ctx, c.rdb, st)
		if err != nil {
			if ctx.Err() == nil {
				c.logger.Warn("trim stream failed", zap.String("stream", st), zap.Error(err))
			}
			return
		}
		total += n
	}
	if total > 0 {
		c.logger.Debug("trimmed acknowledged stream entries", zap.Int64("entries", total))
	}
}

// HeldShards returns the shards this coordinator currently believes it
// leases. Dispatch re-checks the lease in Redis, so a stale answer is
// harmless.
func (c *Coordinator) HeldShards() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.held))
	for n := 0; n < c.cfg.Shards; n++ {
		if c.held[n] {
			out = append(out, n)
		}
	}
	return out
}

func (c *Coordinator) setHeld(n int, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[n] == held {
		return
	}
	if held {
		c.held[n] = true
		leasesHeld.Inc()
		return
	}
	delete(c.held, n)
	leasesHeld.Dec()
	dueDomains.DeleteLabelValues(shardLabel(n))
}

func shardLabel(n int) string { return fmt.Sprintf("%02d", n) }

func nowMS() int64 { return time.Now().UnixMilli() }
