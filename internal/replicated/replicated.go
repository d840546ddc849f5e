// Package replicated is what lets certfleet lose a Redis master: it makes
// a write reach replicas before certfleet acknowledges it (Writer), and a
// cluster client find the promoted replica at once (FollowFailover).
//
// Redis replicates asynchronously. A master that dies
// after answering a write but before sending it to a replica loses that
// write when the replica is promoted. Redis 7.0 has no WAITAOF, so where
// certfleet promises no loss (a scan result published before its job is
// acknowledged, a domain add answered 201) it sends WAIT after the write
// and acknowledges only once enough replicas hold it.
//
// WAIT counts the replicas that acknowledged the last write of the
// connection it is sent on, on the node it is sent to. A Writer therefore
// sends the write and the WAIT in one pipeline on one connection to the
// master that owns the write's slot: on Redis Cluster that is the node
// owning the key (the cluster client would send a keyless WAIT to any
// node), on a plain Redis its one master.
package replicated

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

// DefaultTimeout is how long a write waits for its replicas when
// Config.Timeout is not set.
const DefaultTimeout = time.Second

// Config says how many replicas must hold a write before it is
// acknowledged.
type Config struct {
	// Replicas is how many replicas of the master that took a write must
	// have it before certfleet acknowledges it (WAIT numreplicas). 0 does
	// not wait: right for a single Redis without replicas, where a crash
	// loses what the append-only file had not written anyway.
	Replicas int
	// Timeout bounds each wait (WAIT timeout). A write that reached fewer
	// replicas in time is reported as ErrNotReplicated and not
	// acknowledged: its source retries it. Default DefaultTimeout.
	Timeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Replicas < 0 {
		errs = append(errs, fmt.Errorf("replicas to wait for must not be negative, got %d", c.Replicas))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("replica wait timeout must not be negative, got %s", c.Timeout))
	}
	return errors.Join(errs...)
}

// ErrNotReplicated is a write the master took but fewer replicas than
// asked acknowledged within the timeout. The write may survive or not: the
// caller must not acknowledge what depends on it, and retries.
var ErrNotReplicated = errors.New("write not replicated in time")

// Outcomes of a wait, counted by certfleet_redis_wait_total.
const (
	outcomeOK    = "ok"
	outcomeShort = "short"
	outcomeError = "error"
)

var (
	waitsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_redis_wait_total",
		Help: "Writes waited on for replicas (WAIT), by outcome: ok, short (fewer replicas than asked in time), error (the write or the wait failed).",
	}, []string{"outcome"})
	waitSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "certfleet_redis_wait_seconds",
		Help:    "Duration of a write and its WAIT for replicas.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14), // 0.2ms .. 1.6s
	})
)

// Writer sends writes that must reach replicas before they are
// acknowledged. One with Replicas 0 writes through the client as usual and
// does not wait.
type Writer struct {
	cfg Config
	rdb redis.UniversalClient
}

// New returns a Writer writing through rdb, a *redis.Client or a
// *redis.ClusterClient.
func New(cfg Config, rdb redis.UniversalClient) (*Writer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replicated: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("replicated: redis client is nil")
	}
	return &Writer{cfg: cfg, rdb: rdb}, nil
}

// Waits reports whether writes wait for replicas.
func (w *Writer) Waits() bool { return w.cfg.Replicas > 0 }

// Pipelined queues fn's commands and sends them, then WAIT, in one
// pipeline on one connection to the master owning key's slot. Every
// command must touch keys of that slot only. It returns the commands (each
// with its own answer) and the first error: a command's, the connection's,
// or ErrNotReplicated (wrapped) when the WAIT fell short. Without waiting
// it is rdb.Pipelined.
func (w *Writer) Pipelined(ctx context.Context, key string, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	if !w.Waits() {
		return w.rdb.Pipelined(ctx, fn)
	}
	started := time.Now()
	cmds, err := w.pipelined(ctx, key, fn)
	waitSeconds.Observe(time.Since(started).Seconds())
	switch {
	case errors.Is(err, ErrNotReplicated):
		waitsTotal.WithLabelValues(outcomeShort).Inc()
	case err != nil:
		waitsTotal.WithLabelValues(outcomeError).Inc()
	default:
		waitsTotal.WithLabelValues(outcomeOK).Inc()
	}
	return cmds, err
}

