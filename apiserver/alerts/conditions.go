package alerts

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/managedcert"
)

// condition is one alert condition that holds on a domain's view.
type condition struct {
	// key names the condition in the domain's alert state: the kind and
	// what it is about ("ssl_expiry|<sha256>|14", "chain_invalid").
	key       string
	kind      string
	severity  string
	title     string
	message   string
	threshold *int
	leaf      string
	ips       []string
	regions   []string
	// group and rank order the conditions of one certificate's expiry
	// (ssl_expiry thresholds and ssl_expired, rank -1): when several
	// become true at once, only the tightest is raised.
	group string
	rank  int
}

// verdict is what a view says about every alert kind.
type verdict struct {
	conds map[string]condition
	// unknown lists the kinds the view holds no facts for (no certificate
	// seen, no two regions to compare): their alerts stay as they are.
	unknown map[string]bool
}

// sightings gathers where one fact was seen: IPs and the regions per IP.
type sightings map[string]map[string]bool

func (s sightings) add(ip, region string) {
	if s[ip] == nil {
		s[ip] = map[string]bool{}
	}
	s[ip][region] = true
}

// ips and regions list the sightings sorted; the name's resolution (IP
// "") is not an IP.
func (s sightings) ips() []string {
	out := []string{}
	for ip := range s {
		if ip != "" {
			out = append(out, ip)
		}
	}
	sort.Strings(out)
	return out
}

func (s sightings) regions() []string {
	set := map[string]bool{}
	for _, rs := range s {
		for r := range rs {
			set[r] = true
		}
	}
	return sortedKeys(set)
}

