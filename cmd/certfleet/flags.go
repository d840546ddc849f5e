package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/keychest"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/redislog"
	"github.com/certfleet/certfleet/internal/replicated"
)

// options holds every flag of every role; each role registers the ones it
// uses, so `certfleet agent -h` lists only the agent's.
type options struct {
	RedisURL            string
	RedisCluster        bool
	RedisWait           replicated.Config
	ClickHouseDSN       string
	ClickHouseCluster   string
	Listen              string
	MetricsListen       string
	Region              string
	Resolver            string
	ExtraRoots          string
	AllowTargets        string
	AllowWebhookTargets string
	ScanInterval        time.Duration
	ScheduleBucketSize  int
	StreamTrimInterval  time.Duration
	RenewalWindow       time.Duration
	WarningDays         int
	CriticalDays        int
	RegionStaleAfter    time.Duration
	CheckTimeout        time.Duration
	Shards              int
	Concurrency         int
	CheckLegacy         bool
	LogLevel            string
	Name                string
	WithSink            bool
	HistoryRetention    time.Duration
	RollupRetention     time.Duration
	EventRetention      time.Duration
	ClaimIdle           time.Duration
	MaxIPsPerDomain     int
	JobTimeout          time.Duration

	notifyOptions       // flags_notify.go
	caOptions           // flags_ca.go
	auditOptions        // flags_audit.go
	tenancyOptions      // flags_tenancy.go
	scanOptions         // scan.go
	importOptions       // import.go
	registrationOptions // flags_registration.go
	acmeOptions         // flags_acme.go
	viewsOptions        // flags_views.go

	// API rate limits: requests a minute per API key
	RateLimitGeneral       int
	RateLimitCheck         int
	RateLimitChannelTests  int
	RateLimitClaimAccounts int
	RateLimitAPIKeys       int
	RateLimitAuthFailures  int
	// ExpiryMetricsTokenFile holds the token of the expiry series on /metrics.
	ExpiryMetricsTokenFile string
	OperatorTokenFile      string
	RateLimitOperator      int
	// ImportSpacing spreads the first scans of bulk imports.
	ImportSpacing time.Duration
	// DashboardSessionTTL and DashboardSecureCookies configure the web
	// dashboard's sessions (dashboard.Config).
	DashboardSessionTTL    time.Duration
	DashboardSecureCookies bool
	// ExpiryMetricsMaxSeries caps the per-certificate expiry gauge.
	ExpiryMetricsMaxSeries int

	// lab
	LabPort    int
	LabDNS     string
	LabZone    string
	WriteEnv   string
	WriteRoots string

	// apikey
	Email     string
	Label     string
	Scopes    string
	ExpiresAt string
	KeyID     string

	// tenant delete
	Yes          bool
	ConsumerWait time.Duration
}

type flagSet struct {
	*flag.FlagSet
	opts *options
	// args: the command takes arguments after its flags (certfleet scan).
	args bool
	// groups are the titles of the usage's groups of flags, in order;
	// groupOf is each flag's, "" for the command's own; current is the
	// group flags defined now join (see group).
	groups  []string
	groupOf map[string]string
	current string
}

// generalGroup holds the flags every command has; the usage lists it last.
const generalGroup = "general"

// resultCommands print their result on stdout (a key, a table, a
// report): they log only warnings and errors unless --log-level asks for
// more, so that `KEY=$(certfleet apikey create ...)` leaves the terminal
// quiet. The roles, the lab and the schema tools (migrate, views rebuild)
// log their progress at info.
var resultCommands = map[string]bool{"apikey": true, "ca": true, "quota": true, "regions": true, "tenant": true, "scan": true, "import": true}

// defaultLogLevel is --log-level's default for the command name ("apikey
// create": its first word decides).
func defaultLogLevel(name string) string {
	cmd, _, _ := strings.Cut(name, " ")
	if resultCommands[cmd] {
		return "warn"
	}
	return "info"
}

