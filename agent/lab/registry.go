package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/registration"
)

// The lab's registries: an RDAP server (RFC 9083) for the TLDs in
// RDAPTLDs, named by the bootstrap file the lab writes, and a WHOIS server
// (RFC 3912) in Verisign's format for every lab TLD, which an agent is
// pointed at with --whois-server. WHOISOnlyTLD is absent from the
// bootstrap, so its registrations can only be found over WHOIS.
var (
	// RDAPTLDs are the TLDs the bootstrap file sends to the lab's RDAP
	// server. .test and .example are reserved (RFC 2606): no real
	// registration is shadowed.
	RDAPTLDs = []string{"test"}
	// WHOISOnlyTLD is the lab TLD missing from the bootstrap.
	WHOISOnlyTLD = "example"
)

// RetryAfter is what the rate-limited registration's RDAP server asks a
// client to wait before it answers.
const RetryAfter = 2 * time.Second

// Registration is one domain registration the lab's registries publish,
// with what a lookup that follows the lab's bootstrap file and
// --whois-server values must report.
type Registration struct {
	// Name says which case it shows: "registered" (the zone's own
	// registrable domain), "expiring", "expired", "rdap-only",
	// "whois-only", "no-expiry", "rate-limited".
	Name string
	// Domain is the registrable domain, lower case, no final dot.
	Domain string
	// Host is the lab endpoint's host under it: the domain itself, or
	// for "registered" the zone's hosts, of which Host is the first.
	Host string
	// RDAP and WHOIS tell which of the lab's servers know the domain; the
	// other answers not found (RDAP 404, WHOIS "No match for").
	RDAP, WHOIS bool
	// RateLimited: the RDAP server answers 429 with Retry-After
	// (RetryAfter) first and the registration only to a client that
	// waited that long.
	RateLimited bool
	// Want is the lookup's result with LookedUpAt and RetryAfter left
	// zero. Server is the RDAP URL of the domain, or the WHOIS server's
	// host:port; Statuses are in RDAP's words whatever the source.
	Want events.RegistrationV1
}

// eppStatus is a domain status in EPP's words (WHOIS) and RDAP's (RFC 8056).
type eppStatus struct{ epp, rdap string }

var (
	stTransfer = eppStatus{"clientTransferProhibited", "client transfer prohibited"}
	stDelete   = eppStatus{"clientDeleteProhibited", "client delete prohibited"}
	stHold     = eppStatus{"clientHold", "client hold"}
	stOK       = eppStatus{"ok", "active"}
)

// labRegistrar is the sponsoring registrar of every lab registration but
// no-expiry, whose registry (like DENIC) names none.
const (
	labRegistrar   = "Certfleet Lab Registrar, Inc."
	labRegistrarID = "9999"
)

// record is a registration as the lab's registries hold it.
type record struct {
	reg                       Registration
	created, updated, expires *time.Time
	statuses                  []eppStatus
	registrar                 string
	nameServers               []string // lower case
	handle                    string
	ip                        netip.Addr // of its TLS endpoint; invalid for "registered"
}

// Addresses of the registrations' TLS endpoints, beside the fault targets'.
var (
	ipRegExpiring    = netip.MustParseAddr("127.0.0.22")
	ipRegExpired     = netip.MustParseAddr("127.0.0.23")
	ipRegRDAPOnly    = netip.MustParseAddr("127.0.0.24")
	ipRegWHOISOnly   = netip.MustParseAddr("127.0.0.25")
	ipRegNoExpiry    = netip.MustParseAddr("127.0.0.26")
	ipRegRateLimited = netip.MustParseAddr("127.0.0.27")
)

