package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
)

// The projector keeps the facts of apiserver/domainindex (the tenants'
// list indexes) in step with the views: after a batch changed views, or
// registrations fanned out to domains, it derives each domain's facts
// from its view and registration as they are and writes them. Facts are a
// function of the views, so a redelivered or replayed event, or two
// replicas writing one domain, give the same entries; a replica that read
// a view just before another changed it could write older facts last, so
// each write is followed by a second read, and facts that moved are
// written again.

// syncRounds bounds the write-and-check rounds of one sync; each extra
// round means a view changed while it was being indexed, whose own sync
// follows anyway.
const syncRounds = 4

// Leading is what a view's entries say for its status, whatever the
// clock: the entry with a certificate that expires first (ties: the first
// in order; one with no expiry after every dated one), nil when none has
// a certificate; and whether a certificate seen has an invalid chain or
// hostname. grade.Summarize and the list index both build on it.
func Leading(entries []ExpEntry) (first *ExpEntry, invalid bool) {
	for i := range entries {
		e := &entries[i]
		if !e.CertificateFound {
			continue
		}
		if !e.ChainValid || !e.HostnameValid {
			invalid = true
		}
		// NoExpiry (9999-12-31T23:59:59Z) is after every real date, so
		// a certificate without expiry is first only when all are.
		if first == nil || e.NotAfter.Before(first.NotAfter) {
			first = e
		}
	}
	return first, invalid
}

// WhoisExpiry is what regs (ReadRegistrations) say of the registration
// of host: its expiry, or nil and why none is known.
func WhoisExpiry(host string, regs map[string]Registration) (*time.Time, string) {
	reg := RegistrableOf(host)
	if reg == "" {
		return nil, RegistrationNotRegistrable
	}
	r, ok := regs[reg]
	if !ok {
		r = Registration{Domain: reg}
	}
	return r.Expiry()
}

// SyncIndex writes the list-index facts of domainIDs from their views and
// registrations. A domain whose view names no tenant yet is left to the
// backfill.
func SyncIndex(ctx context.Context, rdb redis.UniversalClient, domainIDs []string) error {
	return syncIndex(ctx, rdb, domainIDs, "")
}

// SyncTenantIndex is SyncIndex for domains of tenantID, whose views may
// not name it yet: the API calls it after an add or a rename, so the
// lists show the domain's registration at once.
func SyncTenantIndex(ctx context.Context, rdb redis.UniversalClient, tenantID string, domainIDs []string) error {
	return syncIndex(ctx, rdb, domainIDs, tenantID)
}

// syncIndex is SyncIndex; tenantID, when not "", is the tenant of every
// domain (the backfill knows it; a view may not).
func syncIndex(ctx context.Context, rdb redis.UniversalClient, domainIDs []string, tenantID string) error {
	for chunk := range slices.Chunk(domainIDs, ChunkSize) {
		if err := syncChunk(ctx, rdb, chunk, tenantID); err != nil {
			return err
		}
	}
	return nil
}

// syncChunk is syncIndex of at most ChunkSize domains.
func syncChunk(ctx context.Context, rdb redis.UniversalClient, domainIDs []string, tenantID string) error {
	facts, err := indexFacts(ctx, rdb, domainIDs, tenantID)
	if err != nil {
		return err
	}
	for range syncRounds {
		if len(facts) == 0 {
			return nil
		}
		if err := domainindex.ApplyFacts(ctx, rdb, facts, accounts.DomainKey); err != nil {
			return err
		}
		ids := make([]string, len(facts))
		for i, f := range facts {
			ids[i] = f.DomainID
		}
		again, err := indexFacts(ctx, rdb, ids, tenantID)
		if err != nil {
			return err
		}
		written := make(map[string]domainindex.Facts, len(facts))
		for _, f := range facts {
			written[f.DomainID] = f
		}
		moved := again[:0]
		for _, f := range again {
			if f != written[f.DomainID] {
				moved = append(moved, f)
			}
		}
		facts = moved
	}
	return nil
}

