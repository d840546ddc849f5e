package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultMaxLen caps every stream at about this many entries (XADD MAXLEN ~)
// so that a stalled consumer cannot fill Redis' memory. It is far above what
// the consumers hold pending in normal operation.
const DefaultMaxLen = 2_000_000

// Publisher appends events to Redis streams.
type Publisher struct {
	pub *redisstream.Publisher
}

// NewPublisher returns a publisher writing through rdb.
func NewPublisher(rdb redis.UniversalClient, logger *zap.Logger) (*Publisher, error) {
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:        rdb,
		DefaultMaxlen: DefaultMaxLen,
	}, NewWatermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	return &Publisher{pub: pub}, nil
}

// Publish appends the events to stream, in order.
func (p *Publisher) Publish(stream string, evs ...Envelope) error {
	msgs := make([]*message.Message, 0, len(evs))
	for _, e := range evs {
		m, err := e.Message()
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := p.pub.Publish(stream, msgs...); err != nil {
		return fmt.Errorf("publish to %s: %w", stream, err)
	}
	return nil
}

// SubscriberConfig configures a consumer-group subscriber.
type SubscriberConfig struct {
	// Group is the consumer group, e.g. "projector" or the agent's region.
	Group string
	// Consumer names this process inside the group; unique per replica.
	Consumer string
	// ClaimIdle is how long an entry may stay pending with a crashed
	// consumer before another consumer of the group claims it. Default 30s.
	ClaimIdle time.Duration
}

// Handler applies one event. It must be idempotent: an event may arrive
// more than once. Returning an error leaves the entry pending, so it is
// delivered again.
type Handler func(ctx context.Context, e Envelope) error

// Subscribe consumes stream through a consumer group until ctx is done,
// calling h for each event and acknowledging it only after h succeeded. An
// entry that cannot be decoded is logged and acknowledged, so that one bad
// entry does not stop the stream. It returns when ctx is cancelled, after
// the in-flight event is handled.
func Subscribe(ctx context.Context, rdb redis.UniversalClient, cfg SubscriberConfig, stream string, h Handler, logger *zap.Logger) error {
	if cfg.Group == "" || cfg.Consumer == "" {
		return errors.New("subscribe: group and consumer are required")
	}
	if cfg.ClaimIdle == 0 {
		cfg.ClaimIdle = 30 * time.Second
	}
	logger = logger.With(zap.String("stream", stream), zap.String("group", cfg.Group))
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:                        rdb,
		Consumer:                      cfg.Consumer,
		ConsumerGroup:                 cfg.Group,
		OldestId:                      "0",
		BlockTime:                     time.Second,
		NackResendSleep:               time.Second,
		ClaimInterval:                 cfg.ClaimIdle / 3,
		MaxIdleTime:                   cfg.ClaimIdle,
		DisableIndefiniteInitialBlock: true,
		// Stop at once when ctx ends instead of sleeping and logging.
		ShouldStopOnReadErrors: func(err error) bool { return errors.Is(err, context.Canceled) },
	}, NewWatermillLogger(logger))
	if err != nil {
		return fmt.Errorf("new subscriber for %s: %w", stream, err)
	}
	// Not sub.Close(): it closes rdb, which belongs to the caller and is
	// shared with the process's other components. The subscriber's
	// goroutines stop with ctx; msgs is closed when they have.
	msgs, err := sub.Subscribe(ctx, stream)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", stream, err)
	}
	defer func() {
		for m := range msgs {
			m.Nack()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			e, err := FromMessage(m)
			if err != nil {
				logger.Error("dropping undecodable entry", zap.String("message_uuid", m.UUID), zap.Error(err))
				m.Ack()
				continue
			}
			if err := h(m.Context(), e); err != nil {
				logger.Warn("handler failed, will retry", zap.String("event_id", e.EventID.String()), zap.String("event", e.Name), zap.Error(err))
				m.Nack()
				continue
			}
			m.Ack()
		}
	}
}

// watermillLogger adapts zap to watermill's logger interface.
type watermillLogger struct{ l *zap.Logger }

// NewWatermillLogger returns a watermill logger writing to l.
func NewWatermillLogger(l *zap.Logger) watermill.LoggerAdapter {
	return watermillLogger{l: l.Named("watermill")}
}

func fields(f watermill.LogFields) []zap.Field {
	out := make([]zap.Field, 0, len(f))
	for k, v := range f {
		out = append(out, zap.Any(k, v))
	}
	return out
}

func (w watermillLogger) Error(msg string, err error, f watermill.LogFields) {
	// watermill's readers report the end of their context as an error,
	// from goroutines that may outlive Subscribe by a moment; it is the
	// normal way to stop.
	if errors.Is(err, context.Canceled) {
		w.l.Debug(msg, append(fields(f), zap.Error(err))...)
		return
	}
	w.l.Error(msg, append(fields(f), zap.Error(err))...)
}
func (w watermillLogger) Info(msg string, f watermill.LogFields)  { w.l.Debug(msg, fields(f)...) }
func (w watermillLogger) Debug(msg string, f watermill.LogFields) { w.l.Debug(msg, fields(f)...) }
func (w watermillLogger) Trace(msg string, f watermill.LogFields) {}
func (w watermillLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return watermillLogger{l: w.l.With(fields(f)...)}
}
