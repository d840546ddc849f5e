// Command certfleet is the one binary of certfleet: each role of the
// system is a subcommand (see usage). main only parses flags and the
// environment and wires the parts; every part returns its errors here.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/replicated"
)

const usage = `certfleet: self-hosted TLS certificate monitoring

usage: certfleet <command> [flags]

roles:
  all           every role in one process, for one machine
  apiserver     REST APIs and the projector (views, alerts)
  coordinator   the scan schedule and the ClickHouse sink
  agent         DNS and TLS handshakes from one region

tools:
  scan          scan HOST[:PORT]... once and print what each address serves
  migrate       apply ClickHouse migrations and exit
  views rebuild rebuild the Redis views from the ClickHouse event store
  lab           serve a local fleet of TLS endpoints with known faults, with
                its DNS and the RDAP and WHOIS servers of its registrations
  apikey        create, list or revoke an account's /api/v1 keys
  ca            init, import or show the client certificate CA
  quota         show or override an account's limits
  regions       list the regions agents scan from, or forget a gone one
  tenant        delete an account and everything it keeps, with a report
  import        import the domains of a CSV or NDJSON file into a running
                server (POST /api/v1/domains/bulk), resumable
  version       the release and revision of this binary

Every flag can also be set as CERTFLEET_<FLAG> (upper case, '-' as '_').
Run 'certfleet <command> -h' for the flags of a command.
`

func main() { os.Exit(runMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

// runMain runs one command until it ends, ctx is done or a signal arrives,
// and returns the process exit code.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if !slices.Contains([]string{"all", "apiserver", "coordinator", "agent"}, cmd) {
		// A tool (views rebuild, import, tenant delete, ...) stops at
		// SIGINT or SIGTERM through its context, so that what it writes
		// in one step ends whole; the roles' group has its own handler.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	var err error
	switch cmd {
	case "all", "apiserver", "coordinator", "agent":
		err = runRole(ctx, cmd, rest, stderr)
	case "migrate":
		err = runMigrate(ctx, rest, stderr)
	case "views":
		if len(rest) == 0 || rest[0] != "rebuild" {
			err = actionUsage(stderr, "views", "usage: certfleet views rebuild [flags]", rest)
			break
		}
		err = runRebuild(ctx, rest[1:], stderr)
	case "lab":
		err = runLab(ctx, rest, stdout, stderr)
	case "apikey":
		err = runAPIKey(ctx, rest, stdout, stderr)
	case "ca":
		err = runCA(ctx, rest, stdout, stderr)
	case "quota":
		err = runQuota(ctx, rest, stdout, stderr)
	case "regions":
		err = runRegions(ctx, rest, stdout, stderr)
	case "tenant":
		err = runTenant(ctx, rest, stdout, stderr)
	case "scan":
		err = runScan(ctx, rest, stdout, stderr)
	case "import":
		err = runImport(ctx, rest, stdout, stderr)
	case "version", "--version":
		if len(rest) > 0 && isHelp(rest[0]) {
			err = groupHelp(stderr, "version", "usage: certfleet version")
			break
		}
		err = runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "certfleet: unknown command %q; run 'certfleet help' for the commands\n", cmd)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errImportItems) {
		fmt.Fprintf(stderr, "certfleet %s: %v\n", cmd, err)
		return 1
	}
	if errors.Is(err, errScanFailed) {
		return 1 // the scan printed what is wrong
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "certfleet %s: %v\nrun 'certfleet %s -h' for its flags\n", cmd, err, cmd)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "certfleet %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// newLogger returns a JSON logger writing to w at level.
func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// newRedis builds the Redis client of the --redis-url and --redis-cluster
// flags, with at least poolSize connections, and returns it with the
// address(es) it talks to. It does not connect: a URL that does not parse
// fails here, anything else at the first command.
func newRedis(o *options, poolSize int) (redis.UniversalClient, string, error) {
	if o.RedisCluster {
		opts, err := redis.ParseClusterURL(o.RedisURL)
		if err != nil {
			return nil, "", fmt.Errorf("redis cluster url: %w", err)
		}
		opts.PoolSize = max(opts.PoolSize, poolSize)
		cc := redis.NewClusterClient(opts)
		replicated.FollowFailover(cc)
		return cc, strings.Join(opts.Addrs, ","), nil
	}
	opts, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return nil, "", fmt.Errorf("redis url: %w", err)
	}
	opts.PoolSize = max(opts.PoolSize, poolSize)
	return redis.NewClient(opts), opts.Addr, nil
}

// redisPingTimeout bounds one ping of Redis at start.
const redisPingTimeout = 10 * time.Second

// openRedis connects a tool to Redis: it fails when Redis does not answer
// within redisPingTimeout, as a command run by hand should. A role waits
// instead (waitRedis).
func openRedis(ctx context.Context, o *options, poolSize int) (redis.UniversalClient, error) {
	rdb, addr, err := newRedis(o, poolSize)
	if err != nil {
		return nil, err
	}
	if err := pingRedis(ctx, rdb, addr); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return rdb, nil
}

// pingRedis pings rdb once, giving up after redisPingTimeout.
func pingRedis(ctx context.Context, rdb redis.UniversalClient, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", addr, err)
	}
	return nil
}

// redisRetry is the pause between pings of a role waiting for Redis at
// start, and redisWaitLogEvery how often it says it still waits.
var (
	redisRetry        = backoff.Policy{Initial: 500 * time.Millisecond, Max: 5 * time.Second}
	redisWaitLogEvery = 30 * time.Second
)

