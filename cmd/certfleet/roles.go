package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/dashboard"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/coordinator"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/layout"
	"github.com/certfleet/certfleet/internal/redislog"
	"github.com/certfleet/certfleet/schema"
)

// layoutWatchEvery is how often a running role reads the data's layout
// generation (layout.Watch): a newer binary stops it within that.
const layoutWatchEvery = 10 * time.Second

// clockOffsetLimit is how far a role's clock may be from Redis's before
// it warns (deploy/prometheus/alerts.yml's CertfleetClockSkew alerts
// from the same bound).
const clockOffsetLimit = 2 * time.Second

func roleFlags(role string) *flagSet {
	fs := newFlagSet(role).redis()
	switch role {
	case "all":
		fs.clickhouse().api().tenancy().shards().agent().coordinator().notify().ca().audit().acme().history().viewSnapshots()
	case "apiserver":
		fs.api().tenancy().clickhouse().notify().ca().audit().acme().viewSnapshots()
	case "coordinator":
		fs.clickhouse().shards().coordinator().notify().acme().history().metrics("127.0.0.1:9464")
		defer fs.group("sink")()
		fs.BoolVar(&fs.opts.WithSink, "sink", true, "also run the ClickHouse sink in this process")
	case "agent":
		fs.shards().agent().metrics("127.0.0.1:9465")
	}
	return fs.consumers()
}

