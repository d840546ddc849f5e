package whois

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ParseServers reads --whois-server values, each "TLD=HOST:PORT" or a
// comma-separated list of them (a missing :PORT is 43), into the map of
// Config.Servers. Every bad entry is reported at once.
func ParseServers(spec []string) (map[string]string, error) {
	out := make(map[string]string)
	var errs []error
	for _, value := range spec {
		for _, item := range strings.Split(value, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			tld, server, ok := strings.Cut(item, "=")
			if !ok {
				errs = append(errs, fmt.Errorf("--whois-server %q: want TLD=HOST:PORT", item))
				continue
			}
			tld = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(tld)), ".")
			server = strings.ToLower(strings.TrimSpace(server))
			if server != "" && !strings.Contains(server, ":") {
				server += ":43"
			}
			if err := checkServer(tld, server); err != nil {
				errs = append(errs, fmt.Errorf("--whois-server %q: %w", item, err))
				continue
			}
			if have, dup := out[tld]; dup && have != server {
				errs = append(errs, fmt.Errorf("--whois-server %q: TLD %q already set to %s", item, tld, have))
				continue
			}
			out[tld] = server
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// checkServer checks one TLD → server override.
func checkServer(tld, server string) error {
	if tld == "" || !isLabel(tld) {
		return fmt.Errorf("TLD %q is not one lower-case DNS label (\"com\", \"co.uk\" is not one)", tld)
	}
	if err := checkHostPort(server); err != nil {
		return fmt.Errorf("TLD %q: %w", tld, err)
	}
	return nil
}

// checkHostPort checks a server's host:port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("server %q is not HOST:PORT", s)
	}
	if host == "" || strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("server %q has no valid host", s)
	}
	if !isPort(port) {
		return fmt.Errorf("server %q: port %q is not 1-65535", s, port)
	}
	return nil
}

func isPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

func isLabel(s string) bool {
	if len(s) > 63 || strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// IANA's answers are cached per TLD: they change on the scale of months,
// and without the cache every lookup would cost IANA a query.
const (
	ianaCacheTTL = 24 * time.Hour
	// ianaCacheMax bounds the cache above the ~1,600 TLDs that exist, so
	// queries for made-up TLDs cannot grow it without end.
	ianaCacheMax = 4096
)

type ianaEntry struct {
	server string // "" when the TLD has no WHOIS server
	at     time.Time
}

// server returns the host:port of tld's WHOIS server: the override, else
// the one IANA names, "" when there is none.
func (c *Client) server(ctx context.Context, tld string) (string, error) {
	if s, ok := c.cfg.Servers[tld]; ok {
		return s, nil
	}
	now := time.Now()
	c.mu.Lock()
	e, ok := c.ianaCache[tld]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < ianaCacheTTL {
		return e.server, nil
	}
	text, err := c.query(ctx, c.cfg.DialTrusted, c.cfg.IANA, tld)
	if err != nil {
		return "", fmt.Errorf("ask iana for %q: %w", tld, err)
	}
	server := ianaServer(text)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ianaCache) >= ianaCacheMax {
		for k := range c.ianaCache {
			delete(c.ianaCache, k)
			break
		}
	}
	c.ianaCache[tld] = ianaEntry{server: server, at: now}
	return server, nil
}

// ianaServer reads the "whois:" (or "refer:") line of IANA's answer for a
// TLD; "" when it names none.
func ianaServer(text []byte) string {
	for _, f := range fields(strings.Split(decode(text), "\n")) {
		if f.key == "whois" || f.key == "refer" {
			if s := serverAddr(f.value); s != "" {
				return s
			}
		}
	}
	return ""
}
