package projector

// View snapshots: the expiration views copied into ClickHouse
// (schema.ViewSnapshot), so that a rebuild restores the latest snapshot
// and replays only the events after its watermark instead of the whole
// event store.
//
// The watermark is taken before any view is read: the time of the oldest
// entry of the projector's streams it had not acknowledged then (pending
// or undelivered; stream.OldestUnacknowledged), or the start when it had
// acknowledged all. The projector acknowledges an entry only once its
// view is written, so every event the snapshot may lack entered a stream
// at or after the watermark, and was stored by the sink after that: the
// replay takes every event that occurred or was stored from the watermark
// on (schema.ReplayEventsSince), which also brings an event published
// long after it occurred. An event applied while the views are read may
// or may not be in the snapshot; replayed, the views' version gating
// makes it harmless. The replay starts an overlap earlier
// (RebuildConfig.Overlap) for clocks that disagree.
//
// Each view is read with its version in one atomic step (snapshotScript),
// so a snapshot is consistent per domain. A snapshot is used only once
// every view of it is stored: its row in view_snapshots goes in last.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/lease"
	"github.com/certfleet/certfleet/schema"
)

// SnapshotLeaseKey is the lease one process holds while it takes a
// snapshot of the views.
const SnapshotLeaseKey = "lease:views:snapshot"

// DefaultReplayOverlap is how much earlier than a snapshot's watermark the
// replay after it starts by default.
const DefaultReplayOverlap = 15 * time.Minute

var (
	snapshotViews = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_view_snapshot_views",
		Help: "Views in the latest view snapshot this process took.",
	})
	snapshotSeconds = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_view_snapshot_duration_seconds",
		Help: "How long the latest view snapshot this process took lasted.",
	})
)

// ErrSnapshotBusy is returned by TakeSnapshot when another process holds
// the snapshot lease.
var ErrSnapshotBusy = errors.New("another process is taking a view snapshot")

