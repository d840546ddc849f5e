package acme

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/miekg/dns"
)

// Every wait of an order ends with the order (Config.OrderTimeout, 5 min
// by default: the context obtain runs under). lego sleeps some of them without watching
// the context: the polling interval before each name's first check, the
// sequence interval between the names of a sequential provider (RFC
// 2136), and its propagation wait loop. Their lengths are the tenant's
// (*_POLLING_INTERVAL, RFC2136_SEQUENCE_INTERVAL, *_PROPAGATION_TIMEOUT,
// up to an hour each), so without a bound one account with 100 names
// would hold one of the worker's slots for days after its order ended,
// while every other tenant's orders wait. bounded clips each to the time
// the order has left, and preCheck ends the wait loop once it is gone.

// bounded is a tenant's DNS provider whose waits end with ctx's deadline.
type bounded struct {
	challenge.Provider
	ctx context.Context
}

// boundedSequential is bounded for a provider lego solves one name at a
// time (it has Sequential): the gap between names is clipped too.
type boundedSequential struct {
	bounded
	seq interface{ Sequential() time.Duration }
}

// bound returns p with its waits clipped to what ctx has left.
func bound(ctx context.Context, p challenge.Provider) challenge.Provider {
	b := bounded{Provider: p, ctx: ctx}
	if s, ok := p.(interface{ Sequential() time.Duration }); ok {
		return boundedSequential{bounded: b, seq: s}
	}
	return b
}

// Timeout is the provider's propagation timeout and polling interval,
// clipped.
func (b bounded) Timeout() (timeout, interval time.Duration) {
	timeout, interval = defaultPropagationTimeout, defaultPollingInterval
	if p, ok := b.Provider.(challenge.ProviderTimeout); ok {
		timeout, interval = p.Timeout()
	}
	return b.clip(timeout), b.clip(interval)
}

// Sequential is the provider's gap between names, clipped.
func (b boundedSequential) Sequential() time.Duration { return b.clip(b.seq.Sequential()) }

// clip is d, at most what the order has left (a millisecond once it has
// nothing left).
func (b bounded) clip(d time.Duration) time.Duration {
	if b.ctx.Err() != nil {
		return time.Millisecond
	}
	if dl, ok := b.ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), time.Millisecond))
	}
	return d
}

// maxZoneWalk bounds the labels walked up from a challenge name to its
// zone (a DNS name has at most 127).
const maxZoneWalk = 127

// challengeOptions are the DNS-01 options of every order. lego's own
// propagation check is kept to the recursive resolvers (the operator's)
// and wrapped by preCheck, because of what lego does on its own:
//
//   - its check of the authoritative name servers dials the names of the
//     zone's NS records, which the tenant writes, directly (miekg/dns,
//     outside the guarded dialer): a tenant whose NS names resolve to
//     10.0.0.53 or 169.254.169.254 would have the worker send queries
//     there and read the outcome in the certificate's error;
//   - its wait loop does not watch the order's context: an account with a
//     propagation timeout of an hour and a record that never shows would
//     hold one of the worker's slots for that hour (per name) after
//     the order's timeout ended it, while every other tenant's
//     orders wait.
func (w *Worker) challengeOptions() []dns01.ChallengeOption {
	return []dns01.ChallengeOption{dns01.DisableAuthoritativeNssPropagationRequirement(), dns01.WrapPreCheck(w.preCheck)}
}

// preCheck is the propagation check lego polls: it stops the wait at
// once when the order's context ended, runs lego's check of the recursive
// resolvers, then, unless the operator set --acme-dns-resolvers (which
// turns it off), asks every authoritative name server of the zone
// through addresses the policy allows (authoritative).
func (w *Worker) preCheck(ctx context.Context, _, fqdn, value string, check dns01.PreCheckFunc) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, err // true ends lego's wait; the error fails the challenge
	}
	ok, err := check(ctx, fqdn, value)
	if err != nil || !ok {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		return ok, err
	}
	if len(w.cfg.Resolvers) > 0 {
		return true, nil
	}
	return w.authoritative(ctx, fqdn, value)
}

// authoritative tells whether every authoritative name server of fqdn's
// zone (after CNAMEs) answers value. Each server's name is resolved here
// and its addresses the DNS target policy allows are asked, by IP
// literal, until one answers, so what was judged is what is dialed; a
// server none of whose addresses is allowed fails the check, naming
// --allow-dns-targets.
func (w *Worker) authoritative(ctx context.Context, fqdn, value string) (bool, error) {
	name := dns.CanonicalName(fqdn)
	if cname, err := w.resolver.LookupCNAME(ctx, name); err == nil && cname != "" {
		name = dns.CanonicalName(cname)
	}
	zone, servers, err := w.zoneServers(ctx, name)
	if err != nil {
		return false, err
	}
	for _, ns := range servers {
		addrs, err := w.allowedAddrs(ctx, ns, w.nsPort)
		if err != nil {
			return false, fmt.Errorf("authoritative name server %s of %s: %w", ns, zone, err)
		}
		var found bool
		for _, addr := range addrs {
			if found, err = w.askTXT(ctx, addr, name, value); err == nil {
				break
			}
			err = fmt.Errorf("authoritative name server %s (%s) of %s: %w", ns, addr, zone, err)
		}
		if err != nil {
			return false, err
		}
		if !found {
			return false, fmt.Errorf("authoritative name server %s of %s does not answer the challenge record of %s yet", ns, zone, name)
		}
	}
	return true, nil
}

// zoneServers walks up from name to the first name with NS records: the
// zone and its name servers, from the recursive resolvers.
func (w *Worker) zoneServers(ctx context.Context, name string) (string, []string, error) {
	labels := dns.SplitDomainName(name)
	for i := 0; i < len(labels) && i < maxZoneWalk; i++ {
		zone := dns.Fqdn(strings.Join(labels[i:], "."))
		nss, err := w.resolver.LookupNS(ctx, zone)
		if err != nil || len(nss) == 0 {
			if ctx.Err() != nil {
				return "", nil, ctx.Err()
			}
			continue
		}
		servers := make([]string, len(nss))
		for j, ns := range nss {
			servers[j] = dns.CanonicalName(ns.Host)
		}
		return zone, servers, nil
	}
	return "", nil, fmt.Errorf("no zone with name servers above %s", name)
}

// askTXT asks the name server at addr (an IP literal and port) for name's
// TXT records, without recursion, over UDP and over TCP when the answer
// was truncated, and tells whether one of them is value.
func (w *Worker) askTXT(ctx context.Context, addr, name, value string) (bool, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: defaultDNSTimeout}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, addr)
	}
	if err != nil {
		return false, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return false, fmt.Errorf("answered %s for %s", dns.RcodeToString[r.Rcode], name)
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok && strings.Join(txt.Txt, "") == value {
			return true, nil
		}
	}
	return false, nil
}
