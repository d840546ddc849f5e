// Package sink stores events in ClickHouse: every event of the events and
// results streams into the event store (table events), the per-IP results
// of scan.completed events into scan_results, audit.recorded events into
// audit_log, and registration.looked_up events into registrations, in
// batches.
//
// Delivery is at least once: a batch is acknowledged only after every
// insert succeeded, and a batch that fails is retried. A redelivered event
// has the same sorting key in every table, so ReplacingMergeTree collapses
// it and reads with FINAL (schema.ReplayEvents, schema.ScanHistory,
// schema.QueryAudit, schema.RegistrationHistory) see it once; so does a job the agents scanned again
// after a redelivery (scan_results is keyed by the job, not the scan time).
//
// A scan result or audit record with a value its column cannot hold (a
// port of 70000, a chain of 300 certificates) is refused: its envelope is
// kept in the event store, it gets no typed row, and the refusal is logged
// with every problem and counted (certfleet_sink_refused_total).
package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/lease"
	"github.com/certfleet/certfleet/schema"
)

// Group is the sink's consumer group on the events and results streams.
const Group = "sink"

var (
	eventsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_sink_events_total",
		Help: "Events stored in ClickHouse, by source stream (a redelivered event counts again).",
	}, []string{"stream"})
	rowsTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_sink_rows_total",
		Help: "Rows stored in ClickHouse scan_results.",
	})
	auditRowsTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_sink_audit_rows_total",
		Help: "Rows stored in ClickHouse audit_log (a redelivered event counts again).",
	})
	registrationRowsTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_sink_registration_rows_total",
		Help: "Rows stored in ClickHouse registrations (a redelivered event counts again).",
	})
	batchSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "certfleet_sink_batch_seconds",
		Help:    "Time to store one batch in ClickHouse, failed attempts included.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	batchErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_sink_batch_errors_total",
		Help: "Batches ClickHouse refused; they are retried.",
	})
	refusedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_sink_refused_total",
		Help: "Events kept in the event store without typed rows: undecodable, or a value that does not fit its column.",
	}, []string{"name"})
)

// Config configures a Sink.
type Config struct {
	// Consumer names this sink in the consumer group; unique per replica.
	// Default hostname-pid.
	Consumer string
	// ClaimIdle is how long an entry stays pending with a stopped replica
	// before another claims it (--claim-idle). Default
	// stream.DefaultClaimIdle.
	ClaimIdle time.Duration
	// BatchSize is the most entries read from each stream for one batch.
	// Default 5000.
	BatchSize int
	// FlushInterval is how long the sink keeps reading to fill a batch
	// once entries are waiting, so that ClickHouse gets few large inserts
	// rather than many small ones. Default 1s.
	FlushInterval time.Duration
	// Retry paces the retries of a batch ClickHouse (or Redis) refused.
	// Default 500ms doubling up to 4s: a retry is the sink's probe of
	// ClickHouse, so Max bounds how long a batch waits once ClickHouse
	// answers again (the target is 5s), at one failed insert per Max per
	// replica while it is down.
	Retry backoff.Policy
	// HistoryRetention is how long scan_results rows are kept
	// (--history-retention): RunRetention drops each month of them once
	// its newest row is older. 0 keeps every row.
	HistoryRetention time.Duration
	// RollupRetention is how long the rollups of scan_results
	// (schema.RollupTables, GET /stats' scans by region) are kept
	// (--rollup-retention), dropped by month the same way; longer than
	// HistoryRetention, as they are far smaller. 0 keeps every row.
	RollupRetention time.Duration
	// EventRetention is how long raw events are kept in the event store
	// (--event-retention): RunRetention deletes older ones, but never one
	// a rebuild from the latest view snapshot replays, and none while
	// there is no complete snapshot (schema.DeleteExpiredEvents). 0 keeps
	// every event.
	EventRetention time.Duration
	// Token names this replica as holder of the event retention lease.
	// Default: a random one.
	Token string
	// RetentionInterval is how often RunRetention looks. Default 1h.
	RetentionInterval time.Duration
	// Now is RunRetention's clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Consumer == "" {
		c.Consumer = stream.ConsumerName("sink", true)
	}
	if c.BatchSize == 0 {
		c.BatchSize = 5000
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = 500 * time.Millisecond
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = 4 * time.Second
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = time.Hour
	}
	if c.Token == "" {
		c.Token = lease.NewToken()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch size must be positive, got %d", c.BatchSize))
	}
	if c.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("flush interval must not be negative, got %s", c.FlushInterval))
	}
	if c.Retry.Initial < 0 || c.Retry.Max < c.Retry.Initial {
		errs = append(errs, fmt.Errorf("retry pauses must be positive with max at least initial, got %s and %s", c.Retry.Initial, c.Retry.Max))
	}
	if c.HistoryRetention < 0 {
		errs = append(errs, fmt.Errorf("history retention must not be negative, got %s", c.HistoryRetention))
	}
	if c.RollupRetention < 0 {
		errs = append(errs, fmt.Errorf("rollup retention must not be negative, got %s", c.RollupRetention))
	}
	if c.EventRetention < 0 {
		errs = append(errs, fmt.Errorf("event retention must not be negative, got %s", c.EventRetention))
	}
	if c.RetentionInterval < 0 {
		errs = append(errs, fmt.Errorf("retention interval must not be negative, got %s", c.RetentionInterval))
	}
	return errors.Join(errs...)
}