// String is "192.0.2.1 (eu, us), 192.0.2.2 (us)".
func (s sightings) String() string {
	parts := make([]string, 0, len(s))
	for _, ip := range slices.Sorted(maps.Keys(s)) {
		name := ip
		if ip == "" {
			name = "name resolution"
		}
		parts = append(parts, name+" ("+strings.Join(sortedKeys(s[ip]), ", ")+")")
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// short abbreviates a certificate's SHA-256 for messages.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func plural(n int, unit string) string {
	if n == 1 || n == -1 {
		return fmt.Sprintf("%d %s", n, unit)
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// evaluate says which conditions hold on snap under settings. Time is the
// view's latest scan, not the wall clock, so that every replica evaluating
// one snapshot gets the same verdict.
func evaluate(snap projector.Snapshot, f facts, host string, st Settings, cfg Config) verdict {
	v := verdict{conds: map[string]condition{}, unknown: map[string]bool{}}
	put := func(c condition) { v.conds[c.key] = c }

	type cert struct {
		notAfter time.Time
		where    sightings
	}
	// Days are counted at the view's latest scan, also for a certificate
	// only an older scan of another region still shows: it has not got
	// any further from its expiry since.
	at := latestScan(snap)
	certs := map[string]*cert{}
	chain, name := sightings{}, sightings{}
	var chainDetail []string
	for _, e := range snap.Entries {
		if !e.CertificateFound {
			continue
		}
		c := certs[e.LeafSHA256]
		if c == nil {
			c = &cert{notAfter: e.NotAfter, where: sightings{}}
			certs[e.LeafSHA256] = c
		}
		c.where.add(e.IP, e.Region)
		_, reasons := grade.Grade(e.IPResult, e.ScannedAt, grade.Thresholds{})
		if slices.Contains(reasons, grade.ReasonChainInvalid) {
			chain.add(e.IP, e.Region)
			if e.Detail != "" && !slices.Contains(chainDetail, e.Detail) {
				chainDetail = append(chainDetail, e.Detail)
			}
		}
		if slices.Contains(reasons, grade.ReasonHostnameInvalid) {
			name.add(e.IP, e.Region)
		}
	}
	if len(certs) == 0 {
		// No certificate seen (every IP failed): nothing is known of the
		// certificates, and their alerts stay until one is seen again.
		for _, k := range []string{events.AlertSSLExpiry, events.AlertSSLExpired, events.AlertChainInvalid, events.AlertHostnameMismatch} {
			v.unknown[k] = true
		}
	}

	for sha, c := range certs {
		if c.notAfter.Equal(events.NoExpiry) {
			continue // RFC 5280's "no well-defined expiration": nothing to count down
		}
		days := grade.DaysUntil(c.notAfter, at)
		group := "cert|" + sha
		date := c.notAfter.UTC().Format("2006-01-02")
		if at.After(c.notAfter) {
			put(condition{
				key: events.AlertSSLExpired + "|" + sha, kind: events.AlertSSLExpired, severity: events.SeverityCritical,
				title:   "SSL certificate expired",
				message: fmt.Sprintf("The SSL certificate for %s expired on %s. Served on %s.", host, date, c.where),
				leaf:    sha, ips: c.where.ips(), regions: c.where.regions(), group: group, rank: -1,
			})
		}
		for _, th := range st.ExpiryThresholdsDays {
			if days > th {
				continue
			}
			sev := events.SeverityWarning
			if th <= cfg.CriticalDays {
				sev = events.SeverityCritical
			}
			left := "less than a day"
			title := "SSL certificate expires within a day"
			if days > 0 {
				left, title = plural(days, "day"), "SSL certificate expires in "+plural(days, "day")
			}
			put(condition{
				key: fmt.Sprintf("%s|%s|%d", events.AlertSSLExpiry, sha, th), kind: events.AlertSSLExpiry, severity: sev,
				title: title,
				message: fmt.Sprintf("The SSL certificate for %s expires on %s. %s remaining (threshold %s). Served on %s.",
					host, date, left, plural(th, "day"), c.where),
				threshold: &th, leaf: sha, ips: c.where.ips(), regions: c.where.regions(), group: group, rank: th,
			})
		}
	}
	if len(chain) > 0 {
		detail := ""
		if len(chainDetail) > 0 {
			sort.Strings(chainDetail)
			detail = " (" + strings.Join(chainDetail, ", ") + ")"
		}
		put(condition{
			key: events.AlertChainInvalid, kind: events.AlertChainInvalid, severity: events.SeverityCritical,
			title:   "Certificate chain is not trusted",
			message: fmt.Sprintf("The certificate served for %s does not chain to a trusted root%s on %s.", host, detail, chain),
			ips:     chain.ips(), regions: chain.regions(),
		})
	}
	if len(name) > 0 {
		put(condition{
			key: events.AlertHostnameMismatch, kind: events.AlertHostnameMismatch, severity: events.SeverityCritical,
			title:   "Certificate does not match the hostname",
			message: fmt.Sprintf("The certificate served for %s does not cover that name on %s.", host, name),
			ips:     name.ips(), regions: name.regions(),
		})
	}

	stale := f.stale(at, cfg.RegionStaleAfter)
	mismatch(snap, host, cfg.MismatchWindow, stale, &v)
	failing(snap, host, st.ScanFailingAfter, stale, &v)
	registrationExpiry(f.reg, latestFact(snap, f), host, st, cfg, &v)
	deployment(f.managed, snap, host, cfg, &v)
	renewalFailing(f.managed, latestFact(snap, f), host, cfg, &v)
	return v
}

// deployment adds certificate_not_deployed when host's managed certificate
// was issued more than cfg.DeployGrace ago and the latest scans of some
// regions or IPs, taken after that grace, still see another leaf. Within
// the grace, or without a scan after it, the kind is unknown.
func deployment(m *managedcert.Certificate, snap projector.Snapshot, host string, cfg Config, v *verdict) {
	if m == nil || m.Status != managedcert.StatusIssued || m.SHA256 == "" {
		return // nothing managed, or nothing issued yet: no alert
	}
	due := m.IssuedAt.Add(cfg.DeployGrace)
	lag, old, checked := sightings{}, map[string]bool{}, false
	for _, e := range snap.Entries {
		if !e.CertificateFound || e.ScannedAt.Before(due) {
			continue
		}
		checked = true
		if e.LeafSHA256 != m.SHA256 {
			lag.add(e.IP, e.Region)
			old[short(e.LeafSHA256)] = true
		}
	}
	switch {
	case !checked:
		v.unknown[events.AlertCertNotDeployed] = true
	case len(lag) > 0:
		key := events.AlertCertNotDeployed + "|" + m.SHA256
		v.conds[key] = condition{
			key: key, kind: events.AlertCertNotDeployed, severity: events.SeverityWarning,
			title: "Renewed certificate not deployed",
			message: fmt.Sprintf("The certificate certfleet issued for %s on %s (serial %s, %s) is still not served %s later on %s, which serve %s.",
				host, m.IssuedAt.UTC().Format("2006-01-02 15:04 MST"), m.Serial, short(m.SHA256), cfg.DeployGrace, lag,
				strings.Join(sortedKeys(old), ", ")),
			leaf: m.SHA256, ips: lag.ips(), regions: lag.regions(),
		}
	}
}

// renewalFailing adds acme_renewal_failed when the orders of host's
// managed certificate keep failing: RenewalFailAfter failures in a row,
// or any failure once the certificate is within CriticalDays of expiry.
func renewalFailing(m *managedcert.Certificate, at time.Time, host string, cfg Config, v *verdict) {
	if m == nil || m.Error == "" || m.Deleting {
		return
	}
	soon := m.Status == managedcert.StatusIssued && grade.DaysUntil(m.NotAfter, at) <= cfg.CriticalDays
	if m.Attempt < cfg.RenewalFailAfter && !soon {
		return
	}
	sev, what := events.SeverityWarning, "Certificate renewal keeps failing"
	if soon {
		sev = events.SeverityCritical
	}
	expiry := "no certificate was issued yet"
	if m.Status == managedcert.StatusIssued {
		expiry = "the current certificate expires on " + m.NotAfter.UTC().Format("2006-01-02")
	} else {
		what = "Certificate issuance keeps failing"
	}
	v.conds[events.AlertACMERenewalFailed] = condition{
		key: events.AlertACMERenewalFailed, kind: events.AlertACMERenewalFailed, severity: sev, title: what,
		message: fmt.Sprintf("The ACME orders for %s failed %s in a row; %s. Next attempt %s. Last error: %s",
			host, plural(m.Attempt, "time"), expiry, m.RetryAt.UTC().Format(time.RFC3339), m.Error),
	}
}

// registrationExpiry adds domain_expired and domain_expiry at each
// threshold the registration of host's registrable domain came within,
// counted at at (the view's latest fact, so that every replica evaluating
// one snapshot agrees). Without a known expiry (never looked up, none
// published, not found, lookups failing) the kinds are unknown: their
// alerts stay as they are.
func registrationExpiry(reg projector.Registration, at time.Time, host string, st Settings, cfg Config, v *verdict) {
	exp, _ := reg.Expiry()
	if exp == nil {
		v.unknown[events.AlertDomainExpiry] = true
		v.unknown[events.AlertDomainExpired] = true
		return
	}
	group := "reg|" + reg.Domain
	date := exp.UTC().Format("2006-01-02")
	registrar := ""
	if reg.Answer.Registrar != "" {
		registrar = " Registrar: " + reg.Answer.Registrar + "."
	}
	if at.After(*exp) {
		v.conds[events.AlertDomainExpired+"|"+reg.Domain] = condition{
			key: events.AlertDomainExpired + "|" + reg.Domain, kind: events.AlertDomainExpired, severity: events.SeverityCritical,
			title:   "Domain registration expired",
			message: fmt.Sprintf("The registration of %s (for %s) expired on %s.%s", reg.Domain, host, date, registrar),
			group:   group, rank: -1,
		}
	}
	days := grade.DaysUntil(*exp, at)
	for _, th := range st.DomainExpiryThresholdsDays {
		if days > th {
			continue
		}
		sev := events.SeverityWarning
		if th <= cfg.CriticalDays {
			sev = events.SeverityCritical
		}
		left, title := "less than a day", "Domain registration expires within a day"
		if days > 0 {
			left, title = plural(days, "day"), "Domain registration expires in "+plural(days, "day")
		}
		key := fmt.Sprintf("%s|%s|%d", events.AlertDomainExpiry, reg.Domain, th)
		v.conds[key] = condition{
			key: key, kind: events.AlertDomainExpiry, severity: sev, title: title,
			message: fmt.Sprintf("The registration of %s (for %s) expires on %s. %s remaining (threshold %s).%s",
				reg.Domain, host, date, left, plural(th, "day"), registrar),
			threshold: &th, group: group, rank: th,
		}
	}
}

// mismatch adds region_mismatch when two regions whose scans finished
// within window of each other saw different leaves on one IP. Stale
// regions do not count: with no pair to compare because of them, the
// regions agree (an alert raised with them resolves); with no pair for
// other reasons, the kind is unknown.
func mismatch(snap projector.Snapshot, host string, window time.Duration, stale map[string]bool, v *verdict) {
	byIP := map[string][]projector.ExpEntry{}
	withStale := false
	for _, e := range snap.Entries {
		if !e.CertificateFound || e.IP == "" {
			continue
		}
		if stale[e.Region] {
			withStale = true
			continue
		}
		byIP[e.IP] = append(byIP[e.IP], e)
	}
	compared := false
	where := sightings{}
	var pairs []string
	for _, ip := range slices.Sorted(maps.Keys(byIP)) {
		es := byIP[ip]
		for i := range es {
			for j := i + 1; j < len(es); j++ {
				a, b := es[i], es[j]
				if d := a.ScannedAt.Sub(b.ScannedAt); d > window || d < -window {
					continue
				}
				compared = true
				if a.LeafSHA256 == b.LeafSHA256 {
					continue
				}
				where.add(ip, a.Region)
				where.add(ip, b.Region)
				pairs = append(pairs, fmt.Sprintf("on %s %s sees %s and %s sees %s", ip, a.Region, short(a.LeafSHA256), b.Region, short(b.LeafSHA256)))
			}
		}
	}
	switch {
	case len(pairs) > 0:
		v.conds[events.AlertRegionMismatch] = condition{
			key: events.AlertRegionMismatch, kind: events.AlertRegionMismatch, severity: events.SeverityWarning,
			title: "Regions see different certificates",
			message: fmt.Sprintf("Regions scanning %s within %s of each other see different certificates: %s. An unfinished rollout, or interception.",
				host, window, strings.Join(pairs, "; ")),
			ips: where.ips(), regions: where.regions(),
		}
	case !compared && !withStale:
		v.unknown[events.AlertRegionMismatch] = true
	}
}

// failing adds scan_failing when a region that is not stale failed after
// scans in a row (the name's resolution or an IP did not complete a
// handshake). A view without entries says nothing.
func failing(snap projector.Snapshot, host string, after int, stale map[string]bool, v *verdict) {
	if len(snap.Entries) == 0 {
		v.unknown[events.AlertScanFailing] = true
		return
	}
	var regions []string
	for r, n := range snap.Failures {
		if n >= after && !stale[r] {
			regions = append(regions, r)
		}
	}
	if len(regions) == 0 {
		return
	}
	sort.Strings(regions)
	where := sightings{}
	var parts []string
	for _, e := range snap.Entries {
		if e.Outcome != events.OutcomeOK && slices.Contains(regions, e.Region) {
			where.add(e.IP, e.Region)
			ip := e.IP
			if ip == "" {
				ip = "name resolution"
			}
			parts = append(parts, fmt.Sprintf("%s from %s: %s", ip, e.Region, e.Outcome))
		}
	}
	counts := make([]string, len(regions))
	for i, r := range regions {
		counts[i] = fmt.Sprintf("%s %d", r, snap.Failures[r])
	}
	v.conds[events.AlertScanFailing] = condition{
		key: events.AlertScanFailing, kind: events.AlertScanFailing, severity: events.SeverityWarning,
		title: "Scans are failing",
		message: fmt.Sprintf("Scans of %s failed %d or more times in a row (%s): %s.",
			host, after, strings.Join(counts, ", "), strings.Join(parts, "; ")),
		ips: where.ips(), regions: regions,
	}
}