func newFlagSet(name string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("certfleet "+name, flag.ContinueOnError), opts: &options{}, groupOf: map[string]string{}}
	end := fs.group(generalGroup)
	fs.StringVar(&fs.opts.LogLevel, "log-level", defaultLogLevel(name), "log level: debug, info, warn, error")
	fs.String("config", "", "file of settings, one 'flag-name = value' per line ('#' starts a comment); the environment and the command line win over it")
	end()
	return fs
}

// group starts a titled group of flags in the usage: the flags defined
// until end runs (a method registering a kind of flags defers it) join
// it; flags defined outside any group are the command's own.
func (f *flagSet) group(title string) (end func()) {
	prev := f.current
	f.assign()
	f.current = title
	return func() {
		f.assign()
		f.current = prev
	}
}

// assign puts the flags defined since the last call in the current group.
func (f *flagSet) assign() {
	f.VisitAll(func(fl *flag.Flag) {
		if _, ok := f.groupOf[fl.Name]; ok {
			return
		}
		f.groupOf[fl.Name] = f.current
		if !slices.Contains(f.groups, f.current) {
			f.groups = append(f.groups, f.current)
		}
	})
}

// configPath finds --config (or -config, =value or next argument) in args,
// else CERTFLEET_CONFIG: the file is read before the flags are parsed.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"--config", "-config"} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return os.Getenv(envName("config"))
}

// applyConfig sets flags from a config file: "name = value" lines, names
// as the flags', blank lines and '#' comments ignored. Every problem is
// reported at once, with its line.
func (f *flagSet) applyConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config: %v", err)
	}
	var errs []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		value = strings.Trim(value, `"`)
		fl := f.Lookup(name)
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("line %d: want name = value", i+1))
		case fl == nil || name == "config":
			errs = append(errs, fmt.Sprintf("line %d: %s has no setting %q", i+1, f.Name(), name))
		default:
			if err := fl.Value.Set(value); err != nil {
				errs = append(errs, fmt.Sprintf("line %d: %s = %q: %v", i+1, name, value, valueProblem(fl, err)))
			}
		}
	}
	if len(errs) > 0 {
		return usagef("%s: %s", path, strings.Join(errs, "; "))
	}
	return nil
}

