// Package agent is certfleet's scan agent: it takes scan jobs from the
// shard streams through its region's consumer group, resolves each domain,
// does one TLS handshake with every address the way a browser would (through
// the guarded dialer of internal/guard), and publishes what it saw as a
// scan.completed event on the results stream.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/presence"
)

// defaultPort is the port of a job that names none.
const defaultPort = 443

// Config configures an Agent.
type Config struct {
	// Region is where the agent scans from; its agents share the consumer
	// group "agent-<region>", so each job is scanned once per region.
	Region string
	// Name identifies this agent inside its region's group and in its
	// results. Default hostname-pid.
	Name string
	// Shards is the number of job streams; it must match the coordinator's
	// (checked against Redis at start). Default events.DefaultShards.
	Shards int
	// Concurrency is the most jobs scanned at once. Default 32.
	Concurrency int
	// StaleAfter is the age past which a job is dropped unscanned: after an
	// outage the backlog would only report the past, and the next schedule
	// is due soon. Default 1h.
	StaleAfter time.Duration
	// ClaimIdle is how long a job may stay unacknowledged with an agent of
	// the region before another claims it (the first one is taken to have
	// died). It must be well above the longest scan. Default 60s.
	ClaimIdle time.Duration
	// Block is how long one read waits for new jobs; it also bounds how
	// long Run takes to notice ctx ending. Default 1s.
	Block time.Duration
	// ShutdownTimeout bounds how long Run waits, once ctx is done, for the
	// jobs in flight to finish and publish. Default 30s.
	ShutdownTimeout time.Duration
	// HeartbeatInterval is how often the agent tells Redis its region is
	// alive (presence.Seen), so the API knows which regions to wait
	// for. Default 10s.
	HeartbeatInterval time.Duration
	// Scanner configures DNS, dialing and handshakes.
	Scanner ScannerConfig
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "agent"
		}
		c.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Shards == 0 {
		c.Shards = events.DefaultShards
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = time.Hour
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = time.Minute
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("region is required"))
	} else if strings.ContainsAny(c.Region, " \t\r\n") {
		errs = append(errs, fmt.Errorf("region %q must not contain white space", c.Region))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if c.Shards < 1 || c.Shards > 100 {
		errs = append(errs, fmt.Errorf("shards must be between 1 and 100, got %d", c.Shards))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency))
	}
	if c.StaleAfter < 0 {
		errs = append(errs, fmt.Errorf("stale after must not be negative, got %s", c.StaleAfter))
	}
	// Redis reads BLOCK 0 as "forever", which would keep Run from seeing
	// ctx end.
	if c.Block < time.Millisecond {
		errs = append(errs, fmt.Errorf("block must be at least 1ms, got %s", c.Block))
	}
	if c.ClaimIdle < time.Millisecond {
		errs = append(errs, fmt.Errorf("claim idle must be at least 1ms, got %s", c.ClaimIdle))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout))
	}
	if c.HeartbeatInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("heartbeat interval must be at least 1ms, got %s", c.HeartbeatInterval))
	}
	if err := c.Scanner.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Group is the consumer group of a region's agents on every job stream.
func Group(region string) string { return "agent-" + region }

// Agent consumes scan jobs and publishes their results.
type Agent struct {
	cfg     Config
	rdb     redis.UniversalClient
	logger  *zap.Logger
	scanner *Scanner
	group   string
	streams []string
}

// New checks cfg and builds the agent and its scanner.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	logger = logger.Named("agent").With(zap.String("region", cfg.Region), zap.String("agent", cfg.Name))
	scanner, err := NewScanner(cfg.Scanner, logger)
	if err != nil {
		return nil, err
	}
	streams := make([]string, cfg.Shards)
	for n := range streams {
		streams[n] = events.JobStream(n)
	}
	return &Agent{cfg: cfg, rdb: rdb, logger: logger, scanner: scanner, group: Group(cfg.Region), streams: streams}, nil
}