// runRole runs one role (or all of them) until ctx is done or SIGINT or
// SIGTERM arrives, then stops every part gracefully.
func runRole(ctx context.Context, role string, args []string, stderr io.Writer) error {
	fs := roleFlags(role)
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	o := fs.opts
	if o.Name == "" {
		o.Name = stream.ConsumerName("certfleet", false)
	}
	if o.ClaimIdle <= 0 {
		return fmt.Errorf("--claim-idle must be positive, got %s", o.ClaimIdle)
	}
	// Checked before any connection, so a bad flag fails fast.
	if err := o.registrationOptions.validate(role); err != nil {
		return err
	}
	if err := o.viewsOptions.validate(); err != nil {
		return err
	}
	if o.EventRetention < 0 {
		return fmt.Errorf("--event-retention must not be negative, got %s", o.EventRetention)
	}
	var notify apiserver.NotifyConfig
	if role == "all" || role == "apiserver" {
		if err := o.tenancyOptions.validate(); err != nil {
			return err
		}
		if notify, err = o.notifyConfig(); err != nil {
			return err
		}
	}
	var scfg agent.ScannerConfig
	if role == "all" || role == "agent" {
		if scfg, err = scannerConfig(o); err != nil {
			return err
		}
	}
	defer func() { _ = logger.Sync() }()
	logger = logger.With(zap.String("role", role))
	redislog.Install(logger) // go-redis's lines name the role too

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gr := newGroup(ctx)
	defer gr.close()
	// The metrics listener serves from the start, so that a role waiting
	// for Redis answers /healthz (alive) and /readyz (not ready, and why).
	if o.MetricsListen != "" {
		if err := gr.addHTTP(o.MetricsListen, metricsHandler(role, gr.health), logger); err != nil {
			return err
		}
	}
	// So does the API's: bound now, it answers /healthz and /readyz (and
	// 503 elsewhere) until the API, once built, serves on it.
	var apiListener *apiserver.Listener
	if role == "all" || role == "apiserver" {
		if apiListener, err = apiserver.Listen(o.Listen, o.CheckTimeout, startingHandler(role, gr.health), logger); err != nil {
			return err
		}
		gr.closers = append(gr.closers, apiListener.Close)
	}
	// Stream consumers read without blocking (events/stream), so each
	// holds at most one connection at a time; the API's requests and the
	// notifier's workers take the rest.
	rdb, redisAddr, err := newRedis(o, 64)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Dependencies only count for readiness: a Redis or ClickHouse blip
	// must restart nothing. Until Redis first answered the check says so.
	var redisConnected atomic.Bool
	gr.health.Ready("redis", health.PingFunc(func(ctx context.Context) error {
		err := rdb.Ping(ctx).Err()
		if err != nil && !redisConnected.Load() {
			return fmt.Errorf("%w: %w", health.ErrNotConnected, err)
		}
		return err
	}))
	// Redis away at start is waited for, as ClickHouse is below, instead
	// of a crash loop. SIGINT or SIGTERM end the wait as they stop a
	// running role: the group's handler listens only once it runs.
	waitCtx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	err = waitRedis(waitCtx, rdb, redisAddr, logger)
	stopped := waitCtx.Err() != nil
	stopSignals()
	if stopped {
		logger.Info("stopped before redis answered")
		return nil
	}
	if err != nil {
		return err
	}
	redisConnected.Store(true)

	var conn driver.Conn
	if role == "all" || role == "coordinator" || role == "apiserver" {
		conn, err = openSchema(ctx, o, logger)
		if health.Unavailable(ctx, err) {
			// ClickHouse away at start stops nothing that needs only Redis
			// (the APIs, the schedule, the views): the role starts, history
			// answers 503 and the sink waits, as during an outage.
			logger.Warn("clickhouse not answering at start: running without it until it does", zap.Error(err))
			conn, err = schema.OpenLazy(ctx, func(ctx context.Context) (driver.Conn, error) { return openSchema(ctx, o, logger) },
				backoff.Policy{Initial: 500 * time.Millisecond, Max: 2 * time.Second}, logger.Named("schema")), nil
		}
		if err != nil {
			return err
		}
		defer conn.Close()
	}

	if role == "all" || role == "coordinator" || role == "apiserver" {
		// A binary older than the data stops rather than misread it
		// (internal/layout); a newer one started beside this one stops it.
		if err := layout.Claim(ctx, rdb, layout.Generation); err != nil {
			return err
		}
		gr.add(func(ctx context.Context) error { return layout.Watch(ctx, rdb, layout.Generation, layoutWatchEvery) })
	}
	// Scans are scheduled and statuses computed on this host's clock,
	// leases and limits on Redis's: certfleet_clock_offset_seconds shows
	// how far apart they are.
	gr.add(func(ctx context.Context) error {
		return health.WatchClockOffset(ctx, rdb, time.Now, health.ClockOffsetEvery, clockOffsetLimit, logger)
	})
	if conn != nil {
		gr.health.Ready("clickhouse", health.PingFunc(conn.Ping))
	}
	if role == "all" || role == "apiserver" {
		// The domain list orders names in Lua, which compares strings by
		// Redis's locale.
		if err := domainindex.CheckCollation(ctx, rdb); err != nil {
			return err
		}
		// A deployment from before the list indexes builds them once;
		// later starts find them built and go on at once.
		if _, err := projector.BuildIndexes(ctx, rdb, false, logger); err != nil {
			return err
		}
		api, err := apiserver.New(apiserver.Config{
			Listen: o.Listen, RenewalWindow: o.RenewalWindow,
			WarningDays: o.WarningDays, CriticalDays: o.CriticalDays, CheckTimeout: o.CheckTimeout, ImportSpacing: o.ImportSpacing,
			RateLimitGeneral: o.RateLimitGeneral, RateLimitCheck: o.RateLimitCheck, RateLimitAPIKeys: o.RateLimitAPIKeys,
			RateLimitAuthFailures: o.RateLimitAuthFailures, RateLimitChannelTests: o.RateLimitChannelTests,
			RateLimitClaimAccounts: o.RateLimitClaimAccounts,
			Claims:                 o.KeyChestClaim, ClaimQuota: o.ClaimQuota, Quotas: o.tenancyOptions.quotas(),
			Notify: notify, CA: o.caConfig(), Audit: o.auditConfig(conn),
			Health: gr.health, Metrics: roleGatherer(role), ExpiryMetricsMaxSeries: o.ExpiryMetricsMaxSeries,
			ExpiryMetricsTokenFile: o.ExpiryMetricsTokenFile,
			RegionStaleAfter:       o.RegionStaleAfter, RedisWait: o.RedisWait,
			Operator: apiserver.OperatorConfig{TokenFile: o.OperatorTokenFile, RateLimit: o.RateLimitOperator,
				Groups: []string{projector.Group, sink.Group}},
			Dashboard: dashboard.Config{SessionTTL: o.DashboardSessionTTL, SecureCookies: o.DashboardSecureCookies},
		}, rdb, logger)
		if err != nil {
			return err
		}
		gr.add(func(ctx context.Context) error { return api.Serve(ctx, apiListener) })
		gr.add(api.RunRenewal)
		gr.add(api.RunAttention)
		eng, err := alerts.New(alerts.Config{CriticalDays: o.CriticalDays, DeployGrace: o.DeployGrace, RegionStaleAfter: o.RegionStaleAfter}, rdb, logger)
		if err != nil {
			return err
		}
		proj, err := projector.New(projector.Config{Consumer: o.Name, ClaimIdle: o.ClaimIdle, Evaluator: eng}, rdb, logger)
		if err != nil {
			return err
		}
		gr.register(proj)
		gr.add(proj.Run)
		if o.ViewSnapshotInterval > 0 {
			snap, err := projector.NewSnapshotter(projector.SnapshotConfig{Interval: o.ViewSnapshotInterval}, rdb, conn, logger)
			if err != nil {
				return err
			}
			gr.add(snap.Run)
		}
	}
	if role == "all" || role == "coordinator" {
		co, err := coordinator.New(coordinator.Config{
			Name: o.Name, Interval: o.ScanInterval, Shards: o.Shards, ClaimIdle: o.ClaimIdle,
			RegistrationInterval: o.RegistrationInterval, TrimEvery: o.StreamTrimInterval,
			BucketSize: o.ScheduleBucketSize,
		}, rdb, logger)
		if err != nil {
			return err
		}
		gr.register(co)
		gr.add(co.Run)
	}
	if role == "all" || (role == "coordinator" && o.WithSink) {
		sk, err := sink.New(sink.Config{Consumer: o.Name, ClaimIdle: o.ClaimIdle, HistoryRetention: o.HistoryRetention,
			RollupRetention: o.RollupRetention, EventRetention: o.EventRetention}, rdb, conn, logger)
		if err != nil {
			return err
		}
		gr.register(sk)
		gr.add(sk.Run)
		if o.HistoryRetention > 0 || o.RollupRetention > 0 || o.EventRetention > 0 {
			gr.add(sk.RunRetention)
		}
	}
	if err := addNotifier(gr, role, o, rdb, logger); err != nil {
		return err
	}
	if err := addACMEWorker(gr, role, o, rdb, logger); err != nil {
		return err
	}
	if role == "all" || role == "agent" {
		ag, err := agent.New(agent.Config{Region: o.Region, Name: o.Name, Shards: o.Shards, ClaimIdle: o.ClaimIdle, Scanner: scfg, Wait: o.RedisWait}, rdb, logger)
		if err != nil {
			return err
		}
		gr.register(ag)
		gr.add(ag.Run)
		if err := addRegistrationWorker(gr, o, rdb, logger); err != nil {
			return err
		}
	}
	logger.Info("started")
	err = gr.run()
	logger.Info("stopped", zap.Error(err))
	return err
}

