// Package tenants deletes a tenant (issue 16, "A tenant leaves"): the
// operator's `certfleet tenant delete --email E`.
//
// Each package that keeps tenant data removes its own keys (a Forget
// function or method next to its key layout); this package only calls
// them in order and adds up what they removed:
//
//  1. accounts: the API keys are revoked (they stop authenticating at
//     once), every domain is removed through RemoveDomain with its
//     domain.removed.v1 event (the coordinator unschedules it, the
//     projector drops its view, as for a domain DELETE), then the key
//     records, the tenant's namespace and the account record go;
//  2. channels (through Delete, with channel.deleted.v1), quota
//     overrides, managed certificates (sealed keys, DNS and ACME
//     accounts);
//  3. the client CA: the tenant's certificates are revoked
//     (cessationOfOperation) so OCSP and the CRL keep refusing them, and
//     their sealed keys and the tenant's list are dropped;
//  4. a wait (at most Wait) until the consumer Groups (the projector, the
//     sink) have read the tenant's stream up to the events of steps 1-3:
//     the projector would otherwise write the removed domains' view
//     tombstones after step 5, and the sink the removal events after
//     step 6;
//  5. projector: each removed domain's view, version and registration
//     reference (the events' consumers leave a tombstone; a leaving
//     tenant leaves none); alerts: records, states, indexes, settings;
//  6. ClickHouse: `ALTER TABLE ... DELETE WHERE tenant_id` on events (but
//     tenant.deleted.v1 records), scan_results and audit_log;
//  7. tenant.deleted.v1 on the tenant's stream: the audit record that
//     stays, in the stream until trimmed and in ClickHouse's events.
//
// Every step is idempotent, so a run that failed half way is finished by
// running it again; a run for an account already deleted removes nothing.
package tenants

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/schema"
)

// ErrUnknownAccount is a deletion of an email that has no account and
// was never deleted (nothing of it is found).
var ErrUnknownAccount = errors.New("no such account")

// Deleter deletes tenants. Accounts, Channels and CA are the stores of
// the packages; CH may be nil (no ClickHouse: its rows are not deleted
// and the report says so).
type Deleter struct {
	RDB      redis.UniversalClient
	Accounts *accounts.Store
	Channels *channels.Store
	CA       *clientca.Store
	CH       driver.Conn
	// Groups are the consumer groups on the event streams that act on
	// the events this deletion appends (the projector, the ClickHouse
	// sink); the last steps wait until each has read and acknowledged
	// them. A group the tenant's stream does not have is not waited for.
	Groups []string
	// Wait bounds that wait (default 30s). Past it the last steps run
	// anyway and the report says so: what a consumer writes later is
	// removed by running the deletion again.
	Wait time.Duration
	// Source is recorded in tenant.deleted.v1 ("cli").
	Source string
	Logger *zap.Logger
}

// Report is what a deletion removed.
type Report struct {
	TenantID string
	// Existed is false when no account record was found (a second run).
	Existed bool
	// Removed counts what was removed, by kind.
	Removed map[string]int64
	// ClickHouseTables are the tables a DELETE mutation was issued on
	// (asynchronous: see schema.ForgetTenant).
	ClickHouseTables []string
	// CaughtUp is false when a consumer group had not read this
	// deletion's events within Wait: run again later.
	CaughtUp bool
	// EventID is the tenant.deleted.v1 event appended ("" when nothing
	// was there to delete).
	EventID string
}