// Sink moves events from Redis into ClickHouse.
type Sink struct {
	cfg      Config
	rdb      redis.UniversalClient
	conn     driver.Conn
	consumer *stream.Consumer
	logger   *zap.Logger
}

// New returns a sink reading through rdb and writing through conn, whose
// database must be migrated (schema.Migrate).
func New(cfg Config, rdb redis.UniversalClient, conn driver.Conn, logger *zap.Logger) (*Sink, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink config: %w", err)
	}
	if rdb == nil || conn == nil {
		return nil, errors.New("sink: redis client and clickhouse connection are required")
	}
	logger = logger.Named("sink").With(zap.String("consumer", cfg.Consumer))
	consumer, err := stream.New(stream.Config{
		Streams:   append(events.EventStreams(), events.StreamResults),
		Group:     Group,
		Consumer:  cfg.Consumer,
		ClaimIdle: cfg.ClaimIdle,
		Count:     cfg.BatchSize,
		Linger:    cfg.FlushInterval,
		Backoff:   cfg.Retry,
	}, rdb, logger)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	return &Sink{cfg: cfg, rdb: rdb, conn: conn, consumer: consumer, logger: logger}, nil
}

// Register adds the sink's health checks to r: its consumer, and
// ClickHouse answering (readiness only).
func (s *Sink) Register(r *health.Registry) {
	s.consumer.Register(r, "sink")
	r.Ready("clickhouse", health.PingFunc(s.conn.Ping))
}

// Run stores events until ctx is done.
func (s *Sink) Run(ctx context.Context) error {
	s.logger.Info("sink started", zap.Int("batch_size", s.cfg.BatchSize))
	defer s.logger.Info("sink stopped")
	return s.consumer.RunBatches(ctx, s.store)
}

// EventRetentionLeaseKey is the lease the replica deleting expired events
// holds: the deletion is a mutation that rewrites the events table, asked
// by one replica at a time.
const EventRetentionLeaseKey = "lease:events:retention"