// waitRedis pings rdb until it answers (a Redis Cluster: until it serves
// every slot too). A role started while Redis is away
// (health.Unavailable: refused, unreachable, timed out, loading; a
// cluster still forming) waits for it rather than exiting, which an
// orchestrator would turn into a crash loop with growing back-off: it
// logs a warning, then pings as redisRetry says, logging again at most
// every redisWaitLogEvery. Any other error (a missing or wrong password,
// a database Redis does not have) is a misconfiguration no wait fixes and
// is returned at once, as is ctx's error when ctx ends. (rediss:// to a
// server without TLS looks away: it answers nothing to the handshake.)
func waitRedis(ctx context.Context, rdb redis.UniversalClient, addr string, logger *zap.Logger) error {
	start := time.Now()
	var logged time.Time
	for failures := 1; ; failures++ {
		err := pingRedis(ctx, rdb, addr)
		if cc, ok := rdb.(*redis.ClusterClient); ok && err == nil {
			err = clusterServing(ctx, cc, addr)
		}
		if err == nil {
			if failures > 1 {
				logger.Info("redis answered: starting", zap.String("addr", addr),
					zap.Int("attempts", failures), zap.Duration("waited", time.Since(start)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !health.Unavailable(ctx, err) && !errors.Is(err, errClusterNotServing) {
			return err
		}
		switch {
		case logged.IsZero():
			logger.Warn("redis not answering at start: waiting for it", zap.String("addr", addr), zap.Error(err))
			logged = time.Now()
		case time.Since(logged) >= redisWaitLogEvery:
			logger.Warn("still waiting for redis", zap.String("addr", addr), zap.Duration("waited", time.Since(start)),
				zap.Int("attempts", failures), zap.Error(err))
			logged = time.Now()
		}
		if !backoff.Sleep(ctx, redisRetry.Delay(failures)) {
			return ctx.Err()
		}
	}
}

// errClusterNotServing is a Redis Cluster whose nodes answer PING but do
// not serve every slot yet (cluster_state is not ok), as while restarted
// nodes find each other: every command on a key fails CLUSTERDOWN then.
var errClusterNotServing = errors.New("cluster_state not ok: not every slot is served yet")

// clusterServing tells whether a node of cc reports the cluster as
// serving every slot.
func clusterServing(ctx context.Context, cc *redis.ClusterClient, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
	defer cancel()
	info, err := cc.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("redis cluster %s: %w", addr, err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("redis cluster %s: %w", addr, errClusterNotServing)
	}
	return nil
}

// group runs actors until the first one returns or a signal arrives, then
// stops them all: the oklog/run pattern.
type group struct {
	g   run.Group
	ctx context.Context
	// health answers /healthz and /readyz on the process's listeners.
	health *health.Registry
	// running is set once run starts the actors: until then the role is
	// still starting (waiting for Redis, building indexes) and not ready.
	running atomic.Bool
	// closers shut down what serves before the group runs, should the
	// role return before it does.
	closers []func()
}

// errStarting is the readiness problem of a role that has not started
// its parts yet.
var errStarting = errors.New("the role is still starting")

func newGroup(ctx context.Context) *group {
	gr := &group{ctx: ctx, health: health.New()}
	gr.g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	gr.health.Ready("start", func(context.Context) error {
		if !gr.running.Load() {
			return errStarting
		}
		return nil
	})
	return gr
}

// add runs f with a context cancelled when the group stops.
func (gr *group) add(f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(gr.ctx)
	gr.g.Add(func() error { return f(ctx) }, func(error) { cancel() })
}

// register adds a component's health checks to the process's.
func (gr *group) register(c interface{ Register(*health.Registry) }) {
	c.Register(gr.health)
}

// addHTTP listens on addr and serves h from now on, so that a listener
// added before the role's parts (the metrics listener) answers /healthz
// and /readyz while the role still starts; it serves until the group
// stops, then shuts down gracefully. A port that cannot be bound fails
// here, at once.
func (gr *group) addHTTP(addr string, h http.Handler, logger *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var serveErr error
	served := make(chan struct{})
	logger.Info("listening", zap.String("addr", addr))
	go func() {
		serveErr = srv.Serve(ln)
		close(served)
	}()
	shutdown := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	gr.closers = append(gr.closers, shutdown)
	gr.g.Add(func() error {
		<-served
		if !errors.Is(serveErr, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", addr, serveErr)
		}
		return nil
	}, func(error) { shutdown() })
	return nil
}

// close shuts down what the group serves: a no-op after run, which does
// it when the group stops; for a role that returns before it runs.
func (gr *group) close() {
	for _, c := range gr.closers {
		c()
	}
}

func (gr *group) run() error {
	gr.running.Store(true)
	err := gr.g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) || (errors.Is(err, context.Canceled) && gr.ctx.Err() != nil) {
		return nil
	}
	return err
}

// metricsHandler serves role's /metrics, /healthz and /readyz for roles
// without an API.
func metricsHandler(role string, reg *health.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", roleMetrics(role))
	mux.Handle("/healthz", reg.Healthz())
	mux.Handle("/readyz", reg.Readyz())
	return mux
}

// startingHandler serves the API's listener (--listen) while a role with
// an API starts (waiting for Redis, building indexes): metricsHandler's
// endpoints, so that probes find it alive and not ready, and 503 with
// Retry-After on every other path until the API takes its place
// (apiserver.Listener).
func startingHandler(role string, reg *health.Registry) http.Handler {
	mux := metricsHandler(role, reg)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"the server is still starting: /readyz says why"}`+"\n")
	})
	return mux
}
