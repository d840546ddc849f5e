package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// BatchConfig configures ConsumeBatches.
type BatchConfig struct {
	// Streams are read together through one consumer group.
	Streams []string
	// Group is the consumer group, created at id 0 on every stream.
	Group string
	// Consumer names this process inside the group; unique per replica.
	Consumer string
	// Count is the most entries read from each stream at a time. Default 1000.
	Count int
	// Block is how long a read waits for new entries. Default 1s.
	Block time.Duration
	// ClaimIdle is how long an entry may stay pending with a crashed
	// consumer before this one claims it. Default 30s.
	ClaimIdle time.Duration
	// Linger is how long to keep reading to fill a batch up to Count once a
	// read brought fewer entries: fewer, larger batches for stores that
	// prefer them (ClickHouse). Zero hands every read over at once.
	Linger time.Duration
	// Backoff is the first pause before a failed batch is retried; it
	// doubles on each failure up to MaxBackoff. Default 1s.
	Backoff time.Duration
	// MaxBackoff caps the pause between retries. Default 30s.
	MaxBackoff time.Duration
}

func (c *BatchConfig) setDefaults() {
	if c.Count == 0 {
		c.Count = 1000
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = 30 * time.Second
	}
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
}

// Validate reports every problem of the configuration.
func (c *BatchConfig) Validate() error {
	var errs []error
	if len(c.Streams) == 0 {
		errs = append(errs, errors.New("no streams"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group is required"))
	}
	if c.Consumer == "" {
		errs = append(errs, errors.New("consumer is required"))
	}
	if c.Count < 0 {
		errs = append(errs, fmt.Errorf("count must not be negative, got %d", c.Count))
	}
	// Redis reads BLOCK 0 as "forever", which would stop ctx from ending
	// the loop; a millisecond is its smallest finite wait.
	if c.Block < time.Millisecond {
		errs = append(errs, fmt.Errorf("block must be at least 1ms, got %s", c.Block))
	}
	if c.ClaimIdle < time.Millisecond {
		errs = append(errs, fmt.Errorf("claim idle must be at least 1ms, got %s", c.ClaimIdle))
	}
	if c.Linger < 0 || c.Backoff < 0 || c.MaxBackoff < 0 {
		errs = append(errs, errors.New("linger and backoffs must not be negative"))
	}
	return errors.Join(errs...)
}

// Entry is one decoded stream entry of a batch.
type Entry struct {
	// Stream is the stream the entry was read from.
	Stream string
	// ID is the entry's stream id.
	ID string
	// Event is the decoded envelope.
	Event Envelope
}

// BatchHandler handles a batch of entries. It must be idempotent: a batch
// that failed, or whose consumer crashed before acknowledging it, is
// delivered again. Returning an error leaves every entry pending.
type BatchHandler func(ctx context.Context, batch []Entry) error

// CreateGroup creates the consumer group on stream at id 0 (so it reads the
// stream from its start), creating the stream if missing; an existing group
// is left as it is.
func CreateGroup(ctx context.Context, rdb redis.UniversalClient, stream, group string) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s on %s: %w", group, stream, err)
	}
	return nil
}

// ConsumeBatches reads cfg.Streams through a consumer group until ctx is
// done and hands the entries to h in batches, acknowledging a batch only
// after h returned nil. A failed batch is retried, with a growing pause,
// until h accepts it or ctx ends. After a restart the consumer first reads
// its own pending entries again; entries left pending by a crashed consumer
// for longer than cfg.ClaimIdle are claimed. An entry that cannot be
// decoded is logged and acknowledged, so one bad entry never blocks a
// stream. It returns nil when ctx is done, and an error only for a bad
// configuration.
func ConsumeBatches(ctx context.Context, rdb redis.UniversalClient, cfg BatchConfig, h BatchHandler, logger *zap.Logger) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("consume batches: %w", err)
	}
	c := &batchConsumer{
		rdb:    rdb,
		cfg:    cfg,
		h:      h,
		logger: logger.Named("batches").With(zap.String("group", cfg.Group), zap.String("consumer", cfg.Consumer)),
		cursor: make(map[string]string, len(cfg.Streams)),
	}
	c.run(ctx)
	return nil
}