// registrations are the lab's registrations, dated relative to now: the
// zone's own registrable domain (when it has one) and one domain per case.
func registrations(zone string, now time.Time) []record {
	day := 24 * time.Hour
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	var out []record
	add := func(r record) {
		r.reg.Domain = strings.ToLower(r.reg.Domain)
		if r.reg.Host == "" {
			r.reg.Host = r.reg.Domain
		}
		r.nameServers = []string{"ns1." + r.reg.Domain, "ns2." + r.reg.Domain}
		r.handle = fmt.Sprintf("%d_DOMAIN_%s-LAB", 1000+len(out), strings.ToUpper(tldOf(r.reg.Domain)))
		out = append(out, r)
	}
	if d, err := registration.Registrable(zone); err == nil {
		add(record{reg: Registration{Name: "registered", Domain: d, Host: "valid." + strings.TrimSuffix(zone, "."), RDAP: true, WHOIS: true},
			registrar: labRegistrar, created: at(-3 * 365 * day), updated: at(-30 * day), expires: at(365 * day), statuses: []eppStatus{stDelete, stTransfer}})
	}
	add(record{reg: Registration{Name: "expiring", Domain: "certfleet-expiring.test", RDAP: true, WHOIS: true}, ip: ipRegExpiring,
		registrar: labRegistrar, created: at(-345 * day), updated: at(-60 * day), expires: at(20 * day), statuses: []eppStatus{stTransfer}})
	add(record{reg: Registration{Name: "expired", Domain: "certfleet-expired.test", RDAP: true, WHOIS: true}, ip: ipRegExpired,
		registrar: labRegistrar, created: at(-375 * day), updated: at(-9 * day), expires: at(-10 * day), statuses: []eppStatus{stHold}})
	add(record{reg: Registration{Name: "rdap-only", Domain: "certfleet-rdap-only.test", RDAP: true}, ip: ipRegRDAPOnly,
		registrar: labRegistrar, created: at(-165 * day), updated: at(-5 * day), expires: at(200 * day), statuses: []eppStatus{stOK}})
	add(record{reg: Registration{Name: "whois-only", Domain: "certfleet-whois-only." + WHOISOnlyTLD, WHOIS: true}, ip: ipRegWHOISOnly,
		registrar: labRegistrar, created: at(-65 * day), updated: at(-65 * day), expires: at(300 * day), statuses: []eppStatus{stDelete, stTransfer}})
	// Like .de: no registration or expiry date, no registrar.
	add(record{reg: Registration{Name: "no-expiry", Domain: "certfleet-no-expiry.test", RDAP: true}, ip: ipRegNoExpiry,
		updated: at(-400 * day), statuses: []eppStatus{stOK}})
	// WHOIS does not know it, so only an RDAP client that waited can find it.
	add(record{reg: Registration{Name: "rate-limited", Domain: "certfleet-rate-limited.test", RDAP: true, RateLimited: true}, ip: ipRegRateLimited,
		registrar: labRegistrar, created: at(-100 * day), updated: at(-100 * day), expires: at(265 * day), statuses: []eppStatus{stTransfer}})
	return out
}

// tldOf is the last label of a domain.
func tldOf(domain string) string {
	return domain[strings.LastIndexByte(domain, '.')+1:]
}

// inBootstrap tells whether the bootstrap file names the lab's RDAP server
// for domain's TLD.
func inBootstrap(domain string) bool {
	for _, t := range RDAPTLDs {
		if tldOf(domain) == t {
			return true
		}
	}
	return false
}

// want fills r.reg.Want from the record, for servers at rdapURL and whoisAddr.
func (r *record) want(rdapURL, whoisAddr string) {
	w := events.RegistrationV1{Domain: r.reg.Domain, Status: events.RegistrationOK, Registrar: r.registrar,
		CreatedAt: r.created, ExpiresAt: r.expires, UpdatedAt: r.updated, NameServers: r.nameServers}
	for _, s := range r.statuses {
		w.Statuses = append(w.Statuses, s.rdap)
	}
	switch {
	case r.reg.RDAP && inBootstrap(r.reg.Domain):
		w.Source, w.Server = "rdap", rdapURL+"domain/"+r.reg.Domain
	case r.reg.WHOIS:
		w.Source, w.Server = "whois", whoisAddr
	default:
		w = events.RegistrationV1{Domain: r.reg.Domain, Status: events.RegistrationNotFound}
	}
	if w.Status == events.RegistrationOK && w.ExpiresAt == nil {
		w.Status = events.RegistrationNoExpiry
	}
	r.reg.Want = w
}

// registry is the lab's RDAP and WHOIS servers over its records.
type registry struct {
	logger  *zap.Logger
	list    []*record          // in registrations' order
	records map[string]*record // by domain
	now     func() time.Time   // the clock of the rate limit
	// published is the time the bootstrap file and the databases say they
	// were last updated.
	published time.Time

	mu      sync.Mutex
	retryAt map[string]time.Time // rate-limited domains: when a retry is answered

	rdapURL   string // http://host:port/
	whoisAddr string // host:port
}

// admit tells whether a request for a rate-limited domain at now is
// answered and, when not, how long the client must wait: the first request
// starts the wait, the first one after it is answered and starts over.
func (g *registry) admit(domain string, now time.Time) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, waiting := g.retryAt[domain]
	switch {
	case !waiting:
		g.retryAt[domain] = now.Add(RetryAfter)
		return RetryAfter, false
	case now.Before(at):
		return at.Sub(now), false
	}
	delete(g.retryAt, domain)
	return 0, true
}

