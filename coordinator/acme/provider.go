package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/providers/dns/cloudflare"
	"github.com/go-acme/lego/v5/providers/dns/dnsupdate"
	"github.com/go-acme/lego/v5/providers/dns/httpreq"
	legoroute53 "github.com/go-acme/lego/v5/providers/dns/route53"
	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/managedcert"
)

// Defaults of the timing names a tenant's account may leave out. They are
// set here rather than by lego, whose defaults read the process's
// environment, which belongs to the operator and every tenant at once.
const (
	defaultTTL                = 120
	defaultPropagationTimeout = 2 * time.Minute
	defaultPollingInterval    = 2 * time.Second
	defaultHTTPTimeout        = 30 * time.Second
	defaultDNSTimeout         = 10 * time.Second
)

// provider builds the DNS-01 provider of c's DNS account from the
// tenant's own credentials.
func (w *Worker) provider(ctx context.Context, c managedcert.Certificate) (challenge.Provider, error) {
	acct, err := w.store.OpenDNSAccount(ctx, c.Tenant, c.DNSProvider, c.AccountID)
	if err != nil {
		return nil, fmt.Errorf("dns account %s/%s: %w", c.DNSProvider, c.AccountID, err)
	}
	cr := creds(acct.Credentials)
	switch acct.Provider {
	case managedcert.ProviderRFC2136:
		// lego's RFC 2136 client dials on its own, outside the guarded
		// dialer: resolve the nameserver here, judge its addresses by the
		// policy, and hand lego the address that was judged.
		ns, err := w.nameserver(ctx, cr.get("RFC2136_NAMESERVER"))
		if err != nil {
			return nil, err
		}
		cfg := &dnsupdate.Config{
			Nameserver: ns, DNSTimeout: cr.seconds("RFC2136_DNS_TIMEOUT", defaultDNSTimeout),
			TSIGKey: cr.get("RFC2136_TSIG_KEY"), TSIGSecret: cr.get("RFC2136_TSIG_SECRET"),
			TSIGAlgorithm:      cr.or("RFC2136_TSIG_ALGORITHM", dns.HmacSHA1),
			TTL:                cr.number("RFC2136_TTL", defaultTTL),
			PropagationTimeout: cr.seconds("RFC2136_PROPAGATION_TIMEOUT", defaultPropagationTimeout),
			PollingInterval:    cr.seconds("RFC2136_POLLING_INTERVAL", defaultPollingInterval),
			SequenceInterval:   cr.seconds("RFC2136_SEQUENCE_INTERVAL", w.cfg.SequenceInterval),
		}
		if z := cr.get("RFC2136_ZONES"); z != "" {
			cfg.Zones = strings.Split(z, ",")
		}
		return dnsupdate.NewDNSProviderConfig(cfg)
	case managedcert.ProviderCloudflare:
		return cloudflare.NewDNSProviderConfig(&cloudflare.Config{
			AuthEmail: cr.or("CLOUDFLARE_EMAIL", cr.get("CLOUDFLARE_API_EMAIL")), AuthKey: cr.get("CLOUDFLARE_API_KEY"),
			AuthToken: cr.get("CLOUDFLARE_DNS_API_TOKEN"), ZoneToken: cr.get("CLOUDFLARE_ZONE_API_TOKEN"),
			BaseURL: cr.get("CLOUDFLARE_BASE_URL"), TTL: max(cr.number("CLOUDFLARE_TTL", defaultTTL), defaultTTL),
			PropagationTimeout: cr.seconds("CLOUDFLARE_PROPAGATION_TIMEOUT", defaultPropagationTimeout),
			PollingInterval:    cr.seconds("CLOUDFLARE_POLLING_INTERVAL", defaultPollingInterval),
			HTTPClient:         w.httpClient(cr.seconds("CLOUDFLARE_HTTP_TIMEOUT", defaultHTTPTimeout)),
		})
	case managedcert.ProviderRoute53:
		// The client is built here with the tenant's static keys: lego's own
		// would load the process's AWS configuration (profiles, instance
		// role, environment), which is not the tenant's.
		region := cr.or("AWS_REGION", "us-east-1")
		client := route53.New(route53.Options{
			Region:           region,
			Credentials:      credentials.NewStaticCredentialsProvider(cr.get("AWS_ACCESS_KEY_ID"), cr.get("AWS_SECRET_ACCESS_KEY"), ""),
			HTTPClient:       w.httpClient(defaultHTTPTimeout),
			RetryMaxAttempts: cr.number("AWS_MAX_RETRIES", 5),
		})
		return legoroute53.NewDNSProviderConfig(&legoroute53.Config{
			Region: region, HostedZoneID: cr.get("AWS_HOSTED_ZONE_ID"), MaxRetries: cr.number("AWS_MAX_RETRIES", 5),
			PrivateZone: cr.get("AWS_PRIVATE_ZONE") == "true", WaitForRecordSetsChanged: cr.or("AWS_WAIT_FOR_RECORD_SETS_CHANGED", "true") == "true",
			TTL: cr.number("AWS_TTL", defaultTTL), PropagationTimeout: cr.seconds("AWS_PROPAGATION_TIMEOUT", defaultPropagationTimeout),
			PollingInterval: cr.seconds("AWS_POLLING_INTERVAL", defaultPollingInterval), Client: client,
		})
	case managedcert.ProviderHTTPReq:
		endpoint, err := url.Parse(cr.get("HTTPREQ_ENDPOINT"))
		if err != nil {
			return nil, fmt.Errorf("HTTPREQ_ENDPOINT: %w", err)
		}
		return httpreq.NewDNSProviderConfig(&httpreq.Config{
			Endpoint: endpoint, Mode: cr.get("HTTPREQ_MODE"), Username: cr.get("HTTPREQ_USERNAME"), Password: cr.get("HTTPREQ_PASSWORD"),
			PropagationTimeout: cr.seconds("HTTPREQ_PROPAGATION_TIMEOUT", defaultPropagationTimeout),
			PollingInterval:    cr.seconds("HTTPREQ_POLLING_INTERVAL", defaultPollingInterval),
			HTTPClient:         w.httpClient(cr.seconds("HTTPREQ_HTTP_TIMEOUT", defaultHTTPTimeout)),
		})
	default:
		return nil, fmt.Errorf("unknown DNS provider %q", acct.Provider)
	}
}