func (f *flagSet) redis() *flagSet {
	defer f.group("Redis")()
	f.StringVar(&f.opts.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL; with --redis-cluster, one node of the cluster and more as ?addr=host:port&addr=...")
	f.BoolVar(&f.opts.RedisCluster, "redis-cluster", false, "Redis is a Redis Cluster: commands go to the node owning each key's slot")
	f.IntVar(&f.opts.RedisWait.Replicas, "redis-wait-replicas", 0, "replicas of a master that must hold a scan result, API command (domains, API keys, channels, client CA, managed certificates) or notification (WAIT) before it is acknowledged; 0 does not wait. With replicas (Redis Cluster or a replicated Redis) set 1, so a failover loses nothing acknowledged (docs/operations.md)")
	f.DurationVar(&f.opts.RedisWait.Timeout, "redis-wait-timeout", replicated.DefaultTimeout, "how long a write waits for --redis-wait-replicas; one not confirmed in time is not acknowledged (retried; the API answers 503)")
	return f
}

func (f *flagSet) clickhouse() *flagSet {
	defer f.group("ClickHouse")()
	f.StringVar(&f.opts.ClickHouseDSN, "clickhouse-dsn", "clickhouse://127.0.0.1:9000/certfleet", "ClickHouse DSN; the database is created if missing; with --clickhouse-cluster, name several servers (clickhouse://a:9000,b:9000/certfleet) and the connection fails over between them")
	f.StringVar(&f.opts.ClickHouseCluster, "clickhouse-cluster", "", "ClickHouse cluster of the servers' remote_servers (one shard of replicas, with ZooKeeper): every table is replicated on each server behind a Distributed table, and migrations run on every server (docs/scaling.md)")
	return f
}

// history adds the flags of the sink's upkeep of the history.
func (f *flagSet) history() *flagSet {
	defer f.group("History")()
	f.DurationVar(&f.opts.HistoryRetention, "history-retention", 400*24*time.Hour,
		"keep scan_results rows this long; each month past it is dropped whole (hourly, by the sink); 0 keeps every row")
	f.DurationVar(&f.opts.RollupRetention, "rollup-retention", 800*24*time.Hour,
		"keep the hourly rollups of scan_results (GET /api/v1/stats' scans by region) this long, dropped by month like the raw rows; 0 keeps every row")
	f.DurationVar(&f.opts.EventRetention, "event-retention", 400*24*time.Hour,
		"keep raw events in the event store this long (hourly, one sink at a time, as an ALTER TABLE DELETE); never deletes one a rebuild from the latest view snapshot replays, nor any while there is no snapshot; 0 keeps every event")
	return f
}

func (f *flagSet) api() *flagSet {
	defer f.group("API")()
	f.StringVar(&f.opts.Listen, "listen", "127.0.0.1:8080", "HTTP address of the API (also serves /metrics)")
	f.DurationVar(&f.opts.RenewalWindow, "renewal-window", 28*24*time.Hour, "a certificate expiring within this window is renewal_due")
	f.IntVar(&f.opts.WarningDays, "warning-days", 30, "a certificate expiring within this many days has status warning")
	f.IntVar(&f.opts.CriticalDays, "critical-days", 7, "a certificate expiring within this many days has status critical and grade B at best")
	f.DurationVar(&f.opts.RegionStaleAfter, "region-stale-after", 10*time.Minute, "a region none of whose agents was seen for this long is stale: GET /api/v1/regions says so and its results stop counting in region_mismatch and scan_failing")
	f.DurationVar(&f.opts.CheckTimeout, "check-timeout", 30*time.Second, "how long POST /api/v1/check waits for every active region's scan")
	f.IntVar(&f.opts.RateLimitGeneral, "rate-limit-general", 100, "requests a minute per API key, across replicas, to any API route")
	f.IntVar(&f.opts.RateLimitCheck, "rate-limit-check", 10, "requests a minute per API key to POST /api/v1/check")
	f.IntVar(&f.opts.RateLimitClaimAccounts, "rate-limit-claim-accounts", keychest.DefaultRateLimitClaimAccounts, "accounts the KeyChest claim calls may create an hour per client address (an IPv6 /64), across replicas; claims for an existing account do not count")
	f.IntVar(&f.opts.RateLimitChannelTests, "rate-limit-channel-tests", 10, "test messages a minute per tenant (POST /api/v1/channels/{id}/test, the dashboard's Send test), across replicas: each goes to an address the tenant chose")
	f.IntVar(&f.opts.ExpiryMetricsMaxSeries, "expiry-metrics-max-series", apiserver.DefaultExpiryMetricsMaxSeries, "most series of certfleet_certificate_expiry_timestamp_seconds (tenants opt in with expiry_metrics in their alert settings), shared round-robin by tenant; past it they are counted in certfleet_certificate_expiry_series_dropped_total")
	f.StringVar(&f.opts.ExpiryMetricsTokenFile, "expiry-metrics-token-file", "", "file whose first line (at least 32 characters) is the bearer token a scrape of /metrics sends to get the per-tenant expiry series (they name tenants and hosts); empty: not served")
	f.IntVar(&f.opts.RateLimitAPIKeys, "rate-limit-apikeys", 5, "requests a minute per API key to POST /api/v1/api-keys")
	f.IntVar(&f.opts.RateLimitAuthFailures, "rate-limit-auth-failures", apiserver.DefaultRateLimitAuthFailures, "failed authentications a minute per client address (refused API keys on every API, refused dashboard sign-ins); past it the address is answered 429 before its key is checked")
	f.StringVar(&f.opts.OperatorTokenFile, "operator-token-file", "", "file whose first line (at least 32 characters) is the operator token: serves the operator API (DELETE /api/operator/tenants/{email}); empty: no operator routes")
	f.IntVar(&f.opts.RateLimitOperator, "rate-limit-operator", 10, "requests a minute per client address to the operator API, counted before the token is checked")
	f.DurationVar(&f.opts.ImportSpacing, "import-spacing", accounts.DefaultImportSpacing, "the first scans of a bulk import (POST /api/v1/domains/bulk) of n domains are spread over n times this, after the account's previous import; at most 1h ahead")
	f.DurationVar(&f.opts.DashboardSessionTTL, "dashboard-session-ttl", 12*time.Hour, "how long a sign-in to the web dashboard at / lasts")
	f.BoolVar(&f.opts.DashboardSecureCookies, "dashboard-secure-cookies", false, "mark the dashboard's cookies Secure on plain HTTP: set it when a proxy terminates TLS in front of the server")
	return f
}

func (f *flagSet) metrics(def string) *flagSet {
	defer f.group("metrics")()
	f.StringVar(&f.opts.MetricsListen, "metrics-listen", def, "address serving Prometheus /metrics (empty: off)")
	return f
}

func (f *flagSet) shards() *flagSet {
	defer f.group("shards")()
	f.IntVar(&f.opts.Shards, "shards", 16, "number of job shards; must be the same on every coordinator and agent")
	return f
}

func (f *flagSet) agent() *flagSet {
	defer f.group("scanning")()
	f.StringVar(&f.opts.Region, "region", "local", "the region this agent scans from")
	f.StringVar(&f.opts.Resolver, "resolver", "", "DNS server host:port the agent asks (default: the system resolver)")
	f.StringVar(&f.opts.ExtraRoots, "extra-roots", "", "PEM file of roots trusted besides the system pool")
	f.StringVar(&f.opts.AllowTargets, "allow-targets", "", "comma-separated CIDRs the agent may scan although private or loopback")
	f.IntVar(&f.opts.Concurrency, "concurrency", 64, "IPs scanned at once at most (one connection each at a time)")
	f.BoolVar(&f.opts.CheckLegacy, "check-legacy-tls", true, "also try a handshake offering only TLS 1.0 and 1.1 on every IP")
	f.IntVar(&f.opts.MaxIPsPerDomain, "max-ips-per-domain", 32, "addresses scanned per domain at most; the others are reported as skipped")
	f.DurationVar(&f.opts.JobTimeout, "job-timeout", time.Minute, "deadline of one scan job, resolution and every handshake; addresses not done by then are reported as timeouts")
	return f.registrationAgent()
}

// consumers registers the flags every role with stream consumers shares.
func (f *flagSet) consumers() *flagSet {
	defer f.group("stream consumers")()
	f.StringVar(&f.opts.Name, "name", "", "consumer name of this replica in its consumer groups; keep it across restarts so a restarted replica takes its pending entries back at once, and give replicas on one host different names (default: the hostname)")
	f.DurationVar(&f.opts.ClaimIdle, "claim-idle", stream.DefaultClaimIdle, "how long an entry stays pending with a replica that stopped answering before another replica claims it; entries being handled are kept owned, so this need not exceed the longest job")
	return f
}

func (f *flagSet) coordinator() *flagSet {
	defer f.group("schedule")()
	f.DurationVar(&f.opts.ScanInterval, "scan-interval", 12*time.Hour, "how often each domain is rescanned")
	f.DurationVar(&f.opts.StreamTrimInterval, "stream-trim-interval", time.Minute, "how often the streams are trimmed of the entries every consumer group has read and acknowledged (0: never; XADD's MAXLEN ~2,000,000 per stream still applies)")
	f.IntVar(&f.opts.ScheduleBucketSize, "schedule-bucket-size", 100, "domains past which a bucket of the schedule is split in two; keep it below Redis's hash- and zset-max-listpack-entries (128 by default), so the buckets stay compact")
	return f.registrationCoordinator()
}

// parse applies CERTFLEET_<NAME> environment variables, then the command
// line, so a flag given on the command line wins over the environment, and
// returns the logger that --log-level asks for, writing to stderr (where
// usage and flag errors go too). go-redis logs through it too, from then
// on (internal/redislog).
func (f *flagSet) parse(args []string, stderr io.Writer) (*zap.Logger, error) {
	if err := f.parseArgs(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.printUsage(stderr)
		}
		return nil, err
	}
	logger, err := newLogger(f.opts.LogLevel, stderr)
	if err != nil {
		return nil, err
	}
	redislog.Install(logger)
	return logger, nil
}

