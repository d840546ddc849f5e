// Package stream is certfleet's one consumer of Redis streams: every role
// that reads events, results or jobs reads them through a Consumer.
//
// The contract:
//   - Delivery is at least once. An entry is acknowledged only after its
//     handler returned nil, so handlers make their effect durable before
//     returning and are idempotent (a crash between the effect and the ack
//     delivers the entry again).
//   - A consumer reads its own pending entries first after a restart (so a
//     replica that keeps its consumer name across restarts takes its work
//     back at once), and claims entries left pending by another consumer
//     for ClaimIdle. While a handler runs, its entries are kept owned (their
//     idle time reset every ClaimIdle/3), so a slow handler's entry is never
//     claimed and handled twice; ClaimIdle is thus only how long a dead
//     consumer's entries wait, not a bound on handler runs.
//   - A handler error is retried in the process with a growing, jittered
//     pause until the handler succeeds or the consumer stops: a store being
//     down never dead-letters anything.
//   - An entry goes to the dead-letter stream (DeadLetterStream, with its
//     source stream, entry id, group, original fields and the reason) and is
//     then acknowledged, when it cannot be decoded into an envelope, when
//     the handler marks it bad with Permanent, or when its delivery count
//     in the group's pending list exceeds MaxDeliveries. The delivery count
//     lives in Redis, so an entry that crashes the process on every
//     delivery is counted across restarts; in-process retries do not count.
//     The dead letter is written before the ack, as separate commands (they
//     are in different slots): a crash in between leaves a duplicate dead
//     letter, never a lost entry.
//   - One entry never stops a consumer: Run returns only when ctx ends or
//     its configuration is wrong.
//
// Every read names one stream (one Redis Cluster slot). A round reads all
// streams in one pipeline without BLOCK, then pauses PollInterval if they
// were all empty: one connection per consumer instead of one blocked
// connection per stream (16 job shards and as many event partitions would
// drain a pool of 64), for at most PollInterval of added latency when idle.
//
// Two modes: RunEach calls a handler per entry, up to Concurrency at once;
// RunBatches hands batches of up to Count entries to a handler, reading the
// next batch while the handler stores the current one.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
)

// DeadLetterStream holds the entries no consumer could handle.
const DeadLetterStream = "deadletter"

// Dead-letter reasons, as recorded in the entry and the metric.
const (
	ReasonUndecodable = "undecodable"
	ReasonRejected    = "rejected"
	ReasonDeliveries  = "max_deliveries"
)

// Entry is one decoded stream entry.
type Entry struct {
	// Stream is the stream the entry was read from.
	Stream string
	// ID is the entry's stream id.
	ID string
	// Event is the decoded envelope.
	Event events.Envelope
	// Deliveries is how often the group delivered the entry, this time
	// included.
	Deliveries int64

	values map[string]any
}

// Handler handles one entry; see the package comment for its contract.
type Handler func(ctx context.Context, e Entry) error

// BatchHandler handles a batch of entries in stream order. A Permanent
// error makes the consumer try the entries one by one, to dead-letter only
// those that fail alone.
type BatchHandler func(ctx context.Context, batch []Entry) error

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one no retry can fix: the entry is dead-lettered.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent tells whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// HasRedisError tells whether err is a Redis error reply with the given
// prefix ("BUSYGROUP", "NOGROUP"): the one place error replies are told
// apart.
func HasRedisError(err error, prefix string) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && redis.HasErrorPrefix(rerr, prefix)
}

// CreateGroup creates group on stream at startID ("0" or "$"), creating the
// stream if missing; an existing group is left as it is.
func CreateGroup(ctx context.Context, rdb redis.UniversalClient, stream, group, startID string) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, startID).Err()
	if err != nil && !HasRedisError(err, "BUSYGROUP") {
		return fmt.Errorf("create group %s on %s: %w", group, stream, err)
	}
	return nil
}

// Consumer reads streams through a consumer group.
type Consumer struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger

	// cursor is per stream the id to read after: "0"-based ids walk this
	// consumer's pending entries, ">" reads new ones. Only the reader
	// touches it.
	cursor    map[string]string
	lastClaim time.Time

	running  atomic.Bool
	stopped  atomic.Bool  // Run returned before ctx ended
	lastRead atomic.Int64 // unix nanos of the last successful round
	behindAt atomic.Int64 // unix nanos since when lag > MaxLag, 0 if not
}

// New checks cfg and returns a consumer; Run it with RunEach or RunBatches.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stream consumer config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("stream consumer: redis client is nil")
	}
	return &Consumer{
		cfg:    cfg,
		rdb:    rdb,
		logger: logger.Named("stream").With(zap.String("group", cfg.Group), zap.String("consumer", cfg.Consumer)),
		cursor: make(map[string]string, len(cfg.Streams)),
	}, nil
}