// httpClient is the guarded client of tenants' provider APIs with timeout.
func (w *Worker) httpClient(timeout time.Duration) *http.Client {
	c := *w.tenantHTTP
	c.Timeout = timeout
	return &c
}

// nameserver resolves an RFC 2136 nameserver ("host" or "host:port") and
// returns the first of its addresses the policy allows, as ip:port.
func (w *Worker) nameserver(ctx context.Context, hostport string) (string, error) {
	host, port := hostport, "53"
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	}
	addrs, err := w.allowedAddrs(ctx, host, port)
	if err != nil {
		return "", fmt.Errorf("RFC2136_NAMESERVER %s: %w", host, err)
	}
	return addrs[0], nil
}

// allowedAddrs resolves a name server, host (a name or an IP literal), and
// returns those of its addresses the DNS target policy allows, as ip:port;
// an error naming --allow-dns-targets when there is none. What is judged
// is what is dialed: the callers ask the IP literals.
func (w *Worker) allowedAddrs(ctx context.Context, host, port string) ([]string, error) {
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, defaultDNSTimeout)
		defer cancel()
		if ips, err = w.resolver.LookupNetIP(rctx, "ip", host); err != nil {
			return nil, err
		}
	}
	var out []string
	refused := errors.New("no address")
	for _, ip := range ips {
		if err := w.cfg.DNSTargets.Check(ip); err != nil {
			refused = err
			continue
		}
		out = append(out, net.JoinHostPort(ip.Unmap().String(), port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w (an operator can allow a range with --allow-dns-targets)", refused)
	}
	return out, nil
}

// creds reads an account's credentials with defaults.
type creds map[string]string

func (c creds) get(name string) string { return c[name] }

func (c creds) or(name, def string) string {
	if v := c[name]; v != "" {
		return v
	}
	return def
}

func (c creds) number(name string, def int) int {
	if n, err := strconv.Atoi(c[name]); err == nil {
		return n
	}
	return def
}

func (c creds) seconds(name string, def time.Duration) time.Duration {
	if n, err := strconv.Atoi(c[name]); err == nil {
		return time.Duration(n) * time.Second
	}
	return def
}