func (w *Writer) pipelined(ctx context.Context, key string, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	node, cluster, err := w.master(ctx, key)
	if err != nil {
		return nil, err
	}
	var wait *redis.Cmd
	cmds, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		if err := fn(p); err != nil {
			return err
		}
		wait = p.Do(ctx, "WAIT", w.cfg.Replicas, w.cfg.Timeout.Milliseconds())
		return nil
	})
	if err != nil {
		if cluster != nil && layoutChanged(err) {
			// The slot moved (a failover promoted a replica, or a
			// resharding): learn the new layout so the retry goes there.
			cluster.ReloadState(ctx)
		}
		return cmds, err
	}
	// The WAIT is the pipeline's last command; the caller sees its own.
	cmds = cmds[:len(cmds)-1]
	if got, _ := wait.Int64(); got < int64(w.cfg.Replicas) {
		return cmds, fmt.Errorf("%w: %d of %d replicas within %s", ErrNotReplicated, got, w.cfg.Replicas, w.cfg.Timeout)
	}
	return cmds, nil
}

// master is the client of the master owning key's slot, and the cluster
// client when rdb is one.
func (w *Writer) master(ctx context.Context, key string) (*redis.Client, *redis.ClusterClient, error) {
	switch c := w.rdb.(type) {
	case *redis.Client:
		return c, nil, nil
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			c.ReloadState(ctx)
			return nil, nil, fmt.Errorf("master of %s: %w", key, err)
		}
		return node, c, nil
	default:
		return nil, nil, fmt.Errorf("replicated: waiting for replicas needs a *redis.Client or *redis.ClusterClient, got %T", w.rdb)
	}
}

// layoutChanged reports an error that means the node no longer serves the
// slot, or is gone: the cluster's layout changed, or is about to.
func layoutChanged(err error) bool {
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	if _, ok := redis.IsAskError(err); ok {
		return true
	}
	if redis.HasErrorPrefix(err, "CLUSTERDOWN") || redis.HasErrorPrefix(err, "READONLY") {
		return true
	}
	// The node does not answer: refused, reset, timed out, or closed.
	var opErr *net.OpError
	return errors.As(err, &opErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// RunScript runs script as script.Run does (EVALSHA, then EVAL when the
// node does not have it), and waits for replicas as Pipelined does:
// keys[0] names the slot. Without waiting it is script.Run.
func (w *Writer) RunScript(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if !w.Waits() {
		return script.Run(ctx, w.rdb, keys, args...)
	}
	if len(keys) == 0 {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errors.New("replicated: a script waited on for replicas needs a key to find its master"))
		return cmd
	}
	run := func(eval func(redis.Pipeliner) *redis.Cmd) (*redis.Cmd, error) {
		var cmd *redis.Cmd
		_, err := w.Pipelined(ctx, keys[0], func(p redis.Pipeliner) error {
			cmd = eval(p)
			return nil
		})
		return cmd, err
	}
	cmd, err := run(func(p redis.Pipeliner) *redis.Cmd { return script.EvalSha(ctx, p, keys, args...) })
	if cmd != nil && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		// The script did not run: send it whole (the node caches it).
		cmd, err = run(func(p redis.Pipeliner) *redis.Cmd { return script.Eval(ctx, p, keys, args...) })
	}
	if cmd == nil {
		cmd = redis.NewCmd(ctx)
	}
	if err != nil && cmd.Err() == nil {
		// The script ran, but the wait fell short or the connection
		// failed after it: the caller must not acknowledge it.
		cmd.SetErr(err)
	}
	return cmd
}

// FollowFailover makes cc reload the cluster's layout as soon as a command
// fails because its node is gone or no longer serves the slot. go-redis
// reloads at once on MOVED, but a node that does not answer at all (a
// killed master) is only forgotten at the next periodic reload
// (ClusterStateReloadInterval, 60 s by default): until then every command
// for its slots fails, even after its replica was promoted. Call it once,
// before use.
func FollowFailover(cc *redis.ClusterClient) { cc.AddHook(followHook{cc}) }

type followHook struct{ cc *redis.ClusterClient }

func (h followHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h followHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(ctx, err)
		return err
	}
}

func (h followHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(ctx, err)
		return err
	}
}

// check reloads the layout (in the background, at most every 200 ms)
// after an error that says it changed.
func (h followHook) check(ctx context.Context, err error) {
	if err != nil && !errors.Is(err, redis.Nil) && layoutChanged(err) {
		h.cc.ReloadState(ctx)
	}
}