// Kinds returns the kinds of Removed, sorted.
func (r Report) Kinds() []string {
	out := make([]string, 0, len(r.Removed))
	for k := range r.Removed {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Total is the sum of Removed.
func (r Report) Total() int64 {
	var n int64
	for _, v := range r.Removed {
		n += v
	}
	return n
}

// Delete removes the tenant of email. An email without an account that
// was never deleted is ErrUnknownAccount; one deleted before gives a
// report with Existed false and nothing removed (ClickHouse deletes are
// issued again, which is harmless and removes rows the sink wrote after
// the first run).
func (d *Deleter) Delete(ctx context.Context, email string) (Report, error) {
	email, err := accounts.ParseEmail(email)
	if err != nil {
		return Report{}, err
	}
	tenant := events.TenantID(email)
	rep := Report{TenantID: tenant, Removed: map[string]int64{}}
	if rep.Existed, err = d.Accounts.Exists(ctx, tenant); err != nil {
		return rep, err
	}
	add := func(kind string, n int64) {
		if n > 0 {
			rep.Removed[kind] += n
		}
	}

	acc, err := d.Accounts.Forget(ctx, tenant)
	if err != nil {
		return rep, err
	}
	add("domains", int64(len(acc.Domains)))
	add("api_keys", acc.APIKeys)
	add("account", acc.Account)
	add("account_indexes", acc.TenantKeys)
	if d.Channels != nil {
		n, err := d.Channels.Forget(ctx, tenant)
		if err != nil {
			return rep, err
		}
		add("channels", n)
	}
	n, err := quota.Forget(ctx, d.RDB, tenant)
	if err != nil {
		return rep, err
	}
	add("quota_overrides", n)
	mc, err := managedcert.Forget(ctx, d.RDB, tenant)
	if err != nil {
		return rep, err
	}
	add("managed_certificates", mc.Certificates)
	add("dns_accounts", mc.DNSAccounts)
	add("acme_accounts", mc.ACMEAccounts)
	add("managed_certificate_keys", mc.Other)
	if d.CA != nil {
		cc, err := d.CA.Forget(ctx, tenant)
		if err != nil {
			return rep, err
		}
		add("client_certificates_revoked", cc.Revoked)
		add("client_certificate_keys", cc.KeysDropped)
		add("client_certificate_lists", cc.Lists)
	}

	if !rep.Existed && rep.Total() == 0 {
		// Nothing was there: a second run, or an email never seen.
		deleted, err := d.deletedBefore(ctx, tenant)
		if err != nil {
			return rep, err
		}
		if !deleted {
			return rep, fmt.Errorf("%w: %s", ErrUnknownAccount, email)
		}
	}
	rep.CaughtUp = d.waitConsumers(ctx, tenant)
	domainIDs := make([]string, len(acc.Domains))
	for i, dm := range acc.Domains {
		n, err := projector.ForgetDomain(ctx, d.RDB, dm.ID, dm.Host)
		if err != nil {
			return rep, err
		}
		add("domain_views", n)
		domainIDs[i] = dm.ID
	}
	n, err = projector.ForgetTenantViews(ctx, d.RDB, tenant)
	if err != nil {
		return rep, err
	}
	add("domain_views", n)
	al, err := alerts.Forget(ctx, d.RDB, tenant, domainIDs)
	if err != nil {
		return rep, err
	}
	add("alerts", al.Alerts)
	add("alert_states", al.States)
	add("alert_indexes", al.Indexes)
	add("alert_settings", al.Settings)
	if d.CH != nil {
		if rep.ClickHouseTables, err = schema.ForgetTenant(ctx, d.CH, tenant, events.TenantDeleted); err != nil {
			return rep, err
		}
	}
	if rep.Existed || rep.Total() > 0 {
		if rep.EventID, err = d.record(ctx, tenant, rep); err != nil {
			return rep, err
		}
	}
	d.logger().Info("tenant deleted", zap.String("tenant_id", tenant), zap.Bool("existed", rep.Existed),
		zap.Int64("removed", rep.Total()), zap.Strings("clickhouse_tables", rep.ClickHouseTables))
	return rep, nil
}

func (d *Deleter) logger() *zap.Logger {
	if d.Logger == nil {
		return zap.NewNop()
	}
	return d.Logger
}

// deletedBefore tells whether ClickHouse holds a tenant.deleted.v1 of
// tenant (false without ClickHouse).
func (d *Deleter) deletedBefore(ctx context.Context, tenant string) (bool, error) {
	if d.CH == nil {
		return false, nil
	}
	var n uint64
	if err := d.CH.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id = ? AND name = ?",
		tenant, events.TenantDeleted).Scan(&n); err != nil {
		return false, fmt.Errorf("look for an earlier deletion of %s: %w", tenant, err)
	}
	return n > 0, nil
}

// waitConsumers waits until every group of Groups that the tenant's
// stream has has read and acknowledged it up to its last entry, or Wait
// passed; it tells whether they all had.
func (d *Deleter) waitConsumers(ctx context.Context, tenant string) bool {
	wait := d.Wait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	stream := events.EventStream(tenant)
	last, err := d.RDB.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return err == nil
	}
	target := last[0].ID
	deadline := time.Now().Add(wait)
	for {
		behind := ""
		for _, g := range d.Groups {
			if !caughtUp(ctx, d.RDB, stream, g, target) {
				behind = g
				break
			}
		}
		if behind == "" {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.logger().Warn("a consumer group has not read the deletion's events; going on",
				zap.String("tenant_id", tenant), zap.String("stream", stream), zap.String("group", behind))
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// caughtUp: group has delivered target and holds no pending entry at or
// before it, or the stream has no such group.
func caughtUp(ctx context.Context, rdb redis.UniversalClient, stream, group, target string) bool {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name != group {
			continue
		}
		if !idAtLeast(g.LastDeliveredID, target) {
			return false
		}
		p, err := rdb.XPending(ctx, stream, group).Result()
		if err != nil {
			return false
		}
		return p.Count == 0 || !idAtLeast(target, p.Lower)
	}
	return true
}

// idAtLeast compares two stream ids "<ms>-<seq>".
func idAtLeast(a, b string) bool {
	var am, as, bm, bs uint64
	if _, err := fmt.Sscanf(a, "%d-%d", &am, &as); err != nil {
		return false
	}
	if _, err := fmt.Sscanf(b, "%d-%d", &bm, &bs); err != nil {
		return false
	}
	return am > bm || (am == bm && as >= bs)
}

// record appends tenant.deleted.v1 to the tenant's stream.
func (d *Deleter) record(ctx context.Context, tenant string, rep Report) (string, error) {
	ev, err := events.New(events.TenantDeleted, tenant, tenant, events.TenantDeletedV1{
		Removed: rep.Removed, ClickHouseTables: rep.ClickHouseTables, Source: d.Source,
	})
	if err != nil {
		return "", err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return "", err
	}
	if err := d.RDB.XAdd(ctx, &redis.XAddArgs{Stream: events.EventStream(tenant), MaxLen: events.DefaultMaxLen,
		Approx: true, Values: fields}).Err(); err != nil {
		return "", fmt.Errorf("record deletion of %s: %w", tenant, err)
	}
	return ev.EventID.String(), nil
}
