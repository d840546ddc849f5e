package schema

import (
	"context"
	"io"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
)

// Lazy is the ClickHouse connection of a role that started while
// ClickHouse did not answer: the role serves what needs only Redis (the
// APIs, the schedule, the views) at once, and Lazy opens the connection
// in the background, retrying until it succeeds. Until then every call
// fails with health.ErrNotConnected (a 503 on the APIs, a retry in the
// sink, readiness failing), as during an outage of a connection opened at
// start; afterwards every call goes to the opened connection.
type Lazy struct {
	mu     sync.RWMutex
	conn   driver.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

var _ driver.Conn = (*Lazy)(nil)

// OpenLazy calls open in the background until it returns a connection,
// pausing after each failure as retry says, and returns at once. open is
// what the role would have opened at start (connect and migrate).
func OpenLazy(ctx context.Context, open func(context.Context) (driver.Conn, error), retry backoff.Policy, logger *zap.Logger) *Lazy {
	ctx, cancel := context.WithCancel(ctx)
	l := &Lazy{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for failures := 1; ; failures++ {
			conn, err := open(ctx)
			if err == nil {
				l.mu.Lock()
				l.conn = conn
				l.mu.Unlock()
				logger.Info("clickhouse connected", zap.Int("attempts", failures))
				return
			}
			if ctx.Err() != nil {
				return
			}
			d := retry.Delay(failures)
			logger.Warn("clickhouse not answering, will retry", zap.Int("failures", failures), zap.Duration("retry_in", d), zap.Error(err))
			if !backoff.Sleep(ctx, d) {
				return
			}
		}
	}()
	return l
}

// current is the opened connection, nil until there is one.
func (l *Lazy) current() driver.Conn {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.conn
}

// unwrap is the connection behind conn when conn is a Lazy that opened
// one (so that the cluster's local tables are named as on a connection
// opened at start), conn otherwise.
func unwrap(conn driver.Conn) driver.Conn {
	if l, ok := conn.(*Lazy); ok {
		if c := l.current(); c != nil {
			return c
		}
	}
	return conn
}

// Contributors is empty, as the driver's.
func (l *Lazy) Contributors() []string { return nil }

// ServerVersion asks the opened connection.
func (l *Lazy) ServerVersion() (*driver.ServerVersion, error) {
	if c := l.current(); c != nil {
		return c.ServerVersion()
	}
	return nil, health.ErrNotConnected
}

// Select runs on the opened connection.
func (l *Lazy) Select(ctx context.Context, dest any, query string, args ...any) error {
	if c := l.current(); c != nil {
		return c.Select(ctx, dest, query, args...)
	}
	return health.ErrNotConnected
}

// Query runs on the opened connection.
func (l *Lazy) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	if c := l.current(); c != nil {
		return c.Query(ctx, query, args...)
	}
	return nil, health.ErrNotConnected
}

// QueryRow runs on the opened connection.
func (l *Lazy) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	if c := l.current(); c != nil {
		return c.QueryRow(ctx, query, args...)
	}
	return notConnectedRow{}
}

// PrepareBatch runs on the opened connection.
func (l *Lazy) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	if c := l.current(); c != nil {
		return c.PrepareBatch(ctx, query, opts...)
	}
	return nil, health.ErrNotConnected
}

// Exec runs on the opened connection.
func (l *Lazy) Exec(ctx context.Context, query string, args ...any) error {
	if c := l.current(); c != nil {
		return c.Exec(ctx, query, args...)
	}
	return health.ErrNotConnected
}

// QueryFormat runs on the opened connection.
func (l *Lazy) QueryFormat(ctx context.Context, format string, query string, args ...any) (io.ReadCloser, error) {
	if c := l.current(); c != nil {
		return c.QueryFormat(ctx, format, query, args...)
	}
	return nil, health.ErrNotConnected
}

// InsertFormat runs on the opened connection.
func (l *Lazy) InsertFormat(ctx context.Context, format string, query string, data io.Reader) error {
	if c := l.current(); c != nil {
		return c.InsertFormat(ctx, format, query, data)
	}
	return health.ErrNotConnected
}

// AsyncInsert runs on the opened connection.
//
//nolint:staticcheck // the driver's interface still has it
func (l *Lazy) AsyncInsert(ctx context.Context, query string, wait bool, args ...any) error {
	if c := l.current(); c != nil {
		return c.AsyncInsert(ctx, query, wait, args...) //nolint:staticcheck
	}
	return health.ErrNotConnected
}

// Ping pings the opened connection.
func (l *Lazy) Ping(ctx context.Context) error {
	if c := l.current(); c != nil {
		return c.Ping(ctx)
	}
	return health.ErrNotConnected
}

// Stats are the opened connection's, zero before.
func (l *Lazy) Stats() driver.Stats {
	if c := l.current(); c != nil {
		return c.Stats()
	}
	return driver.Stats{}
}

// Close stops the retries and closes the opened connection.
func (l *Lazy) Close() error {
	l.cancel()
	<-l.done
	if c := l.current(); c != nil {
		return c.Close()
	}
	return nil
}

// notConnectedRow is QueryRow's answer before the connection is opened.
type notConnectedRow struct{}

func (notConnectedRow) Err() error           { return health.ErrNotConnected }
func (notConnectedRow) Scan(...any) error    { return health.ErrNotConnected }
func (notConnectedRow) ScanStruct(any) error { return health.ErrNotConnected }
