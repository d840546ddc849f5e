// Package accountstest writes the accounts records that other packages'
// tests need without going through the accounts store (which picks its
// own domain ids and appends events).
package accountstest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
)

// PutDomain writes the record of tenantID's domain id named host:port, as
// an active domain added through the API: what tells the alert engine the
// domain exists. It writes no tenant index and no event. The record is
// of the layout before the compact field names (tenant_id, not t: see
// accounts' domains.go), which every reader still takes, so the tests of
// other packages read that layout too.
func PutDomain(tb testing.TB, rdb redis.UniversalClient, tenantID, id, host string, port int) {
	tb.Helper()
	err := rdb.HSet(context.Background(), accounts.DomainKey(tenantID, id), "tenant_id", tenantID, "host", host,
		"port", strconv.Itoa(port), "tags", "[]", "source", "api", "rev", "1").Err()
	if err != nil {
		tb.Fatalf("put domain record %s: %v", id, err)
	}
}

// RemoveDomain deletes the record of tenantID's domain id, as a removal
// does before its domain.removed event: the alert engine's fields
// (accounts.AlertFieldPrefix) stay for the engine to resolve and drop,
// with the name they are for and the tenant.
func RemoveDomain(tb testing.TB, rdb redis.UniversalClient, tenantID, id string) {
	tb.Helper()
	ctx := context.Background()
	key := accounts.DomainKey(tenantID, id)
	rec, err := rdb.HGetAll(ctx, key).Result()
	if err != nil {
		tb.Fatalf("remove domain record %s: %v", id, err)
	}
	var own []string
	for f := range rec {
		if !strings.HasPrefix(f, accounts.AlertFieldPrefix) {
			own = append(own, f)
		}
	}
	if len(own) == 0 {
		return
	}
	if len(own) < len(rec) {
		// As the removal script: the state keeps the name it is for and
		// names the tenant.
		if rec[accounts.AlertVersionField] != "" && rec[accounts.AlertNameField] == "" {
			rdb.HSet(ctx, key, accounts.AlertNameField, accounts.RecordName(rec))
		}
		rdb.HSet(ctx, key, accounts.RemovedTenantField, tenantID)
	}
	if err := rdb.HDel(ctx, key, own...).Err(); err != nil {
		tb.Fatalf("remove domain record %s: %v", id, err)
	}
}