// addRegistrationWorker adds the agent's registration lookup worker
// unless --registration-lookups is off.
func addRegistrationWorker(gr *group, o *options, rdb redis.UniversalClient, logger *zap.Logger) error {
	if !o.RegistrationLookups {
		return nil
	}
	lookup, err := registrationLookup(o, rdb, logger)
	if err != nil {
		return err
	}
	if lookup == nil {
		logger.Info("registration lookups not available in this build")
		return nil
	}
	w, err := agent.NewRegistrationWorker(agent.RegistrationConfig{
		Name: o.Name, Lookup: lookup, Workers: o.RegistrationWorkers, ClaimIdle: o.ClaimIdle,
	}, rdb, logger)
	if err != nil {
		return err
	}
	gr.register(w)
	gr.add(w.Run)
	return nil
}

// openSchema connects to ClickHouse (--clickhouse-dsn, on the cluster
// --clickhouse-cluster names if set), creating the database if missing,
// and applies the migrations every role that writes history needs.
func openSchema(ctx context.Context, o *options, logger *zap.Logger) (driver.Conn, error) {
	var (
		conn driver.Conn
		err  error
	)
	if o.ClickHouseCluster != "" {
		conn, err = schema.OpenCluster(ctx, o.ClickHouseDSN, o.ClickHouseCluster, logger)
	} else {
		conn, err = schema.Open(ctx, o.ClickHouseDSN, logger)
	}
	if err != nil {
		return nil, err
	}
	if err := schema.Migrate(ctx, conn, logger); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// parseAllow parses an allow-list flag: comma-separated CIDRs that one
// kind of outbound traffic may reach although the guard refuses them by
// default (--allow-targets for scans, --allow-webhook-targets for
// notification endpoints).
func parseAllow(flag, value string) ([]netip.Prefix, error) {
	allow, err := guard.ParseAllow(strings.Split(value, ","))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return allow, nil
}

func scannerConfig(o *options) (agent.ScannerConfig, error) {
	// Zero would mean the default to the agent's config: refuse it here.
	if o.MaxIPsPerDomain < 1 {
		return agent.ScannerConfig{}, fmt.Errorf("--max-ips-per-domain must be positive, got %d", o.MaxIPsPerDomain)
	}
	if o.JobTimeout <= 0 {
		return agent.ScannerConfig{}, fmt.Errorf("--job-timeout must be positive, got %s", o.JobTimeout)
	}
	allow, err := parseAllow("--allow-targets", o.AllowTargets)
	if err != nil {
		return agent.ScannerConfig{}, err
	}
	var roots []byte
	if o.ExtraRoots != "" {
		roots, err = os.ReadFile(o.ExtraRoots)
		if err != nil {
			return agent.ScannerConfig{}, fmt.Errorf("--extra-roots: %w", err)
		}
	}
	return agent.ScannerConfig{
		Resolver:                o.Resolver,
		ExtraRootsPEM:           roots,
		Allow:                   allow,
		MaxConcurrentHandshakes: o.Concurrency,
		MaxIPsPerDomain:         o.MaxIPsPerDomain,
		JobTimeout:              o.JobTimeout,
		CheckLegacyTLS:          new(o.CheckLegacy),
	}, nil
}

// runMigrate applies the ClickHouse migrations; runRebuild also replays the
// event store into the views in Redis.
func runMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	return runSchemaTool(ctx, "migrate", args, stderr, nil)
}