// queryDomain turns a domain as a client sends it (any case, maybe a final
// dot) into the key of records; ok is false for something that is no
// domain name.
func queryDomain(s string) (string, bool) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if d == "" || len(d) > 253 || strings.ContainsFunc(d, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}) {
		return "", false
	}
	if _, ok := dns.IsDomainName(d); !ok || strings.Contains(d, "..") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return "", false
	}
	return d, true
}

// rdapJSON is the media type of RDAP answers (RFC 7480).
const rdapJSON = "application/rdap+json"

// rdapConformance is what every answer claims to follow.
var rdapConformance = []string{"rdap_level_0", "icann_rdap_response_profile_1", "icann_rdap_technical_implementation_guide_1"}

type rdapEvent struct {
	Action string `json:"eventAction"`
	Date   string `json:"eventDate"`
}

type rdapLink struct {
	Value string `json:"value"`
	Rel   string `json:"rel"`
	Href  string `json:"href"`
	Type  string `json:"type"`
}

type rdapNotice struct {
	Title       string     `json:"title"`
	Description []string   `json:"description"`
	Links       []rdapLink `json:"links,omitempty"`
}

type rdapPublicID struct {
	Type       string `json:"type"`
	Identifier string `json:"identifier"`
}

type rdapEntity struct {
	ObjectClassName string         `json:"objectClassName"`
	Handle          string         `json:"handle"`
	Roles           []string       `json:"roles"`
	PublicIDs       []rdapPublicID `json:"publicIds,omitempty"`
	VCardArray      []any          `json:"vcardArray"`
}

type rdapNameserver struct {
	ObjectClassName string `json:"objectClassName"`
	LDHName         string `json:"ldhName"`
}

type rdapDomain struct {
	RDAPConformance []string         `json:"rdapConformance"`
	ObjectClassName string           `json:"objectClassName"`
	Handle          string           `json:"handle"`
	LDHName         string           `json:"ldhName"`
	Links           []rdapLink       `json:"links"`
	Status          []string         `json:"status"`
	Entities        []rdapEntity     `json:"entities,omitempty"`
	Events          []rdapEvent      `json:"events"`
	SecureDNS       map[string]bool  `json:"secureDNS"`
	Nameservers     []rdapNameserver `json:"nameservers"`
	Notices         []rdapNotice     `json:"notices"`
}

// rdapError is RFC 9083's error response.
type rdapError struct {
	RDAPConformance []string `json:"rdapConformance"`
	ErrorCode       int      `json:"errorCode"`
	Title           string   `json:"title"`
	Description     []string `json:"description"`
}

func rdapDate(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// rdapAnswer is a record as a registry's RDAP server publishes it, in
// Verisign's shape (upper-case LDH names, registrar entity with its IANA
// ID, "last update of RDAP database").
func (g *registry) rdapAnswer(r *record) rdapDomain {
	self := g.rdapURL + "domain/" + r.reg.Domain
	d := rdapDomain{
		RDAPConformance: rdapConformance,
		ObjectClassName: "domain",
		Handle:          r.handle,
		LDHName:         strings.ToUpper(r.reg.Domain),
		Links:           []rdapLink{{Value: self, Rel: "self", Href: self, Type: rdapJSON}},
		SecureDNS:       map[string]bool{"delegationSigned": false},
		Notices: []rdapNotice{{
			Title:       "Terms of Use",
			Description: []string{"Service subject to the certfleet lab's terms: test data, not a registration."},
		}},
	}
	for _, s := range r.statuses {
		d.Status = append(d.Status, s.rdap)
	}
	if r.registrar != "" {
		d.Entities = []rdapEntity{{
			ObjectClassName: "entity",
			Handle:          labRegistrarID,
			Roles:           []string{"registrar"},
			PublicIDs:       []rdapPublicID{{Type: "IANA Registrar ID", Identifier: labRegistrarID}},
			VCardArray:      []any{"vcard", []any{[]any{"version", map[string]any{}, "text", "4.0"}, []any{"fn", map[string]any{}, "text", r.registrar}}},
		}}
	}
	for _, e := range []struct {
		action string
		at     *time.Time
	}{{"registration", r.created}, {"expiration", r.expires}, {"last changed", r.updated}, {"last update of RDAP database", &g.published}} {
		if e.at != nil {
			d.Events = append(d.Events, rdapEvent{e.action, rdapDate(*e.at)})
		}
	}
	for _, ns := range r.nameServers {
		d.Nameservers = append(d.Nameservers, rdapNameserver{"nameserver", strings.ToUpper(ns)})
	}
	return d
}

// rdapHandler serves GET /domain/{name} and answers every other query with
// an RDAP error.
func (g *registry) rdapHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /domain/{name}", func(w http.ResponseWriter, req *http.Request) {
		domain, ok := queryDomain(req.PathValue("name"))
		if !ok {
			g.rdapFail(w, http.StatusBadRequest, "Bad Request", "not a domain name")
			return
		}
		r, known := g.records[domain]
		if !known || !r.reg.RDAP {
			g.rdapFail(w, http.StatusNotFound, "Not Found", "no registration for "+domain)
			return
		}
		if r.reg.RateLimited {
			if wait, ok := g.admit(domain, g.now()); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				g.rdapFail(w, http.StatusTooManyRequests, "Too Many Requests", "query rate exceeded, retry later")
				return
			}
		}
		g.rdapWrite(w, http.StatusOK, g.rdapAnswer(r))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		g.rdapFail(w, http.StatusNotFound, "Not Found", "the lab answers domain queries only")
	})
	return mux
}

