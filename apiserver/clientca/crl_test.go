package clientca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/testenv"
)

const revocationPassphrase = "revocation test passphrase"

// testClock is a clock the tests move.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newRevocationStore returns a store (a replica) on rdb; an empty
// passphrase makes one that cannot sign.
func newRevocationStore(t testing.TB, rdb redis.UniversalClient, passphrase string, now func() time.Time) *Store {
	t.Helper()
	s, err := New(Config{Passphrase: passphrase, PublicURL: "http://127.0.0.1:8080", Now: now}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return s
}

// issueN creates n certificates of tenant with generated keys.
func issueN(t testing.TB, s *Store, tenant string, n int) []Cert {
	t.Helper()
	out := make([]Cert, n)
	for i := range out {
		c, err := s.Create(context.Background(), tenant, CreateRequest{CommonName: fmt.Sprintf("client-%d", i), GenerateKey: true})
		if err != nil {
			t.Fatalf("create certificate: %v", err)
		}
		out[i] = c
	}
	return out
}

// parseCRL parses and checks a CRL against the CA: signature, number and
// validity; it returns the entries by serial.
func parseCRL(t *testing.T, s *Store, crl *CRL, wantNumber int64, validity time.Duration) map[string]x509.RevocationListEntry {
	t.Helper()
	rl, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	auth, err := s.Authority(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(auth.Cert); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if rl.Number.Cmp(big.NewInt(wantNumber)) != 0 || crl.Number != wantNumber {
		t.Errorf("CRL number: got %v (struct %d), want %d", rl.Number, crl.Number, wantNumber)
	}
	if got := rl.NextUpdate.Sub(rl.ThisUpdate); got != validity {
		t.Errorf("nextUpdate - thisUpdate: got %s, want %s", got, validity)
	}
	if !rl.ThisUpdate.Equal(crl.ThisUpdate) || !rl.NextUpdate.Equal(crl.NextUpdate) {
		t.Errorf("CRL times: got %s..%s in the DER, %s..%s in the struct", rl.ThisUpdate, rl.NextUpdate, crl.ThisUpdate, crl.NextUpdate)
	}
	out := map[string]x509.RevocationListEntry{}
	for _, e := range rl.RevokedCertificateEntries {
		out[e.SerialNumber.String()] = e
	}
	return out
}

// A CRL lists every revocation with its time and reason code, is signed by
// the CA, and gets the next number only when something changed.
func TestCRLRevocations(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	s := newRevocationStore(t, rdb, revocationPassphrase, clock.Now)
	if _, err := s.CRL(ctx, CRLOptions{}); !errors.Is(err, ErrNoCA) {
		t.Fatalf("CRL without a CA: got %v, want ErrNoCA", err)
	}
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	a := issueN(t, s, "tenant-a", 3)
	b := issueN(t, s, "tenant-b", 1)
	opts := CRLOptions{Validity: 2 * time.Hour}

	crl, err := s.CRL(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCRL(t, s, crl, 1, opts.Validity); len(got) != 0 {
		t.Errorf("first CRL: got %d entries, want 0", len(got))
	}
	again, err := s.CRL(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Number != 1 {
		t.Errorf("CRL with nothing revoked since: got number %d, want the cached 1", again.Number)
	}

	revoked := []struct {
		cert     Cert
		tenant   string
		reason   string
		wantCode int
	}{
		{a[0], "tenant-a", "compromised", 1},
		{a[1], "tenant-a", "", 0},
		{b[0], "tenant-b", "superseded", 4},
		{a[2], "tenant-a", "cessationOfOperation", 5},
	}
	for i, r := range revoked {
		clock.Add(time.Second)
		if _, err := s.Revoke(ctx, r.tenant, r.cert.ID, r.reason); err != nil {
			t.Fatal(err)
		}
		crl, err := s.CRL(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		entries := parseCRL(t, s, crl, int64(i+2), opts.Validity)
		if len(entries) != i+1 {
			t.Errorf("after %d revocations: got %d entries, want %d", i+1, len(entries), i+1)
		}
		e, ok := entries[r.cert.Serial.String()]
		if !ok {
			t.Fatalf("revoked serial %s not in CRL %d", r.cert.Serial, crl.Number)
		}
		if e.ReasonCode != r.wantCode {
			t.Errorf("reason %q: got code %d, want %d", r.reason, e.ReasonCode, r.wantCode)
		}
		if !e.RevocationTime.Equal(clock.Now()) {
			t.Errorf("revocation time: got %s, want %s", e.RevocationTime, clock.Now())
		}
		hasReasonExt := false
		for _, ext := range e.Extensions {
			hasReasonExt = hasReasonExt || ext.Id.String() == "2.5.29.21"
		}
		if hasReasonExt != (r.wantCode != 0) {
			t.Errorf("reason %q: reasonCode extension present %v, want %v (RFC 5280: absent for unspecified)", r.reason, hasReasonExt, r.wantCode != 0)
		}
	}
}

// A CRL is replaced once less than a quarter of its validity is left, and
// never served past its nextUpdate.
func TestCRLRenewedBeforeNextUpdate(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	s := newRevocationStore(t, rdb, revocationPassphrase, clock.Now)
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	opts := CRLOptions{Validity: 4 * time.Hour}
	steps := []struct {
		advance time.Duration
		want    int64
	}{
		{0, 1},
		{2 * time.Hour, 1},
		{59 * time.Minute, 1},          // 1h01m left
		{2 * time.Minute, 2},           // 59m left: replaced
		{3*time.Hour - time.Second, 2}, // 1h01m left of the second
		{24 * time.Hour, 3},            // long expired
		{time.Minute, 3},
	}
	for i, st := range steps {
		clock.Add(st.advance)
		crl, err := s.CRL(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if crl.Number != st.want {
			t.Errorf("step %d (+%s): got CRL %d, want %d", i, st.advance, crl.Number, st.want)
		}
		if !clock.Now().Before(crl.NextUpdate) {
			t.Errorf("step %d: served a CRL whose nextUpdate %s is past (now %s)", i, crl.NextUpdate, clock.Now())
		}
	}
}

// Replicas asking for the CRL at once after a revocation make one new CRL
// between them: every caller gets the same number, one more than before.
func TestCRLOneWriterAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	replicas := []*Store{
		newRevocationStore(t, rdb, revocationPassphrase, nil),
		newRevocationStore(t, rdb, revocationPassphrase, nil),
		newRevocationStore(t, rdb, revocationPassphrase, nil),
	}
	if _, err := replicas[0].Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	certs := issueN(t, replicas[0], "tenant-a", 5)
	const callers = 12 // per replica
	for round, c := range append([]Cert{{}}, certs...) {
		if c.ID != "" {
			if _, err := replicas[round%len(replicas)].Revoke(ctx, "tenant-a", c.ID, "keyCompromise"); err != nil {
				t.Fatal(err)
			}
		}
		var (
			wg      sync.WaitGroup
			numbers sync.Map
			fails   atomic.Int32
		)
		for _, r := range replicas {
			for range callers {
				wg.Go(func() {
					crl, err := r.CRL(ctx, CRLOptions{})
					if err != nil {
						t.Errorf("CRL: %v", err)
						fails.Add(1)
						return
					}
					numbers.Store(crl.Number, true)
				})
			}
		}
		wg.Wait()
		var got []int64
		numbers.Range(func(k, _ any) bool { got = append(got, k.(int64)); return true })
		want := int64(round + 1)
		if len(got) != 1 || got[0] != want {
			t.Errorf("round %d: callers got CRL numbers %v, want only %d", round, got, want)
		}
		stored, err := rdb.HGet(ctx, crlKey, "number").Result()
		if err != nil || stored != strconv.FormatInt(want, 10) {
			t.Errorf("round %d: stored number %q (%v), want %d", round, stored, err, want)
		}
	}
}

// A writer that lost the lock (it stalled past the lock's expiry and
// another took over) cannot publish what it signed.
func TestCRLStaleWriterFenced(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s := newRevocationStore(t, rdb, revocationPassphrase, nil)
	auth, err := s.Init(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, crlLockKey, "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.buildCRL(ctx, auth, ca.SHA256, "stalled-writer", CRLOptions{Validity: time.Hour}); err == nil {
		t.Fatal("build without the lock: got no error, want lost the lock")
	}
	if n, err := rdb.Exists(ctx, crlKey).Result(); err != nil || n != 0 {
		t.Errorf("CRL stored by a writer without the lock: exists %d (%v), want 0", n, err)
	}
	// The holder's CRL is then served to others once it publishes; here it
	// never does, so a reader gives up after crlWait with ErrCRLBusy.
	start := time.Now()
	if _, err := s.CRL(ctx, CRLOptions{}); !errors.Is(err, ErrCRLBusy) {
		t.Errorf("CRL while another holds the lock and none is cached: got %v, want ErrCRLBusy", err)
	}
	if took := time.Since(start); took < crlWait {
		t.Errorf("gave up after %s, want at least %s", took, crlWait)
	}
}

// A replica without the passphrase serves the cached CRL while it is
// valid, even behind a revocation, and fails once there is none to serve.
func TestCRLWithoutPassphrase(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	signer := newRevocationStore(t, rdb, revocationPassphrase, clock.Now)
	reader := newRevocationStore(t, rdb, "", clock.Now)
	if _, err := signer.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.CRL(ctx, CRLOptions{}); !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("first CRL without passphrase: got %v, want ErrNoPassphrase", err)
	}
	certs := issueN(t, signer, "tenant-a", 1)
	if _, err := signer.CRL(ctx, CRLOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := signer.Revoke(ctx, "tenant-a", certs[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	crl, err := reader.CRL(ctx, CRLOptions{})
	if err != nil || crl.Number != 1 {
		t.Fatalf("CRL behind a revocation without passphrase: got %v, %v, want the cached number 1", crl, err)
	}
	clock.Add(25 * time.Hour)
	if _, err := reader.CRL(ctx, CRLOptions{}); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("CRL past nextUpdate without passphrase: got %v, want ErrNoPassphrase", err)
	}
}

// BenchmarkCRL compares building and signing a CRL of 10,000 entries with
// serving the cached one (the ratio is what to read).
func BenchmarkCRL(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	s := newRevocationStore(b, rdb, revocationPassphrase, nil)
	if _, err := s.Init(ctx, ""); err != nil {
		b.Fatal(err)
	}
	const n = 10000
	pipe := rdb.Pipeline()
	now := time.Now().UnixMilli()
	for i := range n {
		serial, err := newSerial()
		if err != nil {
			b.Fatal(err)
		}
		pipe.HSet(ctx, revokedKey, serial.String(), fmt.Sprintf("%d keyCompromise", now-int64(i)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.CRL(ctx, CRLOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			if err := rdb.Incr(ctx, RevocationVersionKey).Err(); err != nil {
				b.Fatal(err)
			}
			crl, err := s.CRL(ctx, CRLOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(crl.DER)), "crl-bytes")
		}
	})
}
