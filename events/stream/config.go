package stream

import (
	"errors"
	"fmt"
	"time"

	"github.com/certfleet/certfleet/internal/backoff"
)

// DefaultClaimIdle is the default Config.ClaimIdle, and of the roles'
// --claim-idle flag: a dead consumer's entries are claimed by another within
// 1.5 × 15s = 22.5s of its last keep-alive, inside the 30s recovery target,
// while a keep-alive every 5s leaves room for two missed ones.
const DefaultClaimIdle = 15 * time.Second

// Config configures a Consumer.
type Config struct {
	// Streams are the streams read through the group. Each is read with
	// its own commands (one Redis Cluster slot per call).
	Streams []string
	// Group is the consumer group, created on every stream if missing.
	Group string
	// Consumer names this process inside the group; unique per replica.
	Consumer string
	// StartID is where a group created by this consumer starts: "0" reads
	// each stream from its start, "$" only what comes after. Default "0".
	StartID string
	// Count is the most entries read from one stream at a time (per-entry
	// mode reads no more than its free slots spread over the streams). In batch
	// mode Linger fills a batch up to Count entries; a single round of
	// reads may bring up to Count from each stream. Default 100.
	Count int
	// PollInterval is the pause after a round of reads found every stream
	// empty. Reads never block: one blocking read per stream would hold a
	// pooled connection per stream. Default 100ms.
	PollInterval time.Duration
	// Linger, in batch mode, is how long to keep reading to fill a batch
	// up to Count once a round brought fewer entries: fewer, larger batches
	// for stores that prefer them (ClickHouse). Zero hands every round over
	// at once.
	Linger time.Duration
	// Concurrency, in per-entry mode, is the most entries handled at once.
	// 1 (the default) handles a stream's entries one after another, in
	// order.
	Concurrency int
	// ClaimIdle is how long an entry may stay pending with a consumer that
	// does not acknowledge it (taken to have died) before this one claims
	// it. Entries being handled are kept owned every ClaimIdle/3, so it need
	// not exceed the longest handler run; it bounds how long a dead
	// consumer's entries wait: at most ClaimIdle and a claim period
	// (ClaimIdle/2) after its last keep-alive. Default DefaultClaimIdle.
	ClaimIdle time.Duration
	// MaxDeliveries is how often an entry may be delivered (its delivery
	// count in the group's pending list, which survives restarts) before it
	// is dead-lettered instead of handled again. Default 5.
	MaxDeliveries int
	// Backoff paces the retries of a failed handler and of failed reads.
	// Default 1s doubling up to 30s, with jitter.
	Backoff backoff.Policy
	// ShutdownTimeout, in per-entry mode, bounds how long Run waits once
	// ctx is done for the handlers in flight; then their context is
	// cancelled. Default 30s.
	ShutdownTimeout time.Duration
	// MaxLag is the lag (entries not yet delivered to the group, summed
	// over the streams) above which the consumer counts as behind; it is
	// not ready once behind for longer than LagGrace. Default 100000.
	MaxLag int64
	// LagGrace is how long the lag may stay above MaxLag. Default 5m.
	LagGrace time.Duration
	// StatsInterval is how often the lag and pending gauges are updated.
	// Default 10s.
	StatsInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.StartID == "" {
		c.StartID = "0"
	}
	if c.Count == 0 {
		c.Count = 100
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 5
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.MaxLag == 0 {
		c.MaxLag = 100_000
	}
	if c.LagGrace == 0 {
		c.LagGrace = 5 * time.Minute
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 10 * time.Second
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Streams) == 0 {
		errs = append(errs, errors.New("no streams"))
	}
	seen := make(map[string]bool, len(c.Streams))
	for _, s := range c.Streams {
		if s == "" || seen[s] {
			errs = append(errs, fmt.Errorf("stream names must be non-empty and distinct, got %q", c.Streams))
			break
		}
		seen[s] = true
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group is required"))
	}
	if c.Consumer == "" {
		errs = append(errs, errors.New("consumer is required"))
	}
	if c.StartID != "0" && c.StartID != "$" {
		errs = append(errs, fmt.Errorf(`start id must be "0" or "$", got %q`, c.StartID))
	}
	if c.Count < 1 {
		errs = append(errs, fmt.Errorf("count must be positive, got %d", c.Count))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be positive, got %d", c.Concurrency))
	}
	if c.MaxDeliveries < 1 {
		errs = append(errs, fmt.Errorf("max deliveries must be positive, got %d", c.MaxDeliveries))
	}
	if c.PollInterval < time.Millisecond || c.ClaimIdle < time.Millisecond || c.StatsInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("poll interval, claim idle and stats interval must be at least 1ms, got %s, %s, %s",
			c.PollInterval, c.ClaimIdle, c.StatsInterval))
	}
	if c.Linger < 0 || c.ShutdownTimeout < 0 || c.LagGrace < 0 || c.MaxLag < 0 {
		errs = append(errs, errors.New("linger, shutdown timeout, lag grace and max lag must not be negative"))
	}
	return errors.Join(errs...)
}