// usageError is a command line the command cannot run: a bad flag, value
// or argument. It exits with status 2, as Go's flag package does.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError.
func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// printUsage writes the command's usage: the command line, its flags by
// group (the command's own first, the general ones last), each with its
// environment variable and default, and examples (help.go).
func (f *flagSet) printUsage(w io.Writer) {
	cmd := strings.TrimPrefix(f.Name(), "certfleet ")
	h := commandHelp[cmd]
	fmt.Fprintf(w, "usage: %s [flags]%s\n", f.Name(), h.args)
	if h.about != "" {
		fmt.Fprintf(w, "\n%s\n", h.about)
	}
	fmt.Fprintf(w, "\nEvery flag is also set by the CERTFLEET_* environment variable beside it.\n")
	f.assign()
	order := slices.DeleteFunc(slices.Clone(f.groups), func(g string) bool { return g == "" || g == generalGroup })
	order = append(append([]string{""}, order...), generalGroup)
	for _, g := range order {
		title := "flags"
		if g != "" {
			title = g + " flags"
		}
		printed := false
		f.VisitAll(func(fl *flag.Flag) {
			if f.groupOf[fl.Name] != g {
				return
			}
			if !printed {
				fmt.Fprintf(w, "\n%s:\n", title)
				printed = true
			}
			def := ""
			if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
				def = " (default " + fl.DefValue + ")"
			}
			fmt.Fprintf(w, "  --%s  %s\n      %s%s\n", fl.Name, envName(fl.Name), fl.Usage, def)
		})
	}
	printExamples(w, h.examples)
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "CERTFLEET_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *flagSet) parseArgs(args []string) error {
	if path := configPath(args); path != "" {
		if err := f.applyConfig(path); err != nil {
			return err
		}
	}
	var errs []string
	f.VisitAll(func(fl *flag.Flag) {
		env := envName(fl.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", env, v, valueProblem(fl, err)))
			}
		}
	})
	if len(errs) > 0 {
		return usagef("bad environment: %s", strings.Join(errs, "; "))
	}
	// The flag package's own messages (and its dump of every flag) are
	// replaced by one short line naming the flag and what it wants.
	f.SetOutput(io.Discard)
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{f.explain(err)}
	}
	if f.NArg() > 0 && !f.args {
		return usagef("unexpected arguments: %v", f.Args())
	}
	return nil
}

// explain rewrites a parse error of the flag package: for a bad value, the
// flag and what it takes.
func (f *flagSet) explain(err error) error {
	// "invalid value %q for flag -%s: %v", or for a boolean
	// "invalid boolean value %q for -%s: %v".
	m := badValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err // unknown flag, missing argument: already short
	}
	fl := f.Lookup(m[2])
	if fl == nil {
		return err
	}
	return fmt.Errorf("--%s %s: %v", m[2], m[1], valueProblem(fl, errors.New(m[3])))
}

var badValue = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): (.*)$`)

// valueProblem says what a flag's value must be, where the flag package
// says only "parse error".
func valueProblem(fl *flag.Flag, err error) error {
	g, ok := fl.Value.(flag.Getter)
	if !ok {
		return err
	}
	switch g.Get().(type) {
	case time.Duration:
		return errors.New("not a duration; use a number with a unit, such as 90s, 15m or 12h")
	case bool:
		return errors.New("not a boolean; use true or false")
	case int, int64, uint, uint64:
		return errors.New("not a whole number")
	}
	return err
}
