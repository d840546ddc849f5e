package events

import (
	"context"
	"errors"
	"fmt"

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
