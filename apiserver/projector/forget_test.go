package projector

import (
	"context"
	"testing"
	"time"
)

// A tenant leaving deletes the views naming it, in either layout of the
// tenant field, and no other tenant's.
func TestForgetTenantViews(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	if err := p.Apply(ctx, scan(t, "eu", t0, okResult("192.0.2.1", "aa", na))); err != nil {
		t.Fatal(err)
	}
	if got := rdb.HGet(ctx, ViewKey(domainID), tenantField).Val(); got != tenantCode(tenant) {
		t.Fatalf("view's tenant field: got %q, want %q", got, tenantCode(tenant))
	}
	uuidTenant := "a0b92fc6-db20-5265-b3bb-b7f0b7bd9a72"
	rdb.HSet(ctx, ViewKey("old"), oldTenantField, tenant, removedField, 1)
	rdb.HSet(ctx, ViewKey("other"), tenantField, tenantCode(uuidTenant), removedField, 1)
	rdb.HSet(ctx, ViewKey("other-old"), oldTenantField, "tenant-b", removedField, 1)
	n, err := ForgetTenantViews(ctx, rdb, tenant)
	if err != nil || n != 2 {
		t.Fatalf("forget: got %d, %v; want 2 views", n, err)
	}
	if got := rdb.Exists(ctx, ViewKey(domainID), ViewKey("old"), ViewKey("other"), ViewKey("other-old")).Val(); got != 2 {
		t.Errorf("views left: got %d, want the other tenants' 2", got)
	}
	if n, err := ForgetTenantViews(ctx, rdb, uuidTenant); err != nil || n != 1 {
		t.Errorf("forget a UUID tenant: got %d, %v; want 1 view", n, err)
	}
}