type batchConsumer struct {
	rdb    redis.UniversalClient
	cfg    BatchConfig
	h      BatchHandler
	logger *zap.Logger
	// cursor is per stream the id to read after: "0"-based ids walk this
	// consumer's pending entries, ">" reads new ones. Only the reader
	// goroutine touches it.
	cursor map[string]string
}

// run reads one batch ahead: while the handler stores a batch, the reader
// fetches and decodes the next, so Redis and the store work side by side.
// The read-ahead batch is pending with this consumer; if the process stops
// before handling it, the pending walk of the next start brings it back.
func (c *batchConsumer) run(ctx context.Context) {
	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan []Entry)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.readLoop(rctx, batches)
	}()
	defer func() {
		cancel()
		<-readerDone
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-batches:
			if !c.handle(ctx, batch) {
				return
			}
		}
	}
}

func (c *batchConsumer) readLoop(ctx context.Context, out chan<- []Entry) {
	for _, s := range c.cfg.Streams {
		c.cursor[s] = "0"
	}
	c.createGroups(ctx)
	lastClaim := time.Now()
	send := func(batch []Entry) bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case out <- batch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	failures := 0
	for ctx.Err() == nil {
		if time.Since(lastClaim) >= c.cfg.ClaimIdle/2 {
			lastClaim = time.Now()
			if !c.claim(ctx, send) {
				return
			}
		}
		batch, err := c.read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			c.logger.Warn("read failed", zap.Error(err))
			if strings.Contains(err.Error(), "NOGROUP") {
				// The stream or group was deleted under us.
				c.createGroups(ctx)
			}
			sleep(ctx, c.backoff(failures))
			continue
		}
		failures = 0
		if !send(batch) {
			return
		}
	}
}

func (c *batchConsumer) createGroups(ctx context.Context) {
	for _, s := range c.cfg.Streams {
		if err := CreateGroup(ctx, c.rdb, s, c.cfg.Group); err != nil && ctx.Err() == nil {
			// A read will fail with NOGROUP and create it again.
			c.logger.Warn("create group failed", zap.String("stream", s), zap.Error(err))
		}
	}
}

func (c *batchConsumer) backoff(failures int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < failures && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.cfg.MaxBackoff)
}

// claim takes over the entries that stayed pending for longer than
// ClaimIdle, with a crashed consumer or with this one after a failed ack,
// and passes them on as batches. It returns false when ctx ended.
func (c *batchConsumer) claim(ctx context.Context, send func([]Entry) bool) bool {
	for _, s := range c.cfg.Streams {
		start, claimed := "0-0", 0
		for {
			msgs, next, err := c.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s, Group: c.cfg.Group, Consumer: c.cfg.Consumer,
				MinIdle: c.cfg.ClaimIdle, Start: start, Count: int64(c.cfg.Count),
			}).Result()
			if err != nil {
				if ctx.Err() != nil {
					return false
				}
				c.logger.Warn("claim failed", zap.String("stream", s), zap.Error(err))
				break
			}
			claimed += len(msgs)
			if !send(c.decode(ctx, s, msgs)) {
				return false
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
		if claimed > 0 {
			c.logger.Info("claimed idle entries", zap.String("stream", s), zap.Int("entries", claimed))
		}
	}
	return true
}

// read returns the next batch: pending entries while any stream has some,
// new entries otherwise, lingering to fill the batch when configured.
func (c *batchConsumer) read(ctx context.Context) ([]Entry, error) {
	batch, pending, err := c.readOnce(ctx, c.cfg.Count, c.cfg.Block)
	if err != nil || pending || len(batch) == 0 || c.cfg.Linger <= 0 || len(batch) >= c.cfg.Count {
		return batch, err
	}
	deadline := time.Now().Add(c.cfg.Linger)
	for len(batch) < c.cfg.Count {
		wait := time.Until(deadline)
		if wait < time.Millisecond {
			break
		}
		more, _, err := c.readOnce(ctx, c.cfg.Count-len(batch), wait)
		if err != nil {
			// What was read is pending with this consumer: hand it over
			// rather than lose track of it.
			break
		}
		batch = append(batch, more...)
	}
	return batch, nil
}

