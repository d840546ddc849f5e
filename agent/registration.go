package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/health"
)

// RegistrationGroup is the one consumer group of registration lookup jobs:
// unlike scan jobs, a registration is looked up once, not once per
// region, so the agents of every region share it.
const RegistrationGroup = "registration"

// Reasons of certfleet_agent_registration_job_failures_total.
const (
	lookupBad    = "bad"
	lookupFailed = "publish-failed"
)

// registrationJobFailures counts jobs that failed around the lookup; the
// lookups themselves (by source and status, and their duration) are
// counted by internal/registration.
var registrationJobFailures = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_agent_registration_job_failures_total",
	Help: "Registration lookup jobs that failed around the lookup: bad (malformed job or result), publish-failed.",
}, []string{"reason"})

// LookupFunc looks up the registration of a registrable domain. It never
// fails: every failure is a Status, Detail and RetryAfter of the result
// (internal/registration's Lookuper.Lookup is one).
type LookupFunc func(ctx context.Context, domain string) events.RegistrationV1

// RegistrationConfig configures a RegistrationWorker.
type RegistrationConfig struct {
	// Name identifies this worker in the registration group; like an
	// agent's, it should outlive restarts. Default: the hostname.
	Name string
	// Lookup does one lookup. Required.
	Lookup LookupFunc
	// Workers is the most lookups at once. Lookups run apart from scan
	// jobs, so a slow registry never holds a scan. Default 4.
	Workers int
	// Timeout bounds one lookup; the lookup's own deadlines are shorter,
	// this is the last guard. Default 2m.
	Timeout time.Duration
	// ClaimIdle is how long a job stays pending with a worker that stopped
	// (without keep-alive) before another claims it. Default
	// stream.DefaultClaimIdle.
	ClaimIdle time.Duration
	// Block is the pause after a round of reads found no job. Default
	// 100ms.
	Block time.Duration
	// ShutdownTimeout bounds how long Run waits, once ctx is done, for
	// the lookups in flight. Default 30s.
	ShutdownTimeout time.Duration
}

func (c *RegistrationConfig) setDefaults() {
	if c.Name == "" {
		c.Name = stream.ConsumerName("agent", false)
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
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
}

// Validate reports every problem of the configuration.
func (c RegistrationConfig) Validate() error {
	var errs []error
	if c.Lookup == nil {
		errs = append(errs, errors.New("lookup function is required"))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers must be at least 1, got %d", c.Workers))
	}
	if c.Timeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("timeout must be at least 1ms, got %s", c.Timeout))
	}
	if c.ClaimIdle < time.Millisecond || c.Block < time.Millisecond {
		errs = append(errs, fmt.Errorf("claim idle and block must be at least 1ms, got %s and %s", c.ClaimIdle, c.Block))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// RegistrationWorker takes registration lookup jobs from
// events.StreamRegistrationJobs and publishes each result as a
// registration.looked_up.v1 event on the event stream of the registrable
// domain's partition (events.EventStream(domain), no tenant).
type RegistrationWorker struct {
	cfg      RegistrationConfig
	rdb      redis.UniversalClient
	logger   *zap.Logger
	consumer *stream.Consumer
}

// NewRegistrationWorker checks cfg and builds the worker.
func NewRegistrationWorker(cfg RegistrationConfig, rdb redis.UniversalClient, logger *zap.Logger) (*RegistrationWorker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("registration worker config: %w", err)
	}
	logger = logger.Named("registration").With(zap.String("agent", cfg.Name))
	consumer, err := stream.New(stream.Config{
		Streams: []string{events.StreamRegistrationJobs}, Group: RegistrationGroup, Consumer: cfg.Name,
		Concurrency:     cfg.Workers,
		PollInterval:    cfg.Block,
		ClaimIdle:       cfg.ClaimIdle,
		ShutdownTimeout: cfg.ShutdownTimeout,
	}, rdb, logger)
	if err != nil {
		return nil, fmt.Errorf("registration worker: %w", err)
	}
	return &RegistrationWorker{cfg: cfg, rdb: rdb, logger: logger, consumer: consumer}, nil
}

// Register adds the worker's job consumer to r's health checks.
func (w *RegistrationWorker) Register(r *health.Registry) {
	w.consumer.Register(r, "registration_jobs")
}

// Run does lookup jobs until ctx is done. A job is acknowledged only once
// its result is on the event stream; one cut off at shutdown stays pending
// and is done again, by this worker after a restart or by another after
// ClaimIdle, with the same event id.
func (w *RegistrationWorker) Run(ctx context.Context) error {
	w.logger.Info("registration worker started", zap.Int("workers", w.cfg.Workers))
	err := w.consumer.RunEach(ctx, w.process)
	w.logger.Info("registration worker stopped")
	return err
}

func (w *RegistrationWorker) process(ctx context.Context, e stream.Entry) error {
	job, err := events.DecodeRegistrationRequested(e.Event)
	if err != nil {
		registrationJobFailures.WithLabelValues(lookupBad).Inc()
		return stream.Permanent(fmt.Errorf("malformed registration job: %w", err))
	}
	logger := w.logger.With(zap.String("entry_id", e.ID), zap.String("registrable", job.Domain))
	lctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	start := time.Now()
	res := w.cfg.Lookup(lctx, job.Domain)
	cancel()
	if err := ctx.Err(); err != nil {
		// Cut off at shutdown: the answer may be a timeout of ours, not
		// the registry's. The job stays pending.
		return err
	}
	// The job names the domain; the result's time is the worker's when
	// the lookup leaves it out.
	res.Domain = job.Domain
	if res.LookedUpAt.IsZero() {
		res.LookedUpAt = time.Now()
	}
	res.LookedUpAt = res.LookedUpAt.UTC().Truncate(time.Millisecond)
	out, err := events.NewWithID(events.RegistrationEventID(job.Domain, job.ScheduledAt), events.RegistrationLookedUp, "", job.Domain, res)
	if err == nil {
		_, err = events.DecodeRegistrationLookedUp(out)
	}
	var values map[string]any
	if err == nil {
		values, err = out.StreamValues()
	}
	if err != nil {
		// The lookup function broke its contract (an unknown status, a
		// date out of range): no retry fixes that.
		registrationJobFailures.WithLabelValues(lookupBad).Inc()
		return stream.Permanent(fmt.Errorf("registration result of %s: %w", job.Domain, err))
	}
	if err := w.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: events.EventStream(job.Domain), MaxLen: events.DefaultMaxLen, Approx: true, Values: values,
	}).Err(); err != nil {
		// Retried, lookup too, by the consumer; the event id is fixed.
		registrationJobFailures.WithLabelValues(lookupFailed).Inc()
		return fmt.Errorf("publish registration result: %w", err)
	}
	logger.Debug("registration looked up", zap.String("status", res.Status), zap.String("detail", res.Detail),
		zap.Duration("took", time.Since(start)))
	return nil
}