// RunRetention drops the months of scan_results past HistoryRetention and
// of the rollups past RollupRetention, and deletes the events past
// EventRetention, at start and every RetentionInterval until ctx is done;
// with none of them it waits for ctx alone. A failed step is logged and
// tried again next time: old rows waiting an hour harm nothing. Every
// replica may run it: a partition two replicas drop at once is dropped
// once, and the events are deleted under a lease.
func (s *Sink) RunRetention(ctx context.Context) error {
	if s.cfg.HistoryRetention == 0 && s.cfg.RollupRetention == 0 && s.cfg.EventRetention == 0 {
		<-ctx.Done() // an actor that returned would stop its process
		return nil
	}
	logger := s.logger.With(zap.Duration("retention", s.cfg.HistoryRetention), zap.Duration("rollup_retention", s.cfg.RollupRetention),
		zap.Duration("event_retention", s.cfg.EventRetention))
	logger.Info("history retention started")
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		for _, r := range []struct {
			what      string
			retention time.Duration
			drop      func(context.Context, driver.Conn, time.Time) ([]string, error)
		}{
			{"scan history", s.cfg.HistoryRetention, schema.DropScanMonthsBefore},
			{"scan rollup", s.cfg.RollupRetention, schema.DropRollupMonthsBefore},
		} {
			if r.retention == 0 {
				continue
			}
			cutoff := s.cfg.Now().Add(-r.retention)
			dropped, err := r.drop(ctx, s.conn, cutoff)
			for _, p := range dropped {
				logger.Info("dropped month", zap.String("data", r.what), zap.String("month", p), zap.Time("cutoff", cutoff))
			}
			if err != nil && ctx.Err() == nil {
				logger.Warn("drop old months failed", zap.String("data", r.what), zap.Error(err))
			}
		}
		if s.cfg.EventRetention > 0 {
			if err := s.expireEvents(ctx, logger); err != nil && ctx.Err() == nil {
				logger.Warn("delete expired events", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// expireEvents deletes the expired events under the event retention lease;
// another replica holding it does the work.
func (s *Sink) expireEvents(ctx context.Context, logger *zap.Logger) error {
	ok, err := lease.Acquire(ctx, s.rdb, EventRetentionLeaseKey, s.cfg.Token, s.cfg.RetentionInterval)
	if err != nil || !ok {
		return err
	}
	// Held until it expires: one replica per interval asks, however many
	// look.
	cutoff, n, err := schema.DeleteExpiredEvents(ctx, s.conn, s.cfg.Now(), s.cfg.EventRetention)
	if n > 0 {
		logger.Info("deleting expired events", zap.Uint64("events", n), zap.Time("cutoff", cutoff))
	}
	return err
}

// store inserts the batch into the tables. An error leaves the whole
// batch to be retried; rows already inserted then collapse with their
// second copy.
func (s *Sink) store(ctx context.Context, batch []stream.Entry) error {
	start := time.Now()
	defer func() { batchSeconds.Observe(time.Since(start).Seconds()) }()

	now := time.Now().UTC()
	var (
		rows  []schema.ScanRow
		audit []schema.AuditRow
		regs  []schema.RegistrationRow
	)
	for _, e := range batch {
		switch e.Event.Name {
		case events.ScanCompleted:
			r, err := schema.ScanRows(e.Event)
			if err != nil {
				s.refuse(e, err)
				continue
			}
			rows = append(rows, r...)
		case events.AuditRecorded:
			r, err := schema.AuditRowOf(e.Event, e.ID, now)
			if err != nil {
				s.refuse(e, err)
				continue
			}
			audit = append(audit, r)
		case events.RegistrationLookedUp:
			r, err := schema.RegistrationRowOf(e.Event, now)
			if err != nil {
				s.refuse(e, err)
				continue
			}
			regs = append(regs, r)
		}
	}
	// The inserts go to ClickHouse side by side: the server handles them
	// on separate threads, and the batch is only as slow as the largest.
	var wg sync.WaitGroup
	var rowsErr, auditErr, regsErr error
	if len(rows) > 0 {
		wg.Go(func() { rowsErr = schema.InsertScanRows(ctx, s.conn, rows) })
	}
	if len(audit) > 0 {
		wg.Go(func() { auditErr = schema.InsertAuditRows(ctx, s.conn, audit) })
	}
	if len(regs) > 0 {
		wg.Go(func() { regsErr = schema.InsertRegistrations(ctx, s.conn, regs) })
	}
	stored := make([]schema.StoredEvent, len(batch))
	for i, e := range batch {
		stored[i] = schema.StoredEvent{Event: e.Event, Stream: e.Stream, InsertedAt: now}
	}
	eventsErr := schema.InsertEvents(ctx, s.conn, stored)
	wg.Wait()
	if err := errors.Join(rowsErr, auditErr, regsErr, eventsErr); err != nil {
		batchErrors.Inc()
		return err
	}

	rowsTotal.Add(float64(len(rows)))
	auditRowsTotal.Add(float64(len(audit)))
	registrationRowsTotal.Add(float64(len(regs)))
	perStream := make(map[string]int, 2)
	for _, e := range batch {
		perStream[e.Stream]++
	}
	for name, n := range perStream {
		eventsTotal.WithLabelValues(name).Add(float64(n))
	}
	s.logger.Debug("stored batch", zap.Int("events", len(batch)), zap.Int("rows", len(rows)), zap.Int("audit_rows", len(audit)), zap.Int("registration_rows", len(regs)),
		zap.Duration("took", time.Since(start)))
	return nil
}

// refuse records that e gets no typed row. Retrying cannot fix a payload,
// and dead-lettering one entry of a batch would take the batch apart into
// single inserts; the event itself is still kept in the event store,
// where a replay refuses it again.
func (s *Sink) refuse(e stream.Entry, err error) {
	refusedTotal.WithLabelValues(e.Event.Name).Inc()
	s.logger.Error("refused event, stored without typed rows", zap.String("name", e.Event.Name),
		zap.String("event_id", e.Event.EventID.String()), zap.String("stream", e.Stream), zap.String("entry_id", e.ID), zap.Error(err))
}