// indexFacts reads the views and registrations of domainIDs and derives
// their facts, in order; domains without a known tenant are left out.
func indexFacts(ctx context.Context, rdb redis.UniversalClient, domainIDs []string, tenantID string) ([]domainindex.Facts, error) {
	if len(domainIDs) == 0 {
		return nil, nil
	}
	snaps, err := ReadSnapshots(ctx, rdb, domainIDs)
	if err != nil {
		return nil, err
	}
	// The registration facts are for the record's host, which a rename
	// changes before the projector renames the view.
	tenants := make([]string, len(snaps))
	hosts := make([]*redis.StringCmd, len(snaps))
	pipe := rdb.Pipeline()
	for i, s := range snaps {
		tenants[i] = s.TenantID
		if tenantID != "" {
			tenants[i] = tenantID
		}
		if tenants[i] != "" {
			hosts[i] = pipe.HGet(ctx, accounts.DomainKey(tenants[i], s.DomainID), "host")
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read hosts of %d domains: %w", len(snaps), err)
	}
	regs := make([]string, 0, len(snaps))
	for _, h := range hosts {
		if h != nil {
			if r := RegistrableOf(h.Val()); r != "" {
				regs = append(regs, r)
			}
		}
	}
	byReg, err := ReadRegistrations(ctx, rdb, regs)
	if err != nil {
		return nil, err
	}
	out := make([]domainindex.Facts, 0, len(snaps))
	for i, s := range snaps {
		// A domain without a known tenant, or without a record (removed),
		// gets no facts.
		if tenants[i] == "" || hosts[i].Val() == "" {
			continue
		}
		f := domainindex.Facts{DomainID: s.DomainID, TenantID: tenants[i], WhoisHost: hosts[i].Val()}
		exp, reason := WhoisExpiry(f.WhoisHost, byReg)
		if exp != nil {
			f.WhoisMS = exp.UnixMilli()
		} else {
			f.WhoisReason = reason
		}
		if i := strings.LastIndex(s.Name, ":"); i > 0 {
			f.Host = s.Name[:i]
			f.Port, _ = strconv.Atoi(s.Name[i+1:])
		}
		first, invalid := Leading(s.Entries)
		switch {
		case first != nil:
			f.SSLMS, f.Bad = first.NotAfter.UnixMilli(), invalid
			if first.HasNoExpiry() {
				f.SSLMS = domainindex.NoExpiryMS
			}
		case len(s.Entries) > 0:
			f.NoCert = true
		}
		out = append(out, f)
	}
	return out, nil
}

// indexChunk is how many domains the backfill indexes per round trip.
const indexChunk = 500

// BuildIndexes builds the list index of every tenant whose index was not
// built with this layout (every tenant when force), from the domain
// records and the views. It runs at the API server's start and after
// Rebuild; it is idempotent, and several API servers running it at once
// write the same entries. It drops each tenant's index but its names and
// ids first (domainindex.Drop: the entries of another layout go), so its
// lists are short until its domains are indexed again.
//
// The ids are the index's and, once, those of the tenant's hash of names
// from before layout 2 (accounts.LegacyDomainIDs), which is deleted when
// they are indexed and before the index is marked built, so a build cut
// short is finished by the next start. So are the names and ids of an
// index of layout 2, kept as text (domainindex.DropStale).
func BuildIndexes(ctx context.Context, rdb redis.UniversalClient, force bool, logger *zap.Logger) (int, error) {
	start := time.Now()
	tenants, err := accounts.DomainTenants(ctx, rdb)
	if err != nil {
		return 0, err
	}
	built, domains := 0, 0
	// A tenant's index, once dropped, is built to its end even when ctx
	// ends meanwhile (a signal to `views rebuild`, a stopping server): a
	// build cut short leaves the tenant's lists short until some server's
	// next start. ctx is checked between tenants.
	whole := context.WithoutCancel(ctx)
	for _, t := range tenants {
		if err := ctx.Err(); err != nil {
			return built, fmt.Errorf("list indexes: stopped after %d tenants: %w", built, err)
		}
		ctx := whole
		if !force {
			ok, err := domainindex.Built(ctx, rdb, t)
			if err != nil {
				return built, err
			}
			if ok {
				continue
			}
		}
		if err := domainindex.Drop(ctx, rdb, t); err != nil {
			return built, err
		}
		ids, err := accounts.DomainIDs(ctx, rdb, t)
		if err != nil {
			return built, err
		}
		legacy, err := accounts.LegacyDomainIDs(ctx, rdb, t)
		if err != nil {
			return built, err
		}
		ids = slices.Compact(slices.Sorted(slices.Values(append(ids, legacy...))))
		for from := 0; from < len(ids); from += indexChunk {
			chunk := ids[from:min(from+indexChunk, len(ids))]
			if err := domainindex.AddFromRecord(ctx, rdb, t, chunk, accounts.DomainKey); err != nil {
				return built, err
			}
			if err := syncIndex(ctx, rdb, chunk, t); err != nil {
				return built, err
			}
		}
		if len(legacy) > 0 {
			if err := accounts.DropLegacyDomains(ctx, rdb, t); err != nil {
				return built, err
			}
		}
		if err := domainindex.DropStale(ctx, rdb, t); err != nil {
			return built, err
		}
		if err := domainindex.MarkBuilt(ctx, rdb, t); err != nil {
			return built, err
		}
		built++
		domains += len(ids)
	}
	if built > 0 {
		logger.Named("projector").Info("list indexes built", zap.Int("tenants", built), zap.Int("domains", domains),
			zap.Bool("force", force), zap.Duration("took", time.Since(start)))
	}
	return built, nil
}
