// Package agent is certfleet's scan agent: it takes scan jobs from the
// shard streams through its region's consumer group, resolves each domain,
// does one TLS handshake with every address the way a browser would (through
// the guarded dialer of internal/guard), and publishes what it saw as a
// scan.completed event on the results stream. Beside the scans, its
// RegistrationWorker does the fleet's registration lookup jobs
// (registration.go).
package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/replicated"
)

// defaultPort is the port of a job that names none.
const defaultPort = 443

// Config configures an Agent.
type Config struct {
	// Region is where the agent scans from; its agents share the consumer
	// group "agent-<region>", so each job is scanned once per region.
	Region string
	// Name identifies this agent inside its region's group and in its
	// results. It should outlive restarts (the default is the hostname):
	// a restarted agent then reads its own pending jobs at once instead of
	// waiting for another agent to claim them. Two agents running at once
	// must not share it. Default: the hostname.
	Name string
	// Shards is the number of job streams; it must match the coordinator's
	// (checked against Redis at start). Default events.DefaultShards.
	Shards int
	// Concurrency is the most jobs scanned at once. Jobs in flight wait
	// for handshake slots, which are shared fairly between tenants; more
	// jobs than slots keeps one tenant's slow jobs from holding every job
	// place while another tenant's jobs stay unread. Default 128.
	Concurrency int
	// StaleAfter is the age past which a job is dropped unscanned: after an
	// outage the backlog would only report the past, and the next schedule
	// is due soon. Default 1h.
	StaleAfter time.Duration
	// ClaimIdle is how long a job may stay unacknowledged with an agent of
	// the region, without keep-alive, before another claims it (the first
	// one is taken to have died). A job being scanned is kept owned, so
	// this need not exceed the longest scan. Default
	// stream.DefaultClaimIdle.
	ClaimIdle time.Duration
	// Block is the pause after a round of reads found every job stream
	// empty (stream.Config.PollInterval): how late a new job may be seen
	// when the agent is idle. Default 100ms.
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
	// Wait is how many replicas must hold a scan result before its job is
	// acknowledged (--redis-wait-replicas): a master lost after that
	// loses no result. Default: no wait.
	Wait replicated.Config
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = stream.ConsumerName("agent", false)
	}
	if c.Shards == 0 {
		c.Shards = events.DefaultShards
	}
	if c.Concurrency == 0 {
		c.Concurrency = 128
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = time.Hour
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = stream.DefaultClaimIdle
	}
	if c.Block == 0 {
		c.Block = 100 * time.Millisecond
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
	if err := c.Wait.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Group is the consumer group of a region's agents on every job stream.
func Group(region string) string { return "agent-" + region }

// Agent consumes scan jobs and publishes their results.
type Agent struct {
	cfg      Config
	rdb      redis.UniversalClient
	logger   *zap.Logger
	scanner  *Scanner
	consumer *stream.Consumer
	// results publishes the scan results, waiting for replicas.
	results *replicated.Writer
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
	consumer, err := stream.New(stream.Config{
		Streams: streams, Group: Group(cfg.Region), Consumer: cfg.Name,
		Concurrency:     cfg.Concurrency,
		PollInterval:    cfg.Block,
		ClaimIdle:       cfg.ClaimIdle,
		ShutdownTimeout: cfg.ShutdownTimeout,
	}, rdb, logger)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	results, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Agent{cfg: cfg, rdb: rdb, logger: logger, scanner: scanner, consumer: consumer, results: results}, nil
}

// Register adds the agent's job consumer to r's health checks.
func (a *Agent) Register(r *health.Registry) {
	a.consumer.Register(r, "agent_jobs")
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
	a.logger.Info("agent started", zap.Int("shards", a.cfg.Shards), zap.Int("concurrency", a.cfg.Concurrency))
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		a.heartbeat(ctx)
	}()
	defer func() { <-beating }()
	err := a.consumer.RunEach(ctx, a.process)
	a.logger.Info("agent stopped")
	return err
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

// process scans one job and publishes its result; the consumer
// acknowledges the job when it returns nil. A job that cannot be scanned is
// dead-lettered (stream.Permanent); one cut off at shutdown, or whose
// result could not be published, stays pending and is scanned again.
func (a *Agent) process(ctx context.Context, e stream.Entry) error {
	logger := a.logger.With(zap.String("stream", e.Stream), zap.String("entry_id", e.ID))
	env := e.Event
	job, err := events.DecodeScanRequested(env)
	if err != nil {
		jobsTotal.WithLabelValues(jobBad).Inc()
		return stream.Permanent(fmt.Errorf("malformed job: %w", err))
	}
	logger = logger.With(zap.String("job_id", job.JobID.String()), zap.String("host", job.Host))
	if !job.ScheduledAt.IsZero() && time.Since(job.ScheduledAt) > a.cfg.StaleAfter {
		logger.Info("skipping stale job", zap.Time("scheduled_at", job.ScheduledAt))
		jobsTotal.WithLabelValues(jobStale).Inc()
		return nil
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
	rep := a.scanner.Scan(ctx, Target{Tenant: env.TenantID, Host: job.Host, Port: port})
	finished := time.Now().UTC()
	if err := ctx.Err(); err != nil {
		// Cut off at shutdown: the results are partial. The job stays
		// pending and is scanned again.
		return err
	}
	out, err := events.NewWithID(events.ScanEventID(job.JobID, a.cfg.Region), events.ScanCompleted, env.TenantID, env.AggregateID,
		events.ScanCompletedV1{
			JobID: job.JobID, DomainID: domainID, Host: job.Host, Port: port,
			Region: a.cfg.Region, Agent: a.cfg.Name, ScheduledAt: job.ScheduledAt,
			StartedAt: started.Truncate(time.Millisecond), FinishedAt: finished.Truncate(time.Millisecond),
			Results: rep.Results, SkippedIPs: rep.Skipped,
		})
	if err != nil {
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return stream.Permanent(fmt.Errorf("build result event: %w", err))
	}
	values, err := out.StreamValues()
	if err != nil {
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return stream.Permanent(fmt.Errorf("encode result event: %w", err))
	}
	// With Wait set, the result is on a replica before the job is
	// acknowledged: a failover after the acknowledgement loses neither.
	if _, err := a.results.Pipelined(ctx, events.StreamResults, func(p redis.Pipeliner) error {
		return p.XAdd(ctx, &redis.XAddArgs{
			Stream: events.StreamResults, MaxLen: events.DefaultMaxLen, Approx: true, Values: values,
		}).Err()
	}); err != nil {
		// Retried (the scan too) by the consumer; the result event has a
		// fixed id, so a second copy is harmless. A result not replicated
		// in time is retried the same way.
		jobsTotal.WithLabelValues(jobFailed).Inc()
		return fmt.Errorf("publish result: %w", err)
	}
	logger.Debug("job scanned", zap.Int("addresses", len(rep.Results)), zap.Int("skipped", rep.Skipped), zap.Duration("took", finished.Sub(started)))
	jobsTotal.WithLabelValues(jobScanned).Inc()
	return nil
}
