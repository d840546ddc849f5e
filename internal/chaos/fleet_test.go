package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// binDir holds the certfleet binary the tests build once per test binary.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "certfleet-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := testenv.Main(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// settings are the sizes of one run of the suite: the short form runs
// inside `go tool task test`, the full form (CERTFLEET_CHAOS=full) under
// `go tool task chaos`.
type settings struct {
	full bool
	// tenants each register every lab domain: the load.
	tenants int
	// interval is the scan interval of every domain.
	interval time.Duration
	// load is how long the fleet runs under load before and after a fault.
	load time.Duration
	// clickhouseDown is how long ClickHouse stays down
	// (CERTFLEET_CHAOS_CLICKHOUSE_DOWN overrides it).
	clickhouseDown time.Duration
	// settle bounds the wait for ClickHouse to hold everything accepted.
	settle time.Duration
}

func suite(t *testing.T) settings {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: real processes; runs without -short (go tool task test, go tool task chaos)")
	}
	s := settings{tenants: 3, interval: 3 * time.Second, load: 5 * time.Second, clickhouseDown: 5 * time.Second, settle: 90 * time.Second}
	if os.Getenv("CERTFLEET_CHAOS") == "full" {
		s = settings{full: true, tenants: 20, interval: 2 * time.Second, load: 30 * time.Second, clickhouseDown: 60 * time.Second, settle: 3 * time.Minute}
	}
	if v := os.Getenv("CERTFLEET_CHAOS_CLICKHOUSE_DOWN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CERTFLEET_CHAOS_CLICKHOUSE_DOWN=%q: %v", v, err)
		}
		s.clickhouseDown = d
	}
	return s
}

var build struct {
	sync.Once
	bin string
	err error
}

