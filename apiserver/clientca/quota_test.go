package clientca

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestActiveCertQuota: a tenant's active certificates (neither revoked
// nor expired) are counted against client_certificates, in the step that
// issues one: creations past the limit are refused, a revocation or an
// expiry frees room, a renewal asked for counts like a creation while
// auto-renewal is never refused, and another tenant is not counted.
func TestActiveCertQuota(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	rdb := testenv.Redis(t).Client(t)
	s := newStore(t, rdb, testPass, clk.Now)
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := quota.Set(ctx, rdb, tenantA, quota.Limits{quota.ClientCerts: 3}); err != nil {
		t.Fatal(err)
	}
	create := func(tenant, cn string, days int) (Cert, error) {
		return s.Create(ctx, tenant, CreateRequest{CommonName: cn, GenerateKey: true, DaysValid: days})
	}
	wantExceeded := func(what string, err error) {
		t.Helper()
		var ex *quota.Exceeded
		if !errors.As(err, &ex) || ex.Resource != quota.ClientCerts || ex.Limit != 3 {
			t.Errorf("%s: got %v, want quota exceeded (client_certificates, 3)", what, err)
		}
	}
	wantCount := func(tenant string, want int64) {
		t.Helper()
		if n, err := s.ActiveCount(ctx, tenant); err != nil || n != want {
			t.Errorf("active count of %s: got %d %v, want %d", tenant, n, err, want)
		}
	}
	short, err := create(tenantA, "short", 2)
	if err != nil {
		t.Fatal(err)
	}
	auto, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "auto", GenerateKey: true, DaysValid: 30, RenewalThresholdDays: 10})
	if err != nil {
		t.Fatal(err)
	}
	third, err := create(tenantA, "third", 365)
	if err != nil {
		t.Fatal(err)
	}
	wantCount(tenantA, 3)
	_, err = create(tenantA, "fourth", 365)
	wantExceeded("fourth", err)
	_, err = s.Renew(ctx, tenantA, third.ID)
	wantExceeded("renewal asked for at the limit", err)
	if got, _ := s.Get(ctx, tenantA, third.ID); got.RenewedBy != "" {
		t.Errorf("a refused renewal marked the old certificate renewed by %s", got.RenewedBy)
	}
	if _, err := create(tenantB, "bob", 365); err != nil {
		t.Errorf("another tenant: %v", err)
	}

	// A revocation frees one.
	if _, err := s.Revoke(ctx, tenantA, third.ID, ""); err != nil {
		t.Fatal(err)
	}
	wantCount(tenantA, 2)
	if _, err := create(tenantA, "after revoke", 365); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
	_, err = create(tenantA, "full again", 365)
	wantExceeded("full again", err)

	// An expiry frees one; auto-renewal passes the limit rather than let
	// a certificate lapse.
	clk.Advance(21 * 24 * time.Hour)
	wantCount(tenantA, 2)
	if _, err := s.AutoRenew(ctx, tenantA, auto.ID); err != nil {
		t.Fatalf("auto-renewal: %v", err)
	}
	wantCount(tenantA, 3)
	_, err = create(tenantA, "after auto-renewal", 365)
	wantExceeded("after auto-renewal", err)
	if _, err := s.Get(ctx, tenantA, short.ID); err != nil {
		t.Fatal(err)
	}

	// Certificates issued before the count existed are counted from their
	// records on first use; a set an older server left wrong (a revoked
	// one in it) is built again when its mark is deleted.
	if err := rdb.Del(ctx, tenantActiveKey(tenantA), tenantCountedKey(tenantA)).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = create(tenantA, "after upgrade", 365)
	wantExceeded("records from before the count", err)
	wantCount(tenantA, 3)
	if err := rdb.ZAdd(ctx, tenantActiveKey(tenantA), redis.Z{Score: float64(clk.Now().Add(time.Hour).UnixMilli()), Member: third.ID}).Err(); err != nil {
		t.Fatal(err)
	}
	wantCount(tenantA, 4)
	if err := rdb.Del(ctx, tenantCountedKey(tenantA)).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = create(tenantA, "after upgrade", 365)
	wantExceeded("records from before the count", err)
	wantCount(tenantA, 3)

	// Unlimited.
	if err := quota.Set(ctx, rdb, tenantA, quota.Limits{quota.ClientCerts: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := create(tenantA, "unlimited", 365); err != nil {
		t.Errorf("limit 0: %v", err)
	}
	wantCount(tenantA, 4)
}

// TestActiveCertQuotaReplicas: replicas creating at once never pass the
// limit together.
func TestActiveCertQuotaReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s1 := newStore(t, rdb, testPass, nil)
	if _, err := s1.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t, rdb, testPass, nil)
	if err := quota.Set(ctx, rdb, tenantA, quota.Limits{quota.ClientCerts: 5}); err != nil {
		t.Fatal(err)
	}
	var ok, over atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Store{s1, s2}[i%2]
			_, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "c", GenerateKey: true})
			var ex *quota.Exceeded
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &ex):
				over.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 5 || over.Load() != 11 {
		t.Errorf("16 creations at once under a limit of 5: got %d issued and %d refused, want 5 and 11", ok.Load(), over.Load())
	}
}

// TestRevokeRefusesCAReasons: cACompromise and aACompromise (under any
// spelling) claim the shared CA compromised on everyone's CRL: refused,
// naming the reasons a tenant may give, with nothing revoked.
func TestRevokeRefusesCAReasons(t *testing.T) {
	ctx := context.Background()
	s, _ := initStore(t)
	c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "x", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"cACompromise", "CACOMPROMISE", "ca_compromise", "aACompromise", "aa_compromise"} {
		t.Run(reason, func(t *testing.T) {
			_, err := s.Revoke(ctx, tenantA, c.ID, reason)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reason must be one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn (or compromised)") {
				t.Errorf("got %v, want ErrInvalid naming the allowed reasons", err)
			}
		})
	}
	if got, _ := s.Get(ctx, tenantA, c.ID); got.Revoked {
		t.Fatal("a refused reason revoked the certificate")
	}
	if revs, _ := s.Revocations(ctx); len(revs) != 0 {
		t.Errorf("CRL entries after refused reasons: got %v, want none", revs)
	}
	if _, err := s.Revoke(ctx, tenantA, c.ID, "keyCompromise"); err != nil {
		t.Errorf("keyCompromise: %v", err)
	}
}