// readOnce does one XREADGROUP over every stream. pending tells whether it
// walked pending entries (which are handed over at once).
func (c *batchConsumer) readOnce(ctx context.Context, count int, block time.Duration) ([]Entry, bool, error) {
	args := make([]string, 0, 2*len(c.cfg.Streams))
	args = append(args, c.cfg.Streams...)
	pending := false
	for _, s := range c.cfg.Streams {
		args = append(args, c.cursor[s])
		pending = pending || c.cursor[s] != ">"
	}
	res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: c.cfg.Group, Consumer: c.cfg.Consumer, Streams: args,
		Count: int64(count), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, pending, nil
	}
	if err != nil {
		return nil, pending, fmt.Errorf("xreadgroup %v: %w", c.cfg.Streams, err)
	}
	got := make(map[string]int, len(res))
	var batch []Entry
	for _, st := range res {
		got[st.Stream] = len(st.Messages)
		batch = append(batch, c.decode(ctx, st.Stream, st.Messages)...)
		if n := len(st.Messages); n > 0 && c.cursor[st.Stream] != ">" {
			c.cursor[st.Stream] = st.Messages[n-1].ID
		}
	}
	// A stream whose pending walk came back empty has none left.
	for _, s := range c.cfg.Streams {
		if c.cursor[s] != ">" && got[s] == 0 {
			c.cursor[s] = ">"
		}
	}
	return batch, pending, nil
}

// decode turns stream entries into batch entries. An entry that cannot be
// decoded is logged and acknowledged at once: no retry can fix it.
func (c *batchConsumer) decode(ctx context.Context, stream string, msgs []redis.XMessage) []Entry {
	batch := make([]Entry, 0, len(msgs))
	var bad []string
	for _, m := range msgs {
		e, err := FromStreamValues(m.Values)
		if err != nil {
			c.logger.Error("dropping undecodable entry", zap.String("stream", stream), zap.String("entry_id", m.ID), zap.Error(err))
			bad = append(bad, m.ID)
			continue
		}
		batch = append(batch, Entry{Stream: stream, ID: m.ID, Event: e})
	}
	if len(bad) > 0 {
		if err := c.rdb.XAck(ctx, stream, c.cfg.Group, bad...).Err(); err != nil {
			// They stay pending and come back through a claim.
			c.logger.Warn("ack undecodable entries failed", zap.String("stream", stream), zap.Error(err))
		}
	}
	return batch
}

// handle gives the batch to the handler until it succeeds, then
// acknowledges it. It returns false when ctx ended first.
func (c *batchConsumer) handle(ctx context.Context, batch []Entry) bool {
	for failures := 0; ; {
		err := c.h(ctx, batch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		failures++
		d := c.backoff(failures)
		c.logger.Warn("batch handler failed, will retry", zap.Int("entries", len(batch)),
			zap.Int("failures", failures), zap.Duration("retry_in", d), zap.Error(err))
		if !sleep(ctx, d) {
			return false
		}
	}
	c.ack(ctx, batch)
	return true
}

func (c *batchConsumer) ack(ctx context.Context, batch []Entry) {
	ids := make(map[string][]string, len(c.cfg.Streams))
	for _, e := range batch {
		ids[e.Stream] = append(ids[e.Stream], e.ID)
	}
	// The batch is stored: acknowledge it even if ctx just ended, or it
	// would be handled again after a restart for nothing.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pipe := c.rdb.Pipeline()
	for s, list := range ids {
		pipe.XAck(actx, s, c.cfg.Group, list...)
	}
	if _, err := pipe.Exec(actx); err != nil {
		// They stay pending with this consumer and come back through a
		// claim; the handler is idempotent.
		c.logger.Warn("ack failed", zap.Int("entries", len(batch)), zap.Error(err))
	}
}

// sleep waits d or until ctx is done; it returns false in the latter case.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