// binary builds cmd/certfleet once per test binary, without the race
// detector: the roles are the system under test, not the test.
func binary(t *testing.T) string {
	t.Helper()
	build.Do(func() {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		out := filepath.Join(binDir, "certfleet")
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/certfleet")
		cmd.Dir = testenv.RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %w\n%s", err, b)
			return
		}
		build.bin = out
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// proc is one certfleet role running as its own process.
type proc struct {
	name string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

// fleet is certfleet on real processes: an apiserver, a coordinator (with
// the sink and the notifier) and one agent, against a lab.
type fleet struct {
	t        *testing.T
	s        settings
	bin      string
	dir      string
	redis    *testenv.RedisServer // nil on a cluster
	cluster  *testenv.Cluster     // nil on one server
	rdb      redis.UniversalClient
	ch       testenv.ClickHouseDB
	chServer *testenv.ClickHouseServer
	conn     driver.Conn
	lab      *lab.Lab
	tarpit   *tarpit // nil unless newFleetWith asked for one
	common   []string
	api      string // base URL of the apiserver
	// metrics maps each role to its /metrics URL.
	metrics map[string]string
	procs   map[string]*proc
	// emails counts tenants registered, for fresh names.
	tenants int
}

const shards = 4

// region is the agent's region.
const region = "eu-west"

func newFleet(t *testing.T, s settings) *fleet {
	t.Helper()
	return newFleetWith(t, s, 0)
}

// newFleetWith also serves a tarpit domain of tarpitIPs addresses when
// tarpitIPs > 0 (fleet.tarpit), resolved by the agent beside the lab's.
func newFleetWith(t *testing.T, s settings, tarpitIPs int) *fleet {
	t.Helper()
	return newFleetOn(t, s, tarpitIPs, nil)
}

// newFleetOn runs the fleet on cluster (with --redis-cluster and the
// extra flags every role gets), or on a server of its own when cluster is
// nil.
func newFleetOn(t *testing.T, s settings, tarpitIPs int, cluster *testenv.Cluster, extra ...string) *fleet {
	t.Helper()
	f := &fleet{t: t, s: s, bin: binary(t), dir: t.TempDir(), metrics: map[string]string{}, procs: map[string]*proc{}}
	redisURL := ""
	if cluster != nil {
		f.cluster, f.rdb, redisURL = cluster, cluster.Client(t), cluster.URL
		extra = append([]string{"--redis-cluster"}, extra...)
	} else {
		f.redis = testenv.RedisAOF(t)
		f.rdb, redisURL = f.redis.Client(t), f.redis.URL
	}
	// A server of the fleet's own: the outage case stops and starts it.
	f.chServer = testenv.OwnClickHouse(t)
	f.ch = f.chServer.ClickHouseDB
	f.conn = f.ch.Conn(t)
	l, err := lab.Start(context.Background(), lab.Config{}, testenv.Logger(t))
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	f.lab = l
	resolver := l.ResolverAddr()
	if tarpitIPs > 0 {
		f.tarpit = startTarpit(t, tarpitIPs, resolver)
		resolver = f.tarpit.resolver
	}
	roots := filepath.Join(f.dir, "roots.pem")
	if err := os.WriteFile(roots, l.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registration lookups go to the lab's registries, never off loopback.
	bootstrap := filepath.Join(f.dir, lab.BootstrapFile)
	if err := os.WriteFile(bootstrap, l.Bootstrap(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range f.procs {
			p.stop()
		}
		if t.Failed() {
			for name, p := range f.procs {
				t.Logf("log of %s (last lines):\n%s", name, tail(p.log, 40))
			}
		}
	})
	f.common = append([]string{"--redis-url", redisURL, "--log-level", "info"}, extra...)
	apiAddr := f.addr()
	f.api = "http://" + apiAddr
	f.metrics["apiserver"] = f.api + "/metrics"
	// Every tenant of a fleet is an account its claims create, from one
	// address: more than --rate-limit-claim-accounts lets through.
	f.start("apiserver", "apiserver", "--name", "api-1", "--listen", apiAddr, "--clickhouse-dsn", f.ch.DSN,
		"--rate-limit-claim-accounts", "1000")
	coAddr := f.addr()
	f.metrics["coordinator"] = "http://" + coAddr + "/metrics"
	// The suite judges the fleet by what the streams hold (accepted,
	// ackedJobs): no trimming, so they keep it all.
	f.start("coordinator", "coordinator", "--name", "co-1", "--metrics-listen", coAddr, "--clickhouse-dsn", f.ch.DSN,
		"--scan-interval", s.interval.String(), "--shards", strconv.Itoa(shards), "--stream-trim-interval", "0")
	agAddr := f.addr()
	f.metrics["agent"] = "http://" + agAddr + "/metrics"
	f.start("agent", "agent", "--name", "agent-1", "--region", region, "--metrics-listen", agAddr,
		"--resolver", resolver, "--extra-roots", roots, "--allow-targets", strings.Join(l.AllowTargets(), ","),
		"--check-legacy-tls=false", "--shards", strconv.Itoa(shards),
		"--rdap-bootstrap", bootstrap, "--whois-server", strings.Join(l.WHOISServers(), ","))
	f.waitReady(time.Minute)
	return f
}

func (f *fleet) addr() string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(f.t)) }

// start runs the binary with args plus the common flags as role name.
func (f *fleet) start(name string, args ...string) *proc {
	f.t.Helper()
	p := &proc{name: name, args: append(args, f.common...), log: filepath.Join(f.dir, name+".log")}
	f.procs[name] = p
	p.run(f.t, f.bin)
	return p
}

// restartWith stops role, starts it again with args added to its
// command line and waits until the fleet is ready.
func (f *fleet) restartWith(role string, args ...string) *proc {
	f.t.Helper()
	p := f.procs[role]
	p.stop()
	p.args = append(p.args, args...)
	p.run(f.t, f.bin)
	f.waitReady(time.Minute)
	return p
}

func (p *proc) run(t *testing.T, bin string) {
	t.Helper()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// The role dies with the test binary even if cleanup never runs.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.err = p.cmd.Wait()
		_ = out.Close()
		close(p.done)
	}()
}

// running tells whether the process is still up.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill ends the process with SIGKILL, as a crash does.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop ends the process with SIGTERM, then SIGKILL after 20 s.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readyURL is where a role answers /readyz.
func (f *fleet) readyURL(role string) string {
	return strings.TrimSuffix(f.metrics[role], "/metrics") + "/readyz"
}

// waitReady waits until every role answers /readyz with 200 and returns
// how long that took; it fails the test after limit, or when a role exited.
func (f *fleet) waitReady(limit time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	for role := range f.metrics {
		for {
			p := f.procs[role]
			if !p.running() {
				f.t.Fatalf("%s exited: %v\n%s", role, p.err, tail(p.log, 40))
			}
			if status(f.readyURL(role)) == http.StatusOK {
				break
			}
			if time.Since(start) > limit {
				f.t.Fatalf("%s not ready %s after start", role, limit)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// alive fails the test when a role exited.
func (f *fleet) alive() {
	f.t.Helper()
	for name, p := range f.procs {
		if !p.running() {
			f.t.Errorf("%s exited: %v\n%s", name, p.err, tail(p.log, 40))
		}
	}
}

func status(u string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// tenant is an account with an API key.
type tenant struct {
	email, key string
}

// bearer creates a read-write key of email's account with `certfleet
// apikey create`, for the REST API.
func (f *fleet) bearer(email string) string {
	f.t.Helper()
	args := append([]string{"apikey", "create", "--email", email, "--label", "chaos", "--scopes", "read,write"}, f.common...)
	created, err := exec.Command(f.bin, append(args, "--log-level", "warn")...).Output()
	key := regexp.MustCompile(`(?m)^key: +(\S+)$`).FindSubmatch(created)
	if err != nil || key == nil {
		f.t.Fatalf("apikey create: %v\n%s", err, created)
	}
	return string(key[1])
}

// newTenant claims a key for a fresh account through the KeyChest API.
func (f *fleet) newTenant() tenant {
	f.t.Helper()
	f.tenants++
	email := fmt.Sprintf("chaos-%d@example.com", f.tenants)
	var r struct {
		Status string `json:"status"`
		APIKey string `json:"api_key"`
	}
	f.call(http.MethodGet, "/api/v1.0/access/claim/"+url.PathEscape(email), nil, &r)
	if r.APIKey == "" {
		f.t.Fatalf("claim %s: got %+v, want a key", email, r)
	}
	return tenant{email: email, key: r.APIKey}
}

// add registers domain for tn and returns the domain's id.
func (f *fleet) add(tn tenant, domain string) string {
	f.t.Helper()
	var r struct {
		Status string `json:"status"`
		ID     string `json:"id"`
	}
	f.call(http.MethodPost, "/api/v1.0/servers/add", map[string]string{"api_key": tn.key, "domain": domain}, &r)
	if r.Status != "success" || r.ID == "" {
		f.t.Fatalf("add %s: got %+v, want status success and an id", domain, r)
	}
	return r.ID
}

// load registers every lab domain for s.tenants fresh tenants: with the
// short scan interval they keep the agent, sink and projector busy.
func (f *fleet) load() {
	f.t.Helper()
	for range f.s.tenants {
		tn := f.newTenant()
		for _, tg := range f.lab.Targets() {
			f.add(tn, tg.Domain)
		}
	}
}

// call sends a JSON request to the apiserver, retrying while it answers
// 503 or cannot be reached (a store may just be coming back).
// raw sends one request to the API and returns its status, headers and
// body, without retrying.
func (f *fleet) raw(method, path string, body any) (int, http.Header, string) {
	f.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, f.api+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(got)
}

func (f *fleet) call(method, path string, body, out any) {
	f.t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	c := http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(method, f.api+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		var got []byte
		if err == nil {
			got, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if err := json.Unmarshal(got, out); err != nil {
					f.t.Fatalf("%s %s: decode %s: %v", method, path, got, err)
				}
				return
			}
			err = fmt.Errorf("HTTP %d %s", resp.StatusCode, got)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probe registers one lab domain for a fresh tenant and returns how long
// it took until its scan was stored in ClickHouse: the end-to-end path
// (API, coordinator, agent, sink) measured in one figure.
func (f *fleet) probe(limit time.Duration) time.Duration {
	f.t.Helper()
	tn := f.newTenant()
	start := time.Now()
	id := f.add(tn, f.lab.Targets()[0].Domain)
	for {
		var n uint64
		err := f.conn.QueryRow(context.Background(), "SELECT count() FROM scan_results WHERE domain_id = ?", id).Scan(&n)
		if err == nil && n > 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			f.t.Fatalf("domain %s added %s ago: no scan stored (last error %v)", id, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scanSet is a set of scan keys.
type scanSet map[scanKey]bool

// jobs returns the set of job ids with a scan in the set.
func (s scanSet) jobs() map[string]bool {
	out := map[string]bool{}
	for k := range s {
		out[k.job] = true
	}
	return out
}

// scanKey is one scan of a job from one region and IP: one row in the
// history, whatever the redeliveries.
type scanKey struct{ job, region, ip string }

// accepted reads what Redis accepted so far: every scan result on the
// results stream (by job, region and IP) and the id of every event on
// the streams the sink stores. Entries that do not decode (poison) are
// left out: they go to the dead-letter stream, not the history.
func (f *fleet) accepted() (scanSet, map[string]bool) {
	f.t.Helper()
	ctx := context.Background()
	scans, ids := scanSet{}, map[string]bool{}
	for _, s := range append(events.EventStreams(), events.StreamResults) {
		msgs, err := f.rdb.XRange(ctx, s, "-", "+").Result()
		if err != nil {
			f.t.Fatalf("read %s: %v", s, err)
		}
		for _, m := range msgs {
			e, err := events.FromStreamValues(m.Values)
			if err != nil {
				continue
			}
			ids[e.EventID.String()] = true
			if e.Name != events.ScanCompleted {
				continue
			}
			var sc events.ScanCompletedV1
			if err := json.Unmarshal(e.Payload, &sc); err != nil {
				continue
			}
			for _, r := range sc.Results {
				scans[scanKey{sc.JobID.String(), sc.Region, r.IP}] = true
			}
		}
	}
	return scans, ids
}

// landed waits until ClickHouse holds everything Redis had accepted when
// it was called, and returns how long that took. Then it checks that
// nothing reads twice: one row per scan key and per event id with FINAL;
// rows without FINAL (copies a merge will collapse) are only logged.
func (f *fleet) landed(what string) time.Duration {
	f.t.Helper()
	ctx := context.Background()
	start := time.Now()
	// Jobs first: a job acknowledged before the results are read has its
	// result among them.
	acked := f.ackedJobs(ctx)
	scans, ids := f.accepted()
	lost, jobs := 0, scans.jobs()
	for job, where := range acked {
		if !jobs[job] {
			lost++
			f.t.Errorf("%s: job %s (%s) acknowledged by the agents without a result", what, job, where)
		}
	}
	f.t.Logf("%s: %d jobs acknowledged by the agents, %d of them without a result", what, len(acked), lost)
	var missingScans, missingEvents int
	for {
		stored, err := f.storedScans(ctx, "FINAL")
		if err == nil {
			var storedIDs map[string]uint64
			storedIDs, err = f.storedEvents(ctx, "FINAL")
			missingScans, missingEvents = 0, 0
			for k := range scans {
				if stored[k] == 0 {
					missingScans++
				}
			}
			for id := range ids {
				if storedIDs[id] == 0 {
					missingEvents++
				}
			}
			if err == nil && missingScans == 0 && missingEvents == 0 {
				break
			}
		}
		if time.Since(start) > f.s.settle {
			f.t.Fatalf("%s: after %s ClickHouse lacks %d of %d accepted scans and %d of %d events (last error %v)",
				what, f.s.settle, missingScans, len(scans), missingEvents, len(ids), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	f.t.Logf("%s: %d scans and %d events accepted by Redis all in ClickHouse after %s", what, len(scans), len(ids), took.Round(time.Millisecond))
	f.once(ctx, what)
	return took
}

// ackedJobs returns every job the agents' group acknowledged (read and no
// longer pending), by job id, with its stream and entry id.
func (f *fleet) ackedJobs(ctx context.Context) map[string]string {
	f.t.Helper()
	out := map[string]string{}
	group := agent.Group(region)
	for i := range shards {
		st := events.JobStream(i)
		info, err := f.rdb.XInfoGroups(ctx, st).Result()
		if err != nil {
			f.t.Fatalf("groups of %s: %v", st, err)
		}
		last := ""
		for _, g := range info {
			if g.Name == group {
				last = g.LastDeliveredID
			}
		}
		pending := map[string]bool{}
		pend, err := f.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: st, Group: group, Start: "-", End: "+", Count: 100000}).Result()
		if err != nil {
			f.t.Fatalf("pending of %s: %v", st, err)
		}
		for _, p := range pend {
			pending[p.ID] = true
		}
		msgs, err := f.rdb.XRange(ctx, st, "-", last).Result()
		if err != nil {
			f.t.Fatalf("read %s: %v", st, err)
		}
		for _, m := range msgs {
			e, err := events.FromStreamValues(m.Values)
			if err != nil || pending[m.ID] {
				continue // poison (dead-lettered) or not acknowledged yet
			}
			var job events.ScanRequestedV1
			if err := json.Unmarshal(e.Payload, &job); err != nil {
				continue
			}
			out[job.JobID.String()] = st + " entry " + m.ID
		}
	}
	return out
}

// once fails the test for every scan key or event id that reads as more
// than one row with FINAL, and logs the copies without FINAL.
func (f *fleet) once(ctx context.Context, what string) {
	f.t.Helper()
	for _, final := range []string{"FINAL", ""} {
		scans, err := f.storedScans(ctx, final)
		if err != nil {
			f.t.Fatalf("%s: read scan_results: %v", what, err)
		}
		evs, err := f.storedEvents(ctx, final)
		if err != nil {
			f.t.Fatalf("%s: read events: %v", what, err)
		}
		var twiceScans, twiceEvents []string
		for k, n := range scans {
			if n > 1 {
				twiceScans = append(twiceScans, fmt.Sprintf("%v×%d", k, n))
			}
		}
		for id, n := range evs {
			if n > 1 {
				twiceEvents = append(twiceEvents, fmt.Sprintf("%s×%d", id, n))
			}
		}
		if final == "" {
			f.t.Logf("%s: without FINAL %d of %d scan keys and %d of %d events have more than one row (copies a merge collapses)",
				what, len(twiceScans), len(scans), len(twiceEvents), len(evs))
			continue
		}
		if len(twiceScans) > 0 {
			f.t.Errorf("%s: %d scans read more than once with FINAL, e.g. %v", what, len(twiceScans), twiceScans[:min(5, len(twiceScans))])
		}
		if len(twiceEvents) > 0 {
			f.t.Errorf("%s: %d events read more than once with FINAL, e.g. %v", what, len(twiceEvents), twiceEvents[:min(5, len(twiceEvents))])
		}
	}
}

func (f *fleet) storedScans(ctx context.Context, final string) (map[scanKey]uint64, error) {
	rows, err := f.conn.Query(ctx, "SELECT toString(job_id), region, ip, count() FROM scan_results "+final+" GROUP BY job_id, region, ip")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[scanKey]uint64{}
	for rows.Next() {
		var k scanKey
		var n uint64
		if err := rows.Scan(&k.job, &k.region, &k.ip, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}

func (f *fleet) storedEvents(ctx context.Context, final string) (map[string]uint64, error) {
	rows, err := f.conn.Query(ctx, "SELECT toString(event_id), count() FROM events "+final+" GROUP BY event_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

// metric sums the samples of a counter across every role's /metrics whose
// labels include all of want.
func (f *fleet) metric(name string, want map[string]string) float64 {
	f.t.Helper()
	var sum float64
	for role, u := range f.metrics {
		resp, err := http.Get(u)
		if err != nil {
			f.t.Fatalf("scrape %s: %v", role, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, name+"{") {
				continue
			}
			labels, value, ok := strings.Cut(line[len(name)+1:], "} ")
			if !ok || !hasLabels(labels, want) {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				f.t.Fatalf("%s: metric line %q: %v", role, line, err)
			}
			sum += v
		}
		_ = resp.Body.Close()
	}
	return sum
}

// hasLabels tells whether a Prometheus label list (a="x",b="y") holds
// every pair of want. Label values here never contain commas or quotes.
func hasLabels(labels string, want map[string]string) bool {
	have := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		have[k] = strings.Trim(v, `"`)
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