// Config returns the configuration with its defaults filled in.
func (c *Consumer) Config() Config { return c.cfg }

// start marks the consumer running; a consumer runs once at a time, and
// each run starts with the pending walk.
func (c *Consumer) start() error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("stream consumer: already running")
	}
	clear(c.cursor)
	c.lastClaim = time.Time{}
	c.stopped.Store(false)
	c.lastRead.Store(time.Now().UnixNano())
	return nil
}

func (c *Consumer) end(ctx context.Context) {
	c.running.Store(false)
	if ctx.Err() == nil {
		c.stopped.Store(true)
	}
}

// Live fails once the consumer stopped before its context ended.
func (c *Consumer) Live(context.Context) error {
	if c.stopped.Load() {
		return fmt.Errorf("consumer %s of group %s stopped", c.cfg.Consumer, c.cfg.Group)
	}
	return nil
}

// Ready fails while the consumer is not running, while its reads have
// failed for longer than a claim period, or once it has been behind by more
// than MaxLag for longer than LagGrace.
func (c *Consumer) Ready(ctx context.Context) error {
	if err := c.Live(ctx); err != nil {
		return err
	}
	if !c.running.Load() {
		return fmt.Errorf("consumer of group %s is not running", c.cfg.Group)
	}
	if since := time.Since(time.Unix(0, c.lastRead.Load())); since > max(c.cfg.ClaimIdle, 30*time.Second) {
		return fmt.Errorf("group %s: no successful read for %s", c.cfg.Group, since.Round(time.Second))
	}
	if at := c.behindAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > c.cfg.LagGrace {
		return fmt.Errorf("group %s: lag above %d for %s", c.cfg.Group, c.cfg.MaxLag, time.Since(time.Unix(0, at)).Round(time.Second))
	}
	return nil
}

// Register adds the consumer's liveness and readiness checks to r under
// name.
func (c *Consumer) Register(r *health.Registry, name string) {
	r.Live(name, c.Live)
	r.Ready(name, c.Ready)
}

// createGroups creates the group on every stream; a failure is logged, and
// the read that then fails with NOGROUP tries again.
func (c *Consumer) createGroups(ctx context.Context) {
	for _, s := range c.cfg.Streams {
		if err := CreateGroup(ctx, c.rdb, s, c.cfg.Group, c.cfg.StartID); err != nil && ctx.Err() == nil {
			c.logger.Warn("create group failed", zap.String("stream", s), zap.Error(err))
		}
	}
}

// round reads up to count entries from every stream, claiming idle
// entries first when due, and returns them decoded and screened: entries
// to dead-letter are dead-lettered and acknowledged here. pending tells
// whether any stream was still walking this consumer's pending entries.
func (c *Consumer) round(ctx context.Context, count int) (batch []Entry, pending bool, err error) {
	if len(c.cursor) == 0 {
		for _, s := range c.cfg.Streams {
			c.cursor[s] = "0"
		}
	}
	walking := false
	for _, cur := range c.cursor {
		walking = walking || cur != ">"
	}
	var redelivered []redis.XStream
	// No claims during the pending walk: a claimed entry joins this
	// consumer's pending list, and the walk would hand it over a second
	// time in the same round.
	if !walking && time.Since(c.lastClaim) >= c.cfg.ClaimIdle/2 {
		claimed, more, err := c.claim(ctx, count)
		if err != nil {
			return nil, false, err
		}
		if !more {
			// Otherwise claim again next round: a dead consumer's entries
			// should not wait another ClaimIdle/2.
			c.lastClaim = time.Now()
		}
		redelivered = append(redelivered, claimed...)
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.XStreamSliceCmd, len(c.cfg.Streams))
	for i, s := range c.cfg.Streams {
		pending = pending || c.cursor[s] != ">"
		cmds[i] = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: c.cfg.Group, Consumer: c.cfg.Consumer, Streams: []string{s, c.cursor[s]},
			Count: int64(count), Block: -1,
		})
	}
	_, _ = pipe.Exec(ctx)
	var fresh []redis.XStream
	for i, s := range c.cfg.Streams {
		res, err := cmds[i].Result()
		if errors.Is(err, redis.Nil) {
			err, res = nil, nil
		}
		if err != nil {
			if HasRedisError(err, "NOGROUP") {
				// The stream or the group was deleted under us.
				c.createGroups(ctx)
			}
			// Entries read from the streams before stay pending with this
			// consumer; the pending walk brings them back.
			return nil, pending, fmt.Errorf("xreadgroup %s: %w", s, err)
		}
		var msgs []redis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if c.cursor[s] == ">" {
			fresh = append(fresh, redis.XStream{Stream: s, Messages: msgs})
			continue
		}
		if len(msgs) == 0 {
			// The pending walk of this stream is over.
			c.cursor[s] = ">"
			continue
		}
		c.cursor[s] = msgs[len(msgs)-1].ID
		redelivered = append(redelivered, redis.XStream{Stream: s, Messages: msgs})
	}
	c.lastRead.Store(time.Now().UnixNano())
	counts, err := c.deliveries(ctx, redelivered)
	if err != nil {
		return nil, pending, err
	}
	for _, st := range redelivered {
		batch = append(batch, c.screen(ctx, st.Stream, st.Messages, counts)...)
	}
	for _, st := range fresh {
		// A new entry was delivered once: now.
		batch = append(batch, c.screen(ctx, st.Stream, st.Messages, nil)...)
	}
	return batch, pending, nil
}

