package managedcert

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/forget"
)

// Forgotten is what Forget removed of a tenant's managed certificates.
type Forgotten struct {
	Certificates int64 // mcert records, with their sealed private keys
	DNSAccounts  int64 // dnsacct records, with their sealed credentials
	ACMEAccounts int64 // acmeacct records, with their sealed keys
	Other        int64 // the lists, order counters, leases and schedule entries
}

// Forget deletes every key of tenant in this package's layout (a tenant
// leaving): certificates with their sealed private keys, DNS accounts
// with their sealed credentials, ACME accounts, order counters, leases,
// the lists and the tenant's entries in its partition's renewal schedule.
// The certificates are not revoked at the ACME CA: they expire there (at
// most 90 days for Let's Encrypt), and their keys are gone. It appends no
// events.
func Forget(ctx context.Context, rdb redis.UniversalClient, tenant string) (Forgotten, error) {
	var out Forgotten
	tag := events.TenantTag(tenant)
	var err error
	fail := func(what string, err error) (Forgotten, error) {
		return out, fmt.Errorf("forget %s of %s: %w", what, tenant, err)
	}
	if out.Certificates, err = forget.DeletePattern(ctx, rdb, "mcert:"+tag+":"+tenant+":*"); err != nil {
		return fail("managed certificates", err)
	}
	if out.DNSAccounts, err = forget.DeletePattern(ctx, rdb, "dnsacct:"+tag+":"+tenant+":*"); err != nil {
		return fail("dns accounts", err)
	}
	if out.ACMEAccounts, err = forget.DeletePattern(ctx, rdb, "acmeacct:"+tag+":"+tenant+":*"); err != nil {
		return fail("acme accounts", err)
	}
	for _, p := range []string{"mcert:lease:" + tag + ":" + tenant + ":*", "mcert:orders:" + tag + ":" + tenant + ":*"} {
		n, err := forget.DeletePattern(ctx, rdb, p)
		if err != nil {
			return fail("managed certificate keys", err)
		}
		out.Other += n
	}
	n, err := forget.DeleteKeys(ctx, rdb, CertsKey(tenant), DNSAccountsKey(tenant))
	if err != nil {
		return fail("managed certificate lists", err)
	}
	out.Other += n
	// The schedule is the partition's: drop the tenant's members only.
	var cursor uint64
	prefix := DueMember(tenant, "")
	for {
		members, next, err := rdb.ZScan(ctx, DueKey(tag), cursor, prefix+"*", 1000).Result()
		if err != nil {
			return fail("renewal schedule", err)
		}
		for i := 0; i+1 < len(members); i += 2 {
			if !strings.HasPrefix(members[i], prefix) {
				continue
			}
			n, err := rdb.ZRem(ctx, DueKey(tag), members[i]).Result()
			if err != nil {
				return fail("renewal schedule", err)
			}
			out.Other += n
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	return out, nil
}