func (g *registry) rdapFail(w http.ResponseWriter, code int, title, desc string) {
	g.rdapWrite(w, code, rdapError{RDAPConformance: rdapConformance, ErrorCode: code, Title: title, Description: []string{desc}})
}

func (g *registry) rdapWrite(w http.ResponseWriter, code int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		// Only the types above are written: this is a defect, not input.
		g.logger.Error("encode rdap answer", zap.Error(err))
		code, b = http.StatusInternalServerError, []byte(`{"errorCode":500,"title":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", rdapJSON)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// Bootstrap is the lab's RDAP bootstrap file in IANA's dns.json format (RFC
// 9224): the TLDs of RDAPTLDs go to the lab's RDAP server. It names only
// those: --rdap-bootstrap merges it over the embedded IANA copy, so the
// rest of the world's domains keep their registries' RDAP servers.
func (l *Lab) Bootstrap() []byte {
	type file struct {
		Version     string       `json:"version"`
		Publication string       `json:"publication"`
		Description string       `json:"description"`
		Services    [][][]string `json:"services"`
	}
	b, _ := json.MarshalIndent(file{
		Version:     "1.0",
		Publication: rdapDate(l.registry.published),
		Description: "RDAP bootstrap file for the certfleet lab's TLDs",
		Services:    [][][]string{{RDAPTLDs, {l.registry.rdapURL}}},
	}, "", "  ") // plain strings only: cannot fail
	return append(b, '\n')
}

// whoisQueryMax bounds a WHOIS query line; a domain name is at most 253.
const whoisQueryMax = 512

// whoisQuery reads a WHOIS query as Verisign's server takes it: a domain,
// maybe prefixed by "domain " or "=", ended by CRLF (or a bare LF).
func whoisQuery(line string) (string, bool) {
	q := strings.TrimSpace(line)
	q = strings.TrimPrefix(q, "=")
	if f := strings.Fields(q); len(f) == 2 && strings.EqualFold(f[0], "domain") {
		q = f[1]
	}
	return queryDomain(q)
}

// whoisAnswer is what the WHOIS server says to a query, lines ended by
// CRLF as Verisign's are.
func (g *registry) whoisAnswer(query string) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	stamp := rdapDate(g.published)
	domain, ok := whoisQuery(query)
	r, known := g.records[domain]
	switch {
	case !ok:
		line("No match for %q.", strings.ToUpper(strings.TrimSpace(query)))
	case !known || !r.reg.WHOIS:
		line("No match for %q.", strings.ToUpper(domain))
	default:
		field := func(k, v string) { line("   %s: %s", k, v) }
		date := func(k string, t *time.Time) {
			if t != nil {
				field(k, rdapDate(*t))
			}
		}
		field("Domain Name", strings.ToUpper(r.reg.Domain))
		field("Registry Domain ID", r.handle)
		field("Registrar URL", "http://www.certfleet-lab-registrar.test")
		date("Updated Date", r.updated)
		date("Creation Date", r.created)
		date("Registry Expiry Date", r.expires)
		field("Registrar", r.registrar)
		field("Registrar IANA ID", labRegistrarID)
		field("Registrar Abuse Contact Email", "abuse@certfleet-lab-registrar.test")
		field("Registrar Abuse Contact Phone", "+1.5555550100")
		for _, s := range r.statuses {
			field("Domain Status", s.epp+" https://icann.org/epp#"+s.epp)
		}
		for _, ns := range r.nameServers {
			field("Name Server", strings.ToUpper(ns))
		}
		field("DNSSEC", "unsigned")
		field("URL of the ICANN Whois Inaccuracy Complaint Form", "https://www.icann.org/wicf/")
	}
	line(">>> Last update of whois database: %s <<<", stamp)
	line("")
	line("For more information on Whois status codes, please visit https://icann.org/epp")
	line("")
	line("NOTICE: The expiration date displayed in this record is the date the")
	line("registrar's sponsorship of the domain name registration in the registry is")
	line("currently set to expire. This is the certfleet lab: test data, not a")
	line("registration.")
	return b.String()
}

// whoisTimeout bounds one WHOIS exchange, so a client that sends nothing
// does not hold a goroutine.
const whoisTimeout = 10 * time.Second

// serveWHOIS answers one query per connection, as RFC 3912 has it, until
// ln is closed.
func (g *registry) serveWHOIS(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			g.logger.Warn("whois accept failed", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		wg.Go(func() {
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			_ = conn.SetDeadline(time.Now().Add(whoisTimeout))
			line, err := bufio.NewReader(io.LimitReader(conn, whoisQueryMax)).ReadString('\n')
			if err != nil && (!errors.Is(err, io.EOF) || line == "") {
				g.logger.Debug("whois query unread", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
				return
			}
			if _, err := io.WriteString(conn, g.whoisAnswer(line)); err != nil {
				g.logger.Debug("whois answer unsent", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
			}
		})
	}
}

// startRegistry binds the RDAP and WHOIS servers and serves them until
// Close.
func (l *Lab) startRegistry(ctx context.Context) error {
	var lc net.ListenConfig
	rdapLn, err := lc.Listen(ctx, "tcp", l.cfg.RDAPAddr)
	if err != nil {
		return fmt.Errorf("listen rdap %s: %w", l.cfg.RDAPAddr, err)
	}
	whoisLn, err := lc.Listen(ctx, "tcp", l.cfg.WHOISAddr)
	if err != nil {
		_ = rdapLn.Close()
		return fmt.Errorf("listen whois %s: %w", l.cfg.WHOISAddr, err)
	}
	g := l.registry
	g.rdapURL = "http://" + rdapLn.Addr().String() + "/"
	g.whoisAddr = whoisLn.Addr().String()
	for _, r := range g.records {
		r.want(g.rdapURL, g.whoisAddr)
	}
	errorLog, _ := zap.NewStdLogAt(g.logger, zap.DebugLevel)
	srv := &http.Server{
		Handler:           g.rdapHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          errorLog,
	}
	l.servers = append(l.servers, srv)
	l.listeners = append(l.listeners, whoisLn)
	l.wg.Go(func() {
		if err := srv.Serve(rdapLn); !errors.Is(err, http.ErrServerClosed) {
			g.logger.Warn("rdap server stopped", zap.String("addr", g.rdapURL), zap.Error(err))
		}
	})
	l.wg.Go(func() { g.serveWHOIS(ctx, whoisLn, &l.wg) })
	return nil
}

// Registrations are the lab's registrations with what a lookup of each must
// report, in a fixed order.
func (l *Lab) Registrations() []Registration {
	out := make([]Registration, len(l.registry.list))
	for i, r := range l.registry.list {
		reg := r.reg
		reg.Want.Statuses = slices.Clone(reg.Want.Statuses)
		reg.Want.NameServers = slices.Clone(reg.Want.NameServers)
		for _, t := range []**time.Time{&reg.Want.CreatedAt, &reg.Want.ExpiresAt, &reg.Want.UpdatedAt} {
			if *t != nil {
				c := **t
				*t = &c
			}
		}
		out[i] = reg
	}
	return out
}

// RDAPURL is the base URL of the lab's RDAP server, as the bootstrap file
// names it ("http://127.0.0.1:PORT/").
func (l *Lab) RDAPURL() string { return l.registry.rdapURL }

// WHOISAddr is the host:port of the lab's WHOIS server.
func (l *Lab) WHOISAddr() string { return l.registry.whoisAddr }

// WHOISServers are the lab's --whois-server values: every lab TLD, the
// WHOIS-only one included, to the lab's WHOIS server.
func (l *Lab) WHOISServers() []string {
	var out []string
	for _, t := range append(slices.Clone(RDAPTLDs), WHOISOnlyTLD) {
		out = append(out, t+"="+l.registry.whoisAddr)
	}
	return out
}
