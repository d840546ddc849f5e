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
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/oklog/run"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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

func openRedis(ctx context.Context, o *options, poolSize int) (redis.UniversalClient, error) {
	var (
		rdb  redis.UniversalClient
		addr string
	)
	if o.RedisCluster {
		opts, err := redis.ParseClusterURL(o.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster url: %w", err)
		}
		opts.PoolSize = max(opts.PoolSize, poolSize)
		cc := redis.NewClusterClient(opts)
		replicated.FollowFailover(cc)
		rdb, addr = cc, strings.Join(opts.Addrs, ",")
	} else {
		opts, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		opts.PoolSize = max(opts.PoolSize, poolSize)
		rdb, addr = redis.NewClient(opts), opts.Addr
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return rdb, nil
}

// group runs actors until the first one returns or a signal arrives, then
// stops them all: the oklog/run pattern.
type group struct {
	g   run.Group
	ctx context.Context
	// health answers /healthz and /readyz on the process's listeners.
	health *health.Registry
}

func newGroup(ctx context.Context) *group {
	gr := &group{ctx: ctx, health: health.New()}
	gr.g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
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

// addHTTP serves h on addr until the group stops, then shuts it down
// gracefully.
func (gr *group) addHTTP(addr string, h http.Handler, logger *zap.Logger) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	gr.g.Add(func() error {
		logger.Info("listening", zap.String("addr", addr))
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
}

func (gr *group) run() error {
	err := gr.g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) || (errors.Is(err, context.Canceled) && gr.ctx.Err() != nil) {
		return nil
	}
	return err
}

// metricsHandler serves role's /metrics, /healthz and /readyz for roles
// without an API.
func metricsHandler(role string, reg *health.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", roleMetrics(role))
	mux.Handle("/healthz", reg.Healthz())
	mux.Handle("/readyz", reg.Readyz())
	return mux
}
