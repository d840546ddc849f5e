package projector

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
)

// managedDomains returns the monitored domains the certificate.* events
// of evs are about (a managed certificate's domain the tenant also
// monitors on port 443), with their views' versions bumped, so that the
// alert engine looks at them again: a certificate issued, renewed, failing
// or gone changes what certificate_not_deployed and acme_renewal_failed
// say, though no scan arrived.
func managedDomains(ctx context.Context, rdb redis.UniversalClient, evs []events.Envelope) ([]string, error) {
	type ref struct{ tenant, host string }
	var refs []ref
	seen := map[ref]bool{}
	for _, e := range evs {
		switch e.Name {
		case events.CertificateIssued, events.CertificateRenewed, events.CertificateFailed, events.CertificateDeleted:
			r := ref{e.TenantID, e.AggregateID}
			if r.tenant != "" && r.host != "" && !seen[r] {
				seen[r] = true
				refs = append(refs, r)
			}
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.Cmd, len(refs))
	lookup := func() error {
		pipe := rdb.Pipeline()
		for i, r := range refs {
			cmds[i] = accounts.DomainIDCmd(ctx, pipe, r.tenant, r.host, domainname.DefaultPort)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := lookup()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = domainindex.LoadLookup(ctx, rdb); err == nil {
			err = lookup()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("look up managed domains: %w", err)
	}
	var ids []string
	pipe := rdb.Pipeline()
	for _, c := range cmds {
		if id := domainindex.LookupID(c); id != "" {
			ids = append(ids, id)
			bumpVersion(ctx, pipe, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("bump versions of managed domains: %w", err)
	}
	return ids, nil
}
