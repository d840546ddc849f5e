package registration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// Details of a lookup that is not ok: a fixed vocabulary (events.RegistrationV1.Detail).
const (
	DetailTimeout          = "timeout"
	DetailMalformed        = "malformed-answer"
	DetailNoServer         = "no-server"
	DetailBlocked          = "blocked-target"
	DetailTooLarge         = "too-large"
	DetailTooManyRedirects = "too-many-redirects"
	DetailBadRedirect      = "bad-redirect"
	DetailHTTPStatus       = "http-status"
	DetailDNS              = "dns-error"
	DetailConnect          = "connect-error"
	DetailNotRegistrable   = "not-registrable"
	// DetailLimiter: the shared rate limiter (Redis) did not answer.
	DetailLimiter = "rate-limiter-error"
	// DetailLocalLimit goes with status rate-limited when certfleet's own
	// per-server limit (or a server's earlier Retry-After) put the query
	// off past Config.MaxWait.
	DetailLocalLimit = "local-limit"
)

// Sources of an answer.
const (
	SourceRDAP  = "rdap"
	SourceWHOIS = "whois"
)

// rdapClient asks RDAP servers for one domain: it follows redirects itself
// so that each hop is dialed with the right trust, caps every answer's
// size and turns every outcome into a RegistrationV1.
type rdapClient struct {
	// trusted dials the bootstrap's server (the operator's), checked every
	// other host (redirect targets).
	trusted, checked *http.Client
	timeout          time.Duration
	maxWait          time.Duration
	maxBytes         int64
	maxRedirects     int
	wait             func(ctx context.Context, server string) error
	hold             func(ctx context.Context, server string, until time.Time)
	now              func() time.Time
}

// lookup asks the RDAP server at base about domain. It waits up to
// c.maxWait for the server's turn, so that a busy server queues lookups
// rather than failing them; from the first query on, c.timeout bounds the
// lookup, redirects and the reading of the answer included.
func (c *rdapClient) lookup(ctx context.Context, domain string, base *url.URL) events.RegistrationV1 {
	res := events.RegistrationV1{Domain: domain, Source: SourceRDAP}
	target := base.JoinPath("domain", domain)
	res.Server = target.String()
	wctx, cancel := context.WithTimeout(ctx, c.maxWait)
	err := c.wait(wctx, target.Host)
	cancel()
	if err != nil {
		return c.waitFailed(res, err)
	}
	ctx, cancel = context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for hop := 0; ; hop++ {
		res.Server = target.String()
		client := c.checked
		if target.Scheme == base.Scheme && target.Host == base.Host {
			// The operator's server, also when it redirects to itself.
			client = c.trusted
		}
		if hop > 0 {
			if err := c.wait(ctx, target.Host); err != nil {
				return c.waitFailed(res, err)
			}
		}
		status, header, body, err := c.get(ctx, client, target)
		res.LookedUpAt = c.now()
		if err != nil {
			return failed(res, classify(err))
		}
		switch {
		case status == http.StatusOK:
			return parsed(res, body)
		case status == http.StatusNotFound:
			res.Status = events.RegistrationNotFound
			return res
		case status == http.StatusTooManyRequests:
			until := retryAfter(header.Get("Retry-After"), res.LookedUpAt)
			res.Status = events.RegistrationRateLimited
			res.RetryAfter = &until
			c.hold(ctx, target.Host, until)
			return res
		case isRedirect(status):
			if hop >= c.maxRedirects {
				return failed(res, DetailTooManyRedirects)
			}
			next, err := target.Parse(header.Get("Location"))
			if err != nil || (next.Scheme != "https" && next.Scheme != "http") || next.Host == "" {
				return failed(res, DetailBadRedirect)
			}
			target = next
		default:
			return failed(res, DetailHTTPStatus)
		}
	}
}

// waitFailed is the answer when a server's turn did not come: rate-limited
// (by certfleet itself, Detail "local-limit") when it comes too late, so
// the lookup is retried then; an error otherwise.
func (c *rdapClient) waitFailed(res events.RegistrationV1, err error) events.RegistrationV1 {
	res.LookedUpAt = c.now()
	var tl *ratelimit.TooLateError
	if errors.As(err, &tl) {
		until := res.LookedUpAt.Add(tl.RetryAfter).UTC()
		res.Status, res.Detail, res.RetryAfter = events.RegistrationRateLimited, DetailLocalLimit, &until
		return res
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return failed(res, DetailTimeout)
	}
	return failed(res, DetailLimiter)
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// errTooLarge is an answer longer than maxBytes.
var errTooLarge = errors.New("answer too large")

// get sends one RDAP query and reads at most maxBytes of the answer.
func (c *rdapClient) get(ctx context.Context, client *http.Client, u *url.URL) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), http.NoBody)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("rdap request: %w", err)
	}
	req.Header.Set("Accept", "application/rdap+json, application/json")
	req.Header.Set("User-Agent", "certfleet-registration/1")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("rdap %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, resp.Header, nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("rdap %s: read answer: %w", u, err)
	}
	if int64(len(body)) > c.maxBytes {
		return 0, nil, nil, fmt.Errorf("rdap %s: %w (over %d bytes)", u, errTooLarge, c.maxBytes)
	}
	return resp.StatusCode, resp.Header, body, nil
}

