package acme

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/lease"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// quickEnv is a store on Redis and a worker whose CA is never reached:
// for the paths that are not about ACME.
func quickEnv(t *testing.T, policy guard.Policy) (*env, *Worker) {
	t.Helper()
	e := &env{t: t, rdb: testenv.Redis(t).Client(t), clock: &clock{now: time.Now()}}
	var err error
	e.store, err = managedcert.New(managedcert.Config{Passphrase: passphrase, DNSTargets: loopback, Now: e.clock.Now},
		e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{DirectoryURL: "https://127.0.0.1:1/dir", DNSTargets: policy, RetryMin: time.Minute,
		RetryMax: 10 * time.Minute, Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return e, w
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"http directory", Config{DirectoryURL: "http://ca.example/dir"}, "https"},
		{"negative poll", Config{PollInterval: -time.Second}, "positive"},
		{"max below min", Config{RetryMin: time.Hour, RetryMax: time.Minute}, "retry max"},
		{"tiny lease", Config{LeaseTTL: time.Millisecond}, "lease ttl"},
		{"no workers", Config{Workers: -1}, "workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil {
				t.Errorf("got %v, want no error", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	w := &Worker{cfg: Config{RetryMin: time.Minute, RetryMax: 10 * time.Minute}}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute}, {4, 8 * time.Minute}, {5, 10 * time.Minute}, {40, 10 * time.Minute}} {
		t.Run(fmt.Sprint(tc.attempt), func(t *testing.T) {
			for range 50 {
				got := w.backoff(tc.attempt)
				if got < tc.want*9/10 || got > tc.want*11/10 {
					t.Fatalf("attempt %d: got %v, want %v ±10%%", tc.attempt, got, tc.want)
				}
			}
		})
	}
}

// A CA's Retry-After longer than the backoff wins; a shorter one does not
// shorten the backoff.
func TestRetryAfterHonoured(t *testing.T) {
	e, w := quickEnv(t, loopback)
	ctx := context.Background()
	if _, err := e.store.PutDNSAccount(ctx, "t1", managedcert.ProviderRFC2136, "lab",
		map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{{"longer than backoff", 3 * time.Hour, 3 * time.Hour}, {"shorter than backoff", time.Second, time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			domain := strings.ReplaceAll(tc.name, " ", "-") + ".acme.test"
			e.create("t1", domain, "lab")
			c := e.get("t1", domain)
			err := fmt.Errorf("obtain: %w", &legoacme.RateLimitedError{RetryAfter: tc.retryAfter,
				ProblemDetails: &legoacme.ProblemDetails{Type: legoacme.RateLimitedErrorType, Detail: "too many orders"}})
			w.failed(ctx, zap.NewNop(), c, err)
			got := e.get("t1", domain)
			wait := got.RetryAt.Sub(e.clock.Now())
			if got.Status != managedcert.StatusFailed || got.Attempt != 1 || !strings.Contains(got.Error, "too many orders") {
				t.Errorf("record: %+v", got)
			}
			if wait < tc.want*9/10-time.Second || wait > tc.want*11/10 {
				t.Errorf("retry in %v, want %v", wait, tc.want)
			}
		})
	}
}

// The RFC 2136 nameserver is judged again when used, by the addresses its
// name resolves to then.
func TestNameserverJudgedAtUse(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		policy guard.Policy
		ns     string
		want   string
		err    string
	}{
		{"loopback name refused", guard.Policy{}, "localhost:5353", "", "--allow-dns-targets"},
		{"metadata refused", guard.Policy{}, "169.254.169.254", "", "--allow-dns-targets"},
		{"loopback name allowed", loopback, "localhost:5353", "127.0.0.1:5353", ""},
		{"default port", loopback, "127.0.0.2", "127.0.0.2:53", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, w := quickEnv(t, tc.policy)
			got, err := w.nameserver(ctx, tc.ns)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got %q, %v; want an error mentioning %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// A worker that loses its lease mid-order (another replica took the
// domain over) abandons the order and records nothing: the holder does.
func TestLeaseLostAbandonsOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w, err := New(Config{DirectoryURL: e.ca.DirectoryURL, Roots: e.ca.Roots, Resolvers: []string{e.ca.DNSAddr},
		DNSTargets: loopback, LeaseTTL: 300 * time.Millisecond, Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.account("t1", "slow", testenv.ACMETSIGSecret, map[string]string{"RFC2136_DNS_TIMEOUT": "3", "RFC2136_ZONES": testenv.ACMEZone})
	e.create("t1", "lost.acme.test", "slow")
	e.ca.Zone.SetSilent(true) // the update hangs: the order is in flight
	key := managedcert.LeaseKey("t1", "lost.acme.test")
	stolen := make(chan error, 1)
	go func() {
		for {
			// Wait until the worker holds the lease, then take it over.
			if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n == 1 {
				time.Sleep(200 * time.Millisecond)
				stolen <- e.rdb.Set(ctx, key, lease.NewToken(), time.Minute).Err()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	w.Process(ctx, "t1", "lost.acme.test")
	if err := <-stolen; err != nil {
		t.Fatal(err)
	}
	c := e.get("t1", "lost.acme.test")
	if c.Status != managedcert.StatusPending || c.Attempt != 0 || c.Error != "" {
		t.Errorf("after losing the lease: got %+v, want the record untouched (pending, attempt 0)", c)
	}
}

// A tenant whose ACME orders of the day are spent is postponed to the
// next UTC day without reaching the CA or counting an attempt.
func TestOrdersQuotaPostpones(t *testing.T) {
	e := &env{t: t, rdb: testenv.Redis(t).Client(t), clock: &clock{now: time.Now()}}
	limits := quota.Limits{}
	for k, v := range quota.Defaults {
		limits[k] = v
	}
	limits[quota.CertOrders] = 1
	var err error
	e.store, err = managedcert.New(managedcert.Config{Passphrase: passphrase, DNSTargets: loopback, Now: e.clock.Now, Quotas: limits},
		e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{DirectoryURL: "https://127.0.0.1:1/dir", DNSTargets: loopback, Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.store.PutDNSAccount(ctx, "t1", managedcert.ProviderRFC2136, "lab",
		map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}); err != nil {
		t.Fatal(err)
	}
	e.create("t1", "quota.acme.test", "lab")
	if err := e.store.CountOrder(ctx, "t1"); err != nil { // the day's one order
		t.Fatal(err)
	}
	w.Process(ctx, "t1", "quota.acme.test")
	c := e.get("t1", "quota.acme.test")
	tomorrow := e.clock.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if !c.RetryAt.Equal(tomorrow) || c.Attempt != 0 || !strings.Contains(c.Error, "orders of the day") {
		t.Errorf("over the orders quota: got retry at %v, attempt %d, error %q; want retry at %v, attempt 0, the quota named",
			c.RetryAt, c.Attempt, c.Error, tomorrow)
	}
	if n, _ := e.store.OrdersToday(ctx, "t1"); n != 1 {
		t.Errorf("orders today: got %d, want 1", n)
	}
}