// Run consumes jobs until ctx is done. Each job is scanned, its result
// appended to the results stream, and only then acknowledged, so a crash in
// between leads to a rescan with the same event id, never to a lost job.
// When ctx ends, Run stops reading and waits up to ShutdownTimeout for the
// jobs in flight; jobs cut off after that stay pending and are scanned
// again by another agent of the region.
func (a *Agent) Run(ctx context.Context) error {
	if err := events.CheckShards(ctx, a.rdb, a.cfg.Shards); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	for _, s := range a.streams {
		if err := events.CreateGroup(ctx, a.rdb, s, a.group); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	a.logger.Info("agent started", zap.Int("shards", a.cfg.Shards), zap.Int("concurrency", a.cfg.Concurrency))
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		a.heartbeat(ctx)
	}()
	defer func() { <-beating }()

	// Jobs outlive ctx by up to ShutdownTimeout, so they get their own.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	slots := make(chan struct{}, a.cfg.Concurrency)
	var wg sync.WaitGroup
	dispatch := func(stream string, msgs []redis.XMessage) bool {
		for _, m := range msgs {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				// Read but not started: pending with this agent, claimed
				// by another after ClaimIdle.
				return false
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				a.process(jobCtx, stream, m)
			}()
		}
		return true
	}

	a.consume(ctx, slots, dispatch)

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(a.cfg.ShutdownTimeout):
		a.logger.Warn("jobs still running at shutdown, abandoning them", zap.Int("jobs", len(slots)))
		cancelJobs()
		<-done
	}
	a.logger.Info("agent stopped")
	return nil
}

// heartbeat records the region as seen now and every HeartbeatInterval
// until ctx is done. A failure is logged and retried on the next beat: the
// scans do not depend on it.
func (a *Agent) heartbeat(ctx context.Context) {
	tick := time.NewTicker(a.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		if err := presence.Seen(ctx, a.rdb, a.cfg.Region, time.Now()); err != nil && ctx.Err() == nil {
			a.logger.Warn("heartbeat failed", zap.Error(err))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// consume reads jobs and hands them to dispatch until ctx is done: first
// this consumer's own pending entries (a restart with the same name), then
// new ones, claiming entries left idle by dead agents every ClaimIdle/2.
func (a *Agent) consume(ctx context.Context, slots chan struct{}, dispatch func(string, []redis.XMessage) bool) {
	cursor := make(map[string]string, len(a.streams))
	for _, s := range a.streams {
		cursor[s] = "0"
	}
	lastClaim := time.Time{}
	failures := 0
	for ctx.Err() == nil {
		// Read only when a slot is free, and no more than the free slots
		// spread over the streams, so jobs do not wait here long enough to
		// be claimed by another agent.
		select {
		case slots <- struct{}{}:
			<-slots
		case <-ctx.Done():
			return
		}
		free := cap(slots) - len(slots)
		count := max(1, free/len(a.streams))

		if time.Since(lastClaim) >= a.cfg.ClaimIdle/2 {
			more, ok := a.claim(ctx, free, dispatch)
			if !ok {
				return
			}
			if !more {
				// Otherwise claim again on the next round: a dead agent's
				// jobs should not wait another ClaimIdle/2.
				lastClaim = time.Now()
			}
		}
		res, err := a.read(ctx, cursor, count)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			a.logger.Warn("read jobs failed", zap.Error(err), zap.Int("failures", failures))
			if strings.Contains(err.Error(), "NOGROUP") {
				for _, s := range a.streams {
					_ = events.CreateGroup(ctx, a.rdb, s, a.group)
				}
			}
			select {
			case <-time.After(min(time.Duration(failures)*time.Second, 30*time.Second)):
			case <-ctx.Done():
				return
			}
			continue
		}
		failures = 0
		for _, st := range res {
			if !dispatch(st.Stream, st.Messages) {
				return
			}
		}
	}
}

// read does one XREADGROUP over every job stream.
func (a *Agent) read(ctx context.Context, cursor map[string]string, count int) ([]redis.XStream, error) {
	args := make([]string, 0, 2*len(a.streams))
	args = append(args, a.streams...)
	for _, s := range a.streams {
		args = append(args, cursor[s])
	}
	res, err := a.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: a.group, Consumer: a.cfg.Name, Streams: args, Count: int64(count), Block: a.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xreadgroup: %w", err)
	}
	got := make(map[string]int, len(res))
	for _, st := range res {
		got[st.Stream] = len(st.Messages)
		if n := len(st.Messages); n > 0 && cursor[st.Stream] != ">" {
			cursor[st.Stream] = st.Messages[n-1].ID
		}
	}
	// A pending walk that came back empty has nothing left on that stream.
	for _, s := range a.streams {
		if cursor[s] != ">" && got[s] == 0 {
			cursor[s] = ">"
		}
	}
	return res, nil
}

// claim takes over jobs that stayed unacknowledged for ClaimIdle: their
// agent died, or could not publish. It takes up to count per stream and
// says whether more may be left; ok is false when ctx ended.
func (a *Agent) claim(ctx context.Context, count int, dispatch func(string, []redis.XMessage) bool) (more, ok bool) {
	for _, s := range a.streams {
		msgs, _, err := a.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: s, Group: a.group, Consumer: a.cfg.Name,
			MinIdle: a.cfg.ClaimIdle, Start: "0-0", Count: int64(count),
		}).Result()
		if err != nil {
			if ctx.Err() != nil {
				return false, false
			}
			a.logger.Warn("claim jobs failed", zap.String("stream", s), zap.Error(err))
			continue
		}
		// A full batch may have left more behind; a short one did not (the
		// cursor alone would also point past entries still in flight).
		if len(msgs) == count {
			more = true
		}
		if len(msgs) > 0 {
			a.logger.Info("claimed idle jobs", zap.String("stream", s), zap.Int("jobs", len(msgs)))
			if !dispatch(s, msgs) {
				return false, false
			}
		}
	}
	return more, true
}

