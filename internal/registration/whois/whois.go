// Package whois looks up a domain's registration over WHOIS (RFC 3912,
// port 43): it finds the TLD's server (the operator's override or IANA's
// referral), asks it, follows its referral to the registrar's server once,
// and turns the answers into one events.RegistrationV1. It is the
// fallback where a registry has no RDAP service.
package whois

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
)

// Details of a lookup that is not ok: the Detail vocabulary of
// events.RegistrationV1 this package uses.
const (
	DetailTimeout       = "timeout"
	DetailTooLarge      = "too-large"
	DetailMalformed     = "malformed-answer"
	DetailNoServer      = "no-server"
	DetailBlockedTarget = "blocked-target"
	DetailUnreachable   = "unreachable"
	DetailInvalidDomain = "invalid-domain"
	DetailCanceled      = "canceled"
	DetailLimiter       = "rate-limiter"
)

// DialFunc opens a connection; the project's guarded dialer is one.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config configures a Client.
type Config struct {
	// Servers maps a TLD (lower-case, no dot) to the host:port of its
	// WHOIS server, overriding IANA's (--whois-server; see ParseServers).
	Servers map[string]string
	// DialTrusted dials the first server of a lookup, which the operator
	// chose (an override or IANA's referral) and which may therefore be
	// loopback or private. Required.
	DialTrusted DialFunc
	// Dial dials the registrar's server a registry refers to: a name
	// from the internet, checked against --allow-targets. Required.
	Dial DialFunc
	// Timeout bounds a whole lookup, IANA's answer and the referral
	// included, so a server trickling bytes cannot hold a worker.
	// Default 30s.
	Timeout time.Duration
	// MaxBytes caps one answer; WHOIS answers are a few KiB. Default
	// 256 KiB.
	MaxBytes int64
	// Wait is called before every query with the server's host:port
	// (the shared per-server rate limiter); nil waits for nothing.
	Wait func(ctx context.Context, server string) error
	// Defer is called when a server answered that it rate-limits us,
	// with when to ask it again; nil ignores it.
	Defer func(ctx context.Context, server string, until time.Time)
	// RateLimitBackoff is how long after a rate-limit answer to try
	// again: WHOIS servers do not say. Default 1h.
	RateLimitBackoff time.Duration
	// IANA is the host:port of the server that names each TLD's WHOIS
	// server. Default whois.iana.org:43.
	IANA string
}