// SnapshotConfig configures the snapshots of the views.
type SnapshotConfig struct {
	// Interval is how old the latest complete snapshot may grow before
	// the next is taken. Required for Run.
	Interval time.Duration
	// Token names this process as the holder of the snapshot lease.
	// Default: a random one.
	Token string
	// LeaseTTL is how long the lease lives without renewal; it is renewed
	// after every batch of views. Default 2m.
	LeaseTTL time.Duration
	// BatchSize is the most views stored in one insert. Default 5000.
	BatchSize int
	// Check is how often Run looks at the latest snapshot's age. Default
	// a minute, or Interval when shorter.
	Check time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *SnapshotConfig) setDefaults() {
	if c.Token == "" {
		c.Token = lease.NewToken()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 2 * time.Minute
	}
	if c.BatchSize == 0 {
		c.BatchSize = 5000
	}
	if c.Check == 0 {
		c.Check = min(time.Minute, c.Interval)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Snapshotter takes snapshots of the views into ClickHouse.
type Snapshotter struct {
	cfg    SnapshotConfig
	rdb    redis.UniversalClient
	conn   driver.Conn
	logger *zap.Logger
}

// NewSnapshotter returns a snapshotter reading the views through rdb and
// storing them through conn, whose database must be migrated.
func NewSnapshotter(cfg SnapshotConfig, rdb redis.UniversalClient, conn driver.Conn, logger *zap.Logger) (*Snapshotter, error) {
	if rdb == nil || conn == nil {
		return nil, errors.New("snapshotter: redis client and clickhouse connection are required")
	}
	if cfg.Interval < 0 || cfg.LeaseTTL < 0 || cfg.BatchSize < 0 || cfg.Check < 0 {
		return nil, errors.New("snapshotter config: durations and sizes must not be negative")
	}
	cfg.setDefaults()
	return &Snapshotter{cfg: cfg, rdb: rdb, conn: conn, logger: logger.Named("projector").Named("snapshot")}, nil
}

// Run takes a snapshot whenever the latest complete one is older than
// Interval, until ctx is done. Every replica may run it: the lease has one
// take each snapshot, and the others then find it fresh. A failed snapshot
// is logged and taken again at the next check.
func (s *Snapshotter) Run(ctx context.Context) error {
	if s.cfg.Interval <= 0 {
		return errors.New("snapshotter: interval must be positive")
	}
	s.logger.Info("view snapshots started", zap.Duration("interval", s.cfg.Interval))
	t := time.NewTicker(s.cfg.Check)
	defer t.Stop()
	for {
		if err := s.maybeTake(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("view snapshot failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Snapshotter) maybeTake(ctx context.Context) error {
	latest, ok, err := schema.LatestSnapshot(ctx, s.conn)
	if err != nil {
		return err
	}
	if ok && s.cfg.Now().Sub(latest.StartedAt) < s.cfg.Interval {
		return nil
	}
	_, err = s.Take(ctx)
	if errors.Is(err, ErrSnapshotBusy) {
		return nil
	}
	return err
}

// Take takes a snapshot of every view now, under the snapshot lease, and
// then drops the snapshots older than the one before it. It returns
// ErrSnapshotBusy when another process holds the lease. A snapshot cut
// short (an error, a lost lease, a crash) is never used.
func (s *Snapshotter) Take(ctx context.Context) (schema.ViewSnapshot, error) {
	ok, err := lease.Acquire(ctx, s.rdb, SnapshotLeaseKey, s.cfg.Token, s.cfg.LeaseTTL)
	if err != nil {
		return schema.ViewSnapshot{}, err
	}
	if !ok {
		return schema.ViewSnapshot{}, ErrSnapshotBusy
	}
	defer func() { _, _ = lease.Release(context.WithoutCancel(ctx), s.rdb, SnapshotLeaseKey, s.cfg.Token) }()

	prev, hadPrev, err := schema.LatestSnapshot(ctx, s.conn)
	if err != nil {
		return schema.ViewSnapshot{}, err
	}
	started := s.cfg.Now().UTC()
	wm, err := Watermark(ctx, s.rdb, started)
	if err != nil {
		return schema.ViewSnapshot{}, err
	}
	snap := schema.ViewSnapshot{ID: uint64(started.UnixMilli()), StartedAt: started, WatermarkMS: wm}
	if hadPrev && snap.ID <= prev.ID {
		return schema.ViewSnapshot{}, fmt.Errorf("view snapshot: clock at %s is not after the latest snapshot %d", started, prev.ID)
	}
	batch := make([]schema.SnapshotView, 0, s.cfg.BatchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := schema.InsertSnapshotViews(ctx, s.conn, snap.ID, batch); err != nil {
			return err
		}
		snap.Views += uint64(len(batch))
		batch = batch[:0]
		held, err := lease.Renew(ctx, s.rdb, SnapshotLeaseKey, s.cfg.Token, s.cfg.LeaseTTL)
		if err != nil {
			return err
		}
		if !held {
			return errors.New("view snapshot: lease lost")
		}
		return nil
	}
	err = scanViewKeys(ctx, s.rdb, func(ctx context.Context, c redis.UniversalClient, keys []string) error {
		views, err := readRawViews(ctx, c, keys)
		if err != nil {
			return err
		}
		for _, v := range views {
			batch = append(batch, v)
			if len(batch) == s.cfg.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return schema.ViewSnapshot{}, fmt.Errorf("view snapshot %d: %w", snap.ID, err)
	}
	snap.CompletedAt = s.cfg.Now().UTC()
	if err := schema.CompleteSnapshot(ctx, s.conn, snap); err != nil {
		return schema.ViewSnapshot{}, err
	}
	snapshotViews.Set(float64(snap.Views))
	snapshotSeconds.Set(snap.CompletedAt.Sub(started).Seconds())
	s.logger.Info("view snapshot taken", zap.Uint64("snapshot", snap.ID), zap.Uint64("views", snap.Views),
		zap.Time("watermark", time.UnixMilli(wm).UTC()), zap.Duration("took", snap.CompletedAt.Sub(started)))
	// The snapshot before stays, for a rebuild that finds this one gone.
	if hadPrev {
		if _, err := schema.DropSnapshotsBefore(ctx, s.conn, prev.ID); err != nil {
			s.logger.Warn("drop old view snapshots", zap.Error(err))
		}
	}
	return snap, nil
}

// Watermark is the time (Unix ms) of the oldest entry of the projector's
// streams its group has not acknowledged, or now when it has
// acknowledged all: every event applied to the views before it.
func Watermark(ctx context.Context, rdb redis.UniversalClient, now time.Time) (int64, error) {
	wm := now.UnixMilli()
	for _, s := range (Config{}).streamConfig().Streams {
		_, ms, ok, err := stream.OldestUnacknowledged(ctx, rdb, s, Group)
		if err != nil {
			return 0, fmt.Errorf("view snapshot watermark: %w", err)
		}
		if ok && ms < wm {
			wm = ms
		}
	}
	return wm, nil
}

// readRawViews reads the views at keys, each with its version in one
// atomic step, as stored: the fields and values a restore writes back.
// Keys gone since they were listed are left out.
func readRawViews(ctx context.Context, rdb redis.UniversalClient, keys []string) ([]schema.SnapshotView, error) {
	cmds := make([]*redis.Cmd, len(keys))
	_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, k := range keys {
			id := domainOfViewKey(k)
			cmds[i] = pipe.EvalRO(ctx, snapshotScript, []string{ViewKey(id), VersionKey(id)})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %d views: %w", len(keys), err)
	}
	out := make([]schema.SnapshotView, 0, len(keys))
	for i, k := range keys {
		res, err := cmds[i].Slice()
		if err != nil || len(res) != 2 {
			return nil, fmt.Errorf("read view %s: %v", k, err)
		}
		flat, _ := res[0].([]any)
		if len(flat) == 0 {
			continue
		}
		v := schema.SnapshotView{DomainID: domainOfViewKey(k), Fields: make([]string, 0, len(flat)/2), Values: make([]string, 0, len(flat)/2)}
		var version string
		tenant := map[string]string{}
		for j := 0; j+1 < len(flat); j += 2 {
			f, _ := flat[j].(string)
			val, _ := flat[j+1].(string)
			switch f {
			case versionField: // in the Version column
				version = val
				continue
			case tenantField, oldTenantField:
				tenant[f] = val
			}
			v.Fields = append(v.Fields, f)
			v.Values = append(v.Values, val)
		}
		ver, _ := res[1].(string)
		if v.Version, err = viewVersion(version, ver); err != nil {
			return nil, fmt.Errorf("read view %s: %w", k, err)
		}
		if v.TenantID, err = viewTenant(tenant); err != nil {
			return nil, fmt.Errorf("read view %s: %w", k, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// domainOfViewKey is the domain id of a view:exp:{<id>} key.
func domainOfViewKey(key string) string {
	id := key[len(ViewPrefix):]
	if len(id) >= 2 && id[0] == '{' && id[len(id)-1] == '}' {
		return id[1 : len(id)-1]
	}
	return id
}

// scanViewKeys calls fn with the view:exp:* keys in batches of up to 1000,
// with the client of the node holding them (each master of a cluster in
// turn: SCAN walks one node).
func scanViewKeys(ctx context.Context, rdb redis.UniversalClient, fn func(ctx context.Context, c redis.UniversalClient, keys []string) error) error {
	walk := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, ViewPrefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 1000 {
				if err := fn(ctx, c, keys); err != nil {
					return err
				}
				keys = keys[:0]
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if len(keys) > 0 {
			return fn(ctx, c, keys)
		}
		return nil
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return walk(ctx, c) })
	}
	return walk(ctx, rdb)
}

// restoreScript writes a snapshot's view back, unless a projector wrote
// the view since the rebuild deleted it (its newer state stays; the
// replay after the snapshot brings the rest), and bumps its version above
// both the one the rebuild kept and the snapshot's, so that it never goes
// back. A tombstone restored expires as the one written by the removal
// (expireTombstoneLua), so a rebuild also gives an end to the tombstones
// written before they expired.
//
// KEYS: view, version. ARGV: the snapshot's version, then field and value
// pairs.
var restoreScript = redis.NewScript(bumpLua + `
local n = redis.call('HLEN', KEYS[1])
if n > 1 or (n == 1 and redis.call('HEXISTS', KEYS[1], '@v') == 0) then return 0 end
for i = 2, #ARGV, 2 do
  if ARGV[i] ~= '@v' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
bump(tonumber(ARGV[1]))
` + expireTombstoneLua + `
return 1
`)

// deleteViewScript deletes a view but its version, which a rebuild must
// not make go back.
//
// KEYS: view.
var deleteViewScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], '@v')
redis.call('UNLINK', KEYS[1])
if v then redis.call('HSET', KEYS[1], '@v', v) end
return 1
`)

// RebuildConfig configures RebuildFromSnapshot.
type RebuildConfig struct {
	// Full replays every stored event, whatever snapshot there is.
	Full bool
	// Overlap is how much earlier than the snapshot's watermark the
	// replay starts. Default DefaultReplayOverlap.
	Overlap time.Duration
}

// RebuildResult says what a rebuild did.
type RebuildResult struct {
	// Snapshot is the snapshot restored; zero for a full replay.
	Snapshot schema.ViewSnapshot
	// Restored is how many views came from the snapshot.
	Restored int
	// Replayed is how many events were replayed after it (or in all).
	Replayed int
	// Restoring is how long restoring the snapshot took.
	Restoring time.Duration
	// Took is how long the rebuild took.
	Took time.Duration
}

// RebuildFromSnapshot rebuilds the views from the event store in conn:
// it deletes them, restores the latest complete snapshot and replays the
// events that occurred from its watermark less the overlap. With no
// complete snapshot, or with cfg.Full, it replays every event (Rebuild).
// Alerts are not evaluated, as in Rebuild.
func RebuildFromSnapshot(ctx context.Context, rdb redis.UniversalClient, conn driver.Conn, cfg RebuildConfig, logger *zap.Logger) (RebuildResult, error) {
	if cfg.Overlap == 0 {
		cfg.Overlap = DefaultReplayOverlap
	}
	start := time.Now()
	var (
		snap schema.ViewSnapshot
		ok   bool
		err  error
	)
	if !cfg.Full {
		if snap, ok, err = schema.LatestSnapshot(ctx, conn); err != nil {
			return RebuildResult{}, err
		}
	}
	if !ok {
		if !cfg.Full {
			logger.Named("projector").Info("no complete view snapshot: replaying every event")
		}
		n, err := rebuild(ctx, rdb, func(ctx context.Context, fn func(events.Envelope) error) error {
			return schema.ReplayEvents(ctx, conn, fn)
		}, logger)
		return RebuildResult{Replayed: n, Took: time.Since(start)}, err
	}
	logger = logger.Named("projector")
	deleted, err := deleteViews(ctx, rdb)
	if err != nil {
		return RebuildResult{}, err
	}
	restoreStart := time.Now()
	restored, err := restoreSnapshot(ctx, rdb, conn, snap.ID)
	if err != nil {
		return RebuildResult{}, err
	}
	restoring := time.Since(restoreStart)
	since := time.UnixMilli(snap.WatermarkMS).Add(-cfg.Overlap)
	replayed, err := replayViews(ctx, rdb, func(ctx context.Context, fn func(events.Envelope) error) error {
		return schema.ReplayEventsSince(ctx, conn, since, fn)
	}, logger)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild views: %w", err)
	}
	// The restore wrote views without their list indexes: build them again.
	if _, err := BuildIndexes(ctx, rdb, true, logger); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild list indexes: %w", err)
	}
	res := RebuildResult{Snapshot: snap, Restored: restored, Replayed: replayed, Restoring: restoring, Took: time.Since(start)}
	logger.Info("views rebuilt from snapshot", zap.Uint64("snapshot", snap.ID), zap.Int("views_deleted", deleted),
		zap.Int("views_restored", restored), zap.Duration("restoring", restoring), zap.Time("replayed_from", since.UTC()),
		zap.Int("events", replayed), zap.Duration("took", res.Took))
	return res, nil
}

// restoreSnapshot writes the views of snapshot id back, pipelined, and
// returns how many it wrote.
func restoreSnapshot(ctx context.Context, rdb redis.UniversalClient, conn driver.Conn, id uint64) (int, error) {
	const batchSize = 500
	var (
		restored int
		batch    = make([]schema.SnapshotView, 0, batchSize)
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		cmds := make([]*redis.Cmd, len(batch))
		_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i, v := range batch {
				cmds[i] = restoreScript.EvalSha(ctx, pipe, []string{ViewKey(v.DomainID), VersionKey(v.DomainID)}, restoreArgs(v)...)
			}
			return nil
		})
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost the script: the slow path loads it, once per view.
			for i, v := range batch {
				cmds[i] = restoreScript.Run(ctx, rdb, []string{ViewKey(v.DomainID), VersionKey(v.DomainID)}, restoreArgs(v)...)
				if err := cmds[i].Err(); err != nil {
					return fmt.Errorf("restore view of %s: %w", v.DomainID, err)
				}
			}
		} else if err != nil {
			return fmt.Errorf("restore %d views: %w", len(batch), err)
		}
		for _, c := range cmds {
			if n, _ := c.Int(); n == 1 {
				restored++
			}
		}
		batch = batch[:0]
		return nil
	}
	err := schema.ReadSnapshotViews(ctx, conn, id, func(v schema.SnapshotView) error {
		batch = append(batch, v)
		if len(batch) == batchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return restored, err
}

// restoreArgs are restoreScript's arguments for v: its version, then its
// fields and values, paired.
func restoreArgs(v schema.SnapshotView) []any {
	args := make([]any, 0, 1+2*len(v.Fields))
	args = append(args, v.Version)
	for j := range v.Fields {
		args = append(args, v.Fields[j], v.Values[j])
	}
	return args
}

// replayViews applies every event replay yields in batches, without the
// evaluator, and returns how many.
func replayViews(ctx context.Context, rdb redis.UniversalClient, replay func(ctx context.Context, fn func(events.Envelope) error) error, logger *zap.Logger) (int, error) {
	const batchSize = 500
	var (
		batch   = make([]events.Envelope, 0, batchSize)
		applied int
	)
	flush := func() error {
		if _, _, err := applyBatch(ctx, rdb, batch, logger); err != nil {
			return err
		}
		applied += len(batch)
		batch = batch[:0]
		return nil
	}
	err := replay(ctx, func(e events.Envelope) error {
		batch = append(batch, e)
		if len(batch) == batchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return applied, err
}