// classify names why a query got no answer.
func classify(err error) string {
	var be *guard.BlockedError
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &be):
		return DetailBlocked
	case errors.Is(err, errTooLarge):
		return DetailTooLarge
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return DetailTimeout
	case errors.As(err, &dns):
		return DetailDNS
	case errors.As(err, &op) && op.Op == "dial":
		return DetailConnect
	}
	return DetailConnect
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func failed(res events.RegistrationV1, detail string) events.RegistrationV1 {
	res.Status = events.RegistrationError
	res.Detail = detail
	return res
}

// parsed fills res from an RDAP domain answer.
func parsed(res events.RegistrationV1, body []byte) events.RegistrationV1 {
	a, err := ParseRDAP(body)
	if err != nil {
		return failed(res, DetailMalformed)
	}
	res.Registrar, res.Statuses, res.NameServers = a.Registrar, a.Statuses, a.NameServers
	res.CreatedAt, res.ExpiresAt, res.UpdatedAt = a.CreatedAt, a.ExpiresAt, a.UpdatedAt
	res.Status = events.RegistrationOK
	if res.ExpiresAt == nil {
		res.Status = events.RegistrationNoExpiry
	}
	return res
}

// retryAfter reads a Retry-After header (delay in seconds or an HTTP date)
// into a time; a missing or unreadable one means a minute, and a delay is
// capped at a day so that a wrong header cannot park a server for good.
func retryAfter(h string, now time.Time) time.Time {
	const (
		fallback = time.Minute
		ceiling  = 24 * time.Hour
	)
	d := fallback
	if s, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64); err == nil && s >= 0 {
		d = time.Duration(min(s, int64(ceiling/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = min(max(t.Sub(now), 0), ceiling)
	}
	return now.Add(d).UTC()
}

// RDAPAnswer is what certfleet reads from an RDAP domain object
// (RFC 9083 section 5.3).
type RDAPAnswer struct {
	Registrar                       string
	CreatedAt, ExpiresAt, UpdatedAt *time.Time
	Statuses                        []string
	NameServers                     []string
}

type rdapDomain struct {
	ObjectClassName string       `json:"objectClassName"`
	Status          []string     `json:"status"`
	Events          []rdapEvent  `json:"events"`
	Entities        []rdapEntity `json:"entities"`
	Nameservers     []struct {
		LDHName string `json:"ldhName"`
	} `json:"nameservers"`
}

type rdapEvent struct {
	Action string `json:"eventAction"`
	Date   string `json:"eventDate"`
}

type rdapEntity struct {
	Roles      []string          `json:"roles"`
	VCardArray []json.RawMessage `json:"vcardArray"`
}

// ParseRDAP reads an RDAP domain answer. It fails on anything that is not
// a JSON domain object and on a registration, expiration or last-changed
// date it cannot read: a date is never guessed.
func ParseRDAP(body []byte) (RDAPAnswer, error) {
	var d rdapDomain
	if err := json.Unmarshal(body, &d); err != nil {
		return RDAPAnswer{}, fmt.Errorf("rdap answer: %w", err)
	}
	if d.ObjectClassName != "domain" {
		return RDAPAnswer{}, fmt.Errorf("rdap answer: object class %q, want \"domain\"", d.ObjectClassName)
	}
	var a RDAPAnswer
	for _, e := range d.Events {
		var dst **time.Time
		switch strings.ToLower(e.Action) {
		case "registration":
			dst = &a.CreatedAt
		case "expiration":
			dst = &a.ExpiresAt
		case "last changed":
			dst = &a.UpdatedAt
		default:
			continue
		}
		t, err := time.Parse(time.RFC3339, e.Date)
		if err != nil {
			return RDAPAnswer{}, fmt.Errorf("rdap answer: %s date %q is not an RFC 3339 time", e.Action, e.Date)
		}
		t = t.UTC()
		*dst = &t
	}
	for _, s := range d.Status {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(a.Statuses, s) {
			a.Statuses = append(a.Statuses, s)
		}
	}
	for _, ns := range d.Nameservers {
		n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(ns.LDHName)), ".")
		if n != "" && !slices.Contains(a.NameServers, n) {
			a.NameServers = append(a.NameServers, n)
		}
	}
	for _, e := range d.Entities {
		if slices.Contains(e.Roles, "registrar") {
			a.Registrar = vcardFN(e.VCardArray)
			break
		}
	}
	return a, nil
}

// vcardFN returns the fn (formatted name) of a jCard (RFC 7095):
// ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Name"], ...]].
func vcardFN(card []json.RawMessage) string {
	if len(card) != 2 {
		return ""
	}
	var props [][]json.RawMessage
	if err := json.Unmarshal(card[1], &props); err != nil {
		return ""
	}
	for _, p := range props {
		var name, value string
		if len(p) < 4 || json.Unmarshal(p[0], &name) != nil || !strings.EqualFold(name, "fn") {
			continue
		}
		if json.Unmarshal(p[3], &value) == nil {
			return strings.TrimSpace(value)
		}
	}
	return ""
}
