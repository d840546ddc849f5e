package accounts

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/testenv"
)

// On a Redis Cluster with replicas, a key's revocation waits on both
// masters it writes to: the one of the deployment-wide apikey:<hash>
// record (the revoked_at mark) and the one of the tenant's slot (the
// unlisting and its event). With the record's replica paused the
// revocation is refused before anything else is written; with only the
// tenant's replica paused the mark is confirmed, so the key stops working,
// and the unlisting is refused; resumed, the retries finish.
func TestKeyRevocationWaitsOnBothMasters(t *testing.T) {
	ctx := context.Background()
	c := testenv.RedisClusterWithReplicas(t, 3)
	s, err := New(Config{Wait: replicated.Config{Replicas: 1, Timeout: 300 * time.Millisecond}}, c.Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := s.EnsureAccount(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tenantMaster := c.MasterOf(t, apiKeysKey(tenant))
	// A key whose record lives on another master than the tenant's slot.
	var k NewKey
	for range 20 {
		if k, err = s.CreateKey(ctx, tenant, "ci", []string{ScopeRead}, nil, SourceCLI); err != nil {
			t.Fatal(err)
		}
		if c.MasterOf(t, apiKeyKey(HashKey(k.Key))) != tenantMaster {
			break
		}
	}
	recordMaster := c.MasterOf(t, apiKeyKey(HashKey(k.Key)))
	if recordMaster == tenantMaster {
		t.Fatal("20 keys in a row on the tenant's master")
	}

	r := c.ReplicaOf(t, recordMaster)
	r.Pause()
	err = s.RevokeKey(ctx, tenant, k.ID)
	r.Resume()
	if !errors.Is(err, replicated.ErrNotReplicated) {
		t.Fatalf("revoke with the record's replica paused: got %v, want ErrNotReplicated", err)
	}
	if listed, _ := s.rdb.HGet(ctx, apiKeysKey(tenant), k.ID).Result(); listed == "" {
		t.Error("key unlisted although its revocation mark was not confirmed")
	}

	r = c.ReplicaOf(t, tenantMaster)
	r.Pause()
	err = s.RevokeKey(ctx, tenant, k.ID)
	r.Resume()
	if !errors.Is(err, replicated.ErrNotReplicated) {
		t.Fatalf("revoke with the tenant's replica paused: got %v, want ErrNotReplicated", err)
	}
	if _, err := s.AuthenticateBearer(ctx, k.Key); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("key whose mark was confirmed: got %v, want ErrUnknownKey", err)
	}
	// The master applied the unlisting before its wait fell short.
	if err := s.RevokeKey(ctx, tenant, k.ID); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("retried revocation: got %v, want ErrUnknownKeyID (done before)", err)
	}
}