// Defaults of Config.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxBytes         = 256 << 10
	DefaultRateLimitBackoff = time.Hour
	DefaultIANA             = "whois.iana.org:43"
)

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.RateLimitBackoff == 0 {
		c.RateLimitBackoff = DefaultRateLimitBackoff
	}
	if c.IANA == "" {
		c.IANA = DefaultIANA
	}
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DialTrusted == nil {
		errs = append(errs, errors.New("whois: DialTrusted is required"))
	}
	if c.Dial == nil {
		errs = append(errs, errors.New("whois: Dial is required"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("whois: Timeout %s must be positive", c.Timeout))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("whois: MaxBytes %d must be positive", c.MaxBytes))
	}
	if c.RateLimitBackoff <= 0 {
		errs = append(errs, fmt.Errorf("whois: RateLimitBackoff %s must be positive", c.RateLimitBackoff))
	}
	if err := checkHostPort(c.IANA); err != nil {
		errs = append(errs, fmt.Errorf("whois: IANA: %w", err))
	}
	for tld, server := range c.Servers {
		if err := checkServer(tld, server); err != nil {
			errs = append(errs, fmt.Errorf("whois: Servers: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Client looks up registrations over WHOIS. It is safe for concurrent use.
type Client struct {
	cfg       Config
	mu        sync.Mutex
	ianaCache map[string]ianaEntry // TLD → IANA's answer, bounded by ianaCacheMax
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, ianaCache: make(map[string]ianaEntry)}, nil
}

// errTooLarge: an answer went over MaxBytes.
var errTooLarge = errors.New("answer over the size cap")

// errLimiter wraps a failure of Config.Wait.
var errLimiter = errors.New("rate limiter")

// Lookup asks WHOIS for domain's registration (a registrable domain,
// lower-case A-labels). It never fails: every failure is a Status and a
// Detail of the result.
func (c *Client) Lookup(ctx context.Context, domain string) events.RegistrationV1 {
	domain = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
	res := events.RegistrationV1{Domain: domain, Source: "whois"}
	fail := func(status, detail string) events.RegistrationV1 {
		res.Status, res.Detail, res.LookedUpAt = status, detail, time.Now().UTC()
		return res
	}
	dot := strings.LastIndexByte(domain, '.')
	if dot <= 0 || !isHostName(domain) {
		return fail(events.RegistrationError, DetailInvalidDomain)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	server, err := c.server(ctx, domain[dot+1:])
	if err != nil {
		return fail(events.RegistrationError, detail(ctx, err))
	}
	if server == "" {
		return fail(events.RegistrationError, DetailNoServer)
	}
	res.Server = server
	text, err := c.query(ctx, c.cfg.DialTrusted, server, domain)
	if err != nil {
		return fail(events.RegistrationError, detail(ctx, err))
	}
	rec, err := Parse(text)
	switch {
	case errors.Is(err, ErrNotFound):
		return fail(events.RegistrationNotFound, "")
	case errors.Is(err, ErrRateLimited):
		res = fail(events.RegistrationRateLimited, "")
		until := res.LookedUpAt.Add(c.cfg.RateLimitBackoff)
		res.RetryAfter = &until
		c.deferServer(ctx, server, until)
		return res
	case err != nil:
		return fail(events.RegistrationError, DetailMalformed)
	}
	if ref := rec.Referral; ref != "" && ref != server {
		// The registrar's answer only fills gaps: whatever goes wrong
		// there, the registry's answer stands.
		if more, ok := c.referral(ctx, ref, domain); ok {
			rec = rec.merge(more)
			res.Server = ref
		}
	}
	res.Registrar, res.CreatedAt, res.UpdatedAt, res.ExpiresAt = rec.Registrar, rec.CreatedAt, rec.UpdatedAt, rec.ExpiresAt
	res.Statuses, res.NameServers = rec.Statuses, rec.NameServers
	res.Status, res.LookedUpAt = events.RegistrationOK, time.Now().UTC()
	if rec.ExpiresAt == nil {
		res.Status = events.RegistrationNoExpiry
	}
	return res
}

// referral asks the registrar's server; ok is false when it gave no
// registration.
func (c *Client) referral(ctx context.Context, server, domain string) (Record, bool) {
	text, err := c.query(ctx, c.cfg.Dial, server, domain)
	if err != nil {
		return Record{}, false
	}
	rec, err := Parse(text)
	if errors.Is(err, ErrRateLimited) {
		c.deferServer(ctx, server, time.Now().UTC().Add(c.cfg.RateLimitBackoff))
	}
	return rec, err == nil
}

func (c *Client) deferServer(ctx context.Context, server string, until time.Time) {
	if c.cfg.Defer != nil {
		c.cfg.Defer(ctx, server, until)
	}
}

// query sends one RFC 3912 query and reads the answer to EOF, within
// ctx's deadline and MaxBytes.
func (c *Client) query(ctx context.Context, dial DialFunc, server, q string) ([]byte, error) {
	if c.cfg.Wait != nil {
		if err := c.cfg.Wait(ctx, server); err != nil {
			return nil, fmt.Errorf("wait for %s: %w: %w", server, errLimiter, err)
		}
	}
	conn, err := dial(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return nil, fmt.Errorf("set deadline %s: %w", server, err)
		}
	}
	// A cancelled ctx (shutdown) unblocks the read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, q+"\r\n"); err != nil {
		return nil, fmt.Errorf("query %s: %w", server, err)
	}
	text, err := io.ReadAll(io.LimitReader(conn, c.cfg.MaxBytes+1))
	if int64(len(text)) > c.cfg.MaxBytes {
		return nil, fmt.Errorf("read %s: %w (%d bytes)", server, errTooLarge, c.cfg.MaxBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", server, err)
	}
	return text, nil
}

// detail classifies a failed query.
func detail(ctx context.Context, err error) string {
	var blocked *guard.BlockedError
	var netErr net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return DetailCanceled
	case errors.Is(err, errTooLarge):
		return DetailTooLarge
	case errors.As(err, &blocked):
		return DetailBlockedTarget
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return DetailTimeout
	case errors.Is(err, errLimiter):
		return DetailLimiter
	}
	return DetailUnreachable
}