// claim takes over up to count entries per stream that stayed pending for
// longer than ClaimIdle. more tells whether a stream may have more.
func (c *Consumer) claim(ctx context.Context, count int) (out []redis.XStream, more bool, err error) {
	for _, s := range c.cfg.Streams {
		msgs, _, err := c.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: s, Group: c.cfg.Group, Consumer: c.cfg.Consumer,
			MinIdle: c.cfg.ClaimIdle, Start: "0-0", Count: int64(count),
		}).Result()
		if err != nil {
			if HasRedisError(err, "NOGROUP") {
				c.createGroups(ctx)
			}
			return out, false, fmt.Errorf("xautoclaim %s: %w", s, err)
		}
		if len(msgs) == count {
			more = true
		}
		if len(msgs) > 0 {
			claimedTotal.WithLabelValues(s, c.cfg.Group).Add(float64(len(msgs)))
			c.logger.Info("claimed idle entries", zap.String("stream", s), zap.Int("entries", len(msgs)))
			out = append(out, redis.XStream{Stream: s, Messages: msgs})
		}
	}
	return out, more, nil
}

// deliveries looks up the delivery counts of redelivered entries in the
// pending list (XPENDING), keyed by stream and id.
func (c *Consumer) deliveries(ctx context.Context, sts []redis.XStream) (map[[2]string]int64, error) {
	if len(sts) == 0 {
		return nil, nil
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.XPendingExtCmd, 0, len(sts))
	names := make([]string, 0, len(sts))
	for _, st := range sts {
		if len(st.Messages) == 0 {
			continue
		}
		lo, hi := st.Messages[0].ID, st.Messages[0].ID
		for _, m := range st.Messages {
			if CompareIDs(m.ID, lo) < 0 {
				lo = m.ID
			}
			if CompareIDs(m.ID, hi) > 0 {
				hi = m.ID
			}
		}
		names = append(names, st.Stream)
		cmds = append(cmds, pipe.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: st.Stream, Group: c.cfg.Group, Start: lo, End: hi,
			Count: int64(len(st.Messages)), Consumer: c.cfg.Consumer,
		}))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("xpending: %w", err)
	}
	counts := make(map[[2]string]int64)
	for i, cmd := range cmds {
		for _, p := range cmd.Val() {
			counts[[2]string{names[i], p.ID}] = p.RetryCount
		}
	}
	return counts, nil
}

// CompareIDs orders two stream ids (-1, 0, 1); "" is before every id.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

func splitID(id string) (ms, seq uint64) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			ms, _ = strconv.ParseUint(id[:i], 10, 64)
			seq, _ = strconv.ParseUint(id[i+1:], 10, 64)
			return ms, seq
		}
	}
	ms, _ = strconv.ParseUint(id, 10, 64)
	return ms, 0
}

// screen decodes entries and dead-letters those that cannot be decoded or
// were delivered too often. counts nil means every entry is delivered for
// the first time.
func (c *Consumer) screen(ctx context.Context, stream string, msgs []redis.XMessage, counts map[[2]string]int64) []Entry {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		n := int64(1)
		if counts != nil {
			// An entry missing from the pending list was acknowledged in
			// the meantime (by a consumer we claimed it from): handling it
			// again is harmless.
			n = max(counts[[2]string{stream, m.ID}], 1)
		}
		if n > int64(c.cfg.MaxDeliveries) {
			c.deadLetter(ctx, stream, m.ID, m.Values, n, ReasonDeliveries, fmt.Errorf("delivered %d times, more than %d", n, c.cfg.MaxDeliveries))
			continue
		}
		e, err := Decode(m.Values)
		if err != nil {
			c.deadLetter(ctx, stream, m.ID, m.Values, n, ReasonUndecodable, err)
			continue
		}
		out = append(out, Entry{Stream: stream, ID: m.ID, Event: e, Deliveries: n, values: m.Values})
	}
	return out
}

// Decode turns the fields of a stream entry into an envelope.
func Decode(values map[string]any) (events.Envelope, error) {
	return events.FromStreamValues(values)
}