// process scans one job and publishes its result, then acknowledges it.
func (a *Agent) process(ctx context.Context, stream string, m redis.XMessage) {
	logger := a.logger.With(zap.String("stream", stream), zap.String("entry_id", m.ID))
	env, err := events.FromStreamValues(m.Values)
	if err != nil {
		logger.Error("dropping undecodable job", zap.Error(err))
		a.finish(ctx, logger, stream, m.ID, jobBad)
		return
	}
	var job events.ScanRequestedV1
	if env.Name != events.ScanRequested {
		logger.Error("dropping unexpected event on job stream", zap.String("event", env.Name))
		a.finish(ctx, logger, stream, m.ID, jobBad)
		return
	}
	if err := env.Decode(&job); err != nil || job.JobID == uuid.Nil || job.Host == "" {
		logger.Error("dropping malformed job", zap.String("event_id", env.EventID.String()), zap.Error(err))
		a.finish(ctx, logger, stream, m.ID, jobBad)
		return
	}
	logger = logger.With(zap.String("job_id", job.JobID.String()), zap.String("host", job.Host))
	if !job.ScheduledAt.IsZero() && time.Since(job.ScheduledAt) > a.cfg.StaleAfter {
		logger.Info("skipping stale job", zap.Time("scheduled_at", job.ScheduledAt))
		a.finish(ctx, logger, stream, m.ID, jobStale)
		return
	}
	port := job.Port
	if port == 0 {
		port = defaultPort
	}
	domainID := job.DomainID
	if domainID == "" {
		domainID = env.AggregateID
	}

	started := time.Now().UTC()
	results := a.scanner.Scan(ctx, job.Host, port)
	finished := time.Now().UTC()
	if ctx.Err() != nil {
		// Cut off at shutdown: the results are partial. The job stays
		// pending and is scanned again.
		return
	}
	out, err := events.NewWithID(events.ScanEventID(job.JobID, a.cfg.Region), events.ScanCompleted, env.TenantID, env.AggregateID,
		events.ScanCompletedV1{
			JobID: job.JobID, DomainID: domainID, Host: job.Host, Port: port,
			Region: a.cfg.Region, Agent: a.cfg.Name,
			StartedAt: started.Truncate(time.Millisecond), FinishedAt: finished.Truncate(time.Millisecond),
			Results: results,
		})
	if err != nil {
		logger.Error("build result event", zap.Error(err))
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return
	}
	values, err := out.StreamValues()
	if err != nil {
		logger.Error("encode result event", zap.Error(err))
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return
	}
	if err := a.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: events.StreamResults, MaxLen: events.DefaultMaxLen, Approx: true, Values: values,
	}).Err(); err != nil {
		// Not acknowledged: the job is claimed again after ClaimIdle.
		logger.Warn("publish result failed, job stays pending", zap.Error(err))
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return
	}
	logger.Debug("job scanned", zap.Int("addresses", len(results)), zap.Duration("took", finished.Sub(started)))
	a.finish(ctx, logger, stream, m.ID, jobScanned)
}

// finish acknowledges a job and counts how it ended.
func (a *Agent) finish(ctx context.Context, logger *zap.Logger, stream, id, result string) {
	jobsTotal.WithLabelValues(result).Inc()
	if err := a.rdb.XAck(ctx, stream, a.group, id).Err(); err != nil {
		// It comes back through a claim; the result event has a fixed id,
		// so the rescan is harmless.
		logger.Warn("ack job failed", zap.Error(err))
	}
}