func runRebuild(ctx context.Context, args []string, stderr io.Writer) error {
	return runSchemaTool(ctx, "views rebuild", args, stderr, func(ctx context.Context, o *options, conn driver.Conn, logger *zap.Logger) error {
		if err := o.viewsOptions.validate(); err != nil {
			return err
		}
		rdb, err := openRedis(ctx, o, 0)
		if err != nil {
			return err
		}
		defer rdb.Close()
		_, err = projector.RebuildFromSnapshot(ctx, rdb, conn, projector.RebuildConfig{Full: o.FullReplay, Overlap: o.ReplayOverlap}, logger)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("interrupted, run it again (views not replayed yet are missing until their next scan; every list index is whole): %w", err)
		}
		return err
	})
}

// runSchemaTool opens ClickHouse (applying migrations) and then runs then,
// if given, with the Redis flags parsed too.
func runSchemaTool(ctx context.Context, name string, args []string, stderr io.Writer,
	then func(context.Context, *options, driver.Conn, *zap.Logger) error) error {
	fs := newFlagSet(name).clickhouse()
	if then != nil {
		fs.redis()
	}
	if name == "views rebuild" {
		fs.rebuild() // its own flags, after the shared ones in --help
	}
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	conn, err := openSchema(ctx, fs.opts, logger)
	if err != nil && ctx.Err() != nil {
		// A signal while the migrations ran: each is applied whole or not
		// at all, and nothing else was touched yet.
		return fmt.Errorf("interrupted, run it again: %w", err)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if then == nil {
		return nil
	}
	return then(ctx, fs.opts, conn, logger)
}