// deadLetter appends the entry to DeadLetterStream, then acknowledges it.
// Either failing leaves the entry pending, to come back through the
// pending walk or a claim.
func (c *Consumer) deadLetter(ctx context.Context, stream, id string, values map[string]any, deliveries int64, reason string, cause error) {
	logger := c.logger.With(zap.String("stream", stream), zap.String("entry_id", id), zap.String("reason", reason))
	fields, err := json.Marshal(values)
	if err != nil {
		fields = []byte("{}")
	}
	// Like an ack after a handler, a dead letter must land even if ctx
	// just ended.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: DeadLetterStream, MaxLen: events.DefaultMaxLen, Approx: true,
		Values: map[string]any{
			"stream": stream, "id": id, "group": c.cfg.Group, "consumer": c.cfg.Consumer,
			"reason": reason, "error": cause.Error(), "deliveries": deliveries, "fields": string(fields),
		},
	}).Err(); err != nil {
		logger.Warn("dead-letter failed, entry stays pending", zap.Error(err))
		return
	}
	deadLettersTotal.WithLabelValues(stream, c.cfg.Group, reason).Inc()
	logger.Error("entry dead-lettered", zap.Int64("deliveries", deliveries), zap.Error(cause))
	if err := c.rdb.XAck(ctx, stream, c.cfg.Group, id).Err(); err != nil {
		logger.Warn("ack dead-lettered entry failed", zap.Error(err))
	}
}

// handle runs f until it succeeds, fails permanently, or ctx ends, pausing
// between failures. For as long as it runs (a slow handler, or retries
// while a store is down) it keeps the entries owned by this consumer: every
// ClaimIdle/3 it resets their idle time (XCLAIM JUSTID, which does not
// count as a delivery), so no consumer claims an entry that is being
// handled and handles it a second time, and ClaimIdle need not exceed the
// longest handler run, only a few keep-alive periods. It returns f's last
// error (nil on success).
func (c *Consumer) handle(ctx context.Context, entries []Entry, what []zap.Field, f func() error) error {
	stop := c.keepOwned(ctx, entries)
	defer stop()
	for failures := 0; ; {
		err := f()
		if err == nil || IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		failures++
		d := c.cfg.Backoff.Delay(failures)
		handlerFailuresTotal.WithLabelValues(c.cfg.Group).Inc()
		c.logger.Warn("handler failed, will retry", append(what,
			zap.Int("failures", failures), zap.Duration("retry_in", d), zap.Error(err))...)
		if !backoff.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// keepOwned touches entries every ClaimIdle/3 until the returned stop is
// called (which waits for the toucher to end) or ctx ends.
func (c *Consumer) keepOwned(ctx context.Context, entries []Entry) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(c.cfg.ClaimIdle / 3)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				c.touch(ctx, entries)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// touch resets the idle time of entries this consumer holds.
func (c *Consumer) touch(ctx context.Context, entries []Entry) {
	ids := make(map[string][]string)
	for _, e := range entries {
		ids[e.Stream] = append(ids[e.Stream], e.ID)
	}
	pipe := c.rdb.Pipeline()
	for s, list := range ids {
		pipe.XClaimJustID(ctx, &redis.XClaimArgs{Stream: s, Group: c.cfg.Group, Consumer: c.cfg.Consumer, Messages: list})
	}
	if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
		// The next touch tries again; only a run of failures longer than
		// ClaimIdle lets another consumer claim the entries.
		c.logger.Warn("keep entries owned failed", zap.Error(err))
	}
}

// ack acknowledges entries, one command per stream.
func (c *Consumer) ack(ctx context.Context, batch []Entry) {
	if len(batch) == 0 {
		return
	}
	// The effect is durable: acknowledge even if ctx just ended, or the
	// entries would be handled again after a restart for nothing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ids := make(map[string][]string)
	for _, e := range batch {
		ids[e.Stream] = append(ids[e.Stream], e.ID)
	}
	pipe := c.rdb.Pipeline()
	for s, list := range ids {
		pipe.XAck(ctx, s, c.cfg.Group, list...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// They stay pending with this consumer and come back through the
		// pending walk or a claim; handlers are idempotent.
		c.logger.Warn("ack failed", zap.Int("entries", len(batch)), zap.Error(err))
	}
}

// readFailed logs a failed round and pauses; it returns false when ctx
// ended.
func (c *Consumer) readFailed(ctx context.Context, failures int, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	readFailuresTotal.WithLabelValues(c.cfg.Group).Inc()
	d := c.cfg.Backoff.Delay(failures)
	c.logger.Warn("read failed", zap.Int("failures", failures), zap.Duration("retry_in", d), zap.Error(err))
	return backoff.Sleep(ctx, d)
}
