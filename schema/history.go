package schema

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
)

// The reads of the history and analytics API (GET /domains/{id}/history,
// /domains/{id}/certificates, /stats). Every read is of scan_results FINAL,
// so a redelivered or rescanned job counts once, and filters only on
// columns of the sorting key (tenant, domain, scheduled time, region, IP,
// job) where it can: all copies of a row pass or fail such a filter alike,
// so the filter cannot pick an older copy. Such filters go in PREWHERE,
// applied before FINAL merges the copies, so that the other columns are
// read only for the rows that pass (granules hold neighbouring domains'
// rows too); a filter on any other column stays in WHERE, after the merge.

// HistoryCursor is the position of a row in a domain's history, newest
// first: the rows after it are those scheduled earlier, or at the same
// time and later in (region, ip, job_id). It is the part of the sorting
// key a domain's rows differ in, so no two rows share one.
type HistoryCursor struct {
	ScheduledAt time.Time
	Region, IP  string
	JobID       uuid.UUID
}

// CursorOf is the position of r.
func CursorOf(r ScanRow) HistoryCursor {
	return HistoryCursor{ScheduledAt: r.ScheduledAt, Region: r.Region, IP: r.IP, JobID: r.JobID}
}

// HistoryQuery selects a page of a domain's scan_results rows.
type HistoryQuery struct {
	TenantID, DomainID string
	// From and To bound scheduled_at: From <= scheduled_at < To; zero is
	// unbounded.
	From, To time.Time
	// Region and IP keep only the rows of that region or IP; "" keeps all.
	Region, IP string
	// After is the last row of the previous page; nil starts at the newest.
	After *HistoryCursor
	// Limit is the most rows returned.
	Limit int
	// Now is the reader's clock, where the newest page is looked for
	// first; zero reads the whole range at once.
	Now time.Time
}

// historySpans are the time ranges ScanHistoryPage tries, back from the
// newest time a page can hold, before it reads the whole range.
var historySpans = []time.Duration{24 * time.Hour, 8 * 24 * time.Hour, 64 * 24 * time.Hour}

// ScanHistoryPage returns up to q.Limit rows of a domain, newest scheduled
// first (ties by region, IP, job), each once however often its job was
// delivered or rescanned. Pages continue from a cursor, not an offset: a
// page reads only the index range from its cursor on, and rows inserted
// meanwhile neither repeat nor skip a row.
//
// FINAL with ORDER BY ... DESC LIMIT reads every row of the range it is
// given, so a page is read from the day back from its newest possible
// time (To, the cursor or q.Now) first, then 8 and 64 days, then the
// whole range: the first range that holds Limit rows holds the newest
// Limit rows (a range has no upper bound but To and the cursor).
func ScanHistoryPage(ctx context.Context, conn driver.Conn, q HistoryQuery) ([]ScanRow, error) {
	top := q.Now
	if !q.To.IsZero() {
		top = q.To
	}
	if q.After != nil && (top.IsZero() || q.After.ScheduledAt.Before(top)) {
		top = q.After.ScheduledAt
	}
	if !top.IsZero() {
		for _, span := range historySpans {
			from := top.Add(-span)
			if !from.After(q.From) {
				break
			}
			rows, err := scanHistoryRange(ctx, conn, q, from)
			if err != nil || len(rows) >= q.Limit {
				return rows, err
			}
		}
	}
	return scanHistoryRange(ctx, conn, q, q.From)
}

// scanHistoryRange is ScanHistoryPage's query of the rows scheduled from
// from (zero: unbounded) on.
func scanHistoryRange(ctx context.Context, conn driver.Conn, q HistoryQuery, from time.Time) ([]ScanRow, error) {
	where := "tenant_id = ? AND domain_id = ?"
	args := []any{q.TenantID, q.DomainID}
	if !from.IsZero() {
		where += " AND scheduled_at >= ?"
		args = append(args, clampDateTime(from))
	}
	if !q.To.IsZero() {
		where += " AND scheduled_at < ?"
		args = append(args, clampDateTime(q.To))
	}
	if q.Region != "" {
		where += " AND region = ?"
		args = append(args, q.Region)
	}
	if q.IP != "" {
		where += " AND ip = ?"
		args = append(args, q.IP)
	}
	if c := q.After; c != nil {
		// The first condition alone is what the primary index can use.
		at := clampDateTime(c.ScheduledAt)
		where += " AND scheduled_at <= ? AND (scheduled_at < ? OR (region, ip, job_id) > (?, ?, toUUID(?)))"
		args = append(args, at, at, c.Region, c.IP, c.JobID.String())
	}
	args = append(args, q.Limit)
	rows, err := conn.Query(ctx, "SELECT "+ScanColumns+" FROM scan_results FINAL PREWHERE "+where+`
		ORDER BY scheduled_at DESC, region, ip, job_id
		LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("query scan history of %s: %w", q.DomainID, err)
	}
	return readScanRows(rows, "scan history of "+q.DomainID)
}

// Leaf is one certificate (a distinct leaf_sha256) a domain served, with
// when it was seen in all and at each region and IP: how a renewal rolled
// out.
type Leaf struct {
	SHA256              string
	Subject, Issuer     string
	Serial              string
	NotBefore, NotAfter *time.Time
	// FirstSeen and LastSeen are the first and last scan that saw it.
	FirstSeen, LastSeen time.Time
	// Scans counts the scans (per region and IP) that saw it.
	Scans uint64
	// Seen is where it was seen, by region then IP.
	Seen []LeafSighting
}

// LeafSighting is a certificate seen at one region and IP.
type LeafSighting struct {
	Region, IP          string
	FirstSeen, LastSeen time.Time
	Scans               uint64
}

// CertificateTimeline returns the certificates a domain served, newest
// first seen first, up to limit of them. ClickHouse groups the rows: by
// certificate, region and IP, then by certificate.
func CertificateTimeline(ctx context.Context, conn driver.Conn, tenantID, domainID string, limit int) ([]Leaf, error) {
	rows, err := conn.Query(ctx, `SELECT leaf_sha256, any(subject), any(issuer), any(serial), any(nb), any(na),
			min(first_seen) AS first, max(last_seen), sum(scans),
			groupArray(region), groupArray(ip), groupArray(first_seen), groupArray(last_seen), groupArray(scans)
		FROM (
			SELECT leaf_sha256, region, ip, any(subject) AS subject, any(issuer) AS issuer, any(serial) AS serial,
				any(not_before_unix) AS nb, any(not_after_unix) AS na,
				min(scanned_at) AS first_seen, max(scanned_at) AS last_seen, count() AS scans
			FROM scan_results FINAL
			PREWHERE tenant_id = ? AND domain_id = ?
			WHERE certificate_found = 1 AND leaf_sha256 != ''
			GROUP BY leaf_sha256, region, ip
		)
		GROUP BY leaf_sha256
		ORDER BY first DESC, leaf_sha256
		LIMIT ?`, tenantID, domainID, limit)
	if err != nil {
		return nil, fmt.Errorf("query certificates of %s: %w", domainID, err)
	}
	defer rows.Close()
	var out []Leaf
	for rows.Next() {
		var (
			l             Leaf
			nb, na        *int64
			regions, ips  []string
			firsts, lasts []time.Time
			scans         []uint64
		)
		if err := rows.Scan(&l.SHA256, &l.Subject, &l.Issuer, &l.Serial, &nb, &na, &l.FirstSeen, &l.LastSeen, &l.Scans,
			&regions, &ips, &firsts, &lasts, &scans); err != nil {
			return nil, fmt.Errorf("read certificates of %s: %w", domainID, err)
		}
		l.NotBefore, l.NotAfter = fromUnix(nb), fromUnix(na)
		l.FirstSeen, l.LastSeen = l.FirstSeen.UTC(), l.LastSeen.UTC()
		l.Seen = make([]LeafSighting, len(regions))
		for i := range regions {
			l.Seen[i] = LeafSighting{Region: regions[i], IP: ips[i], FirstSeen: firsts[i].UTC(), LastSeen: lasts[i].UTC(), Scans: scans[i]}
		}
		// groupArray's order is the order rows reached it: not fixed.
		sort.Slice(l.Seen, func(i, j int) bool {
			a, b := l.Seen[i], l.Seen[j]
			if a.Region != b.Region {
				return a.Region < b.Region
			}
			return a.IP < b.IP
		})
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read certificates of %s: %w", domainID, err)
	}
	return out, nil
}

// Dimensions of FleetStats.Latest.
const (
	DimIssuer     = "issuer"
	DimTLSVersion = "tls_version"
	DimKey        = "key"         // "<key type> <bits>", e.g. "ECDSA 256"
	DimExpiryWeek = "expiry_week" // the Monday (UTC, Unix seconds) of the week the certificate expires
	DimExpired    = "expired"     // expired already (name "")
	DimLater      = "later"       // expires after the planner's horizon, or never (name "")
)

// FleetCount is how many of the fleet's latest results share a value of a
// dimension.
type FleetCount struct {
	Dimension, Value string
	// Endpoints counts (domain, region, IP) whose latest result shows it,
	// Domains the distinct domains, Certificates the distinct leaves.
	Endpoints, Domains, Certificates uint64
}

// RegionOutcome is how many scans of a region had an outcome, with their
// handshake times' quantiles.
type RegionOutcome struct {
	Region, Outcome string
	Scans           uint64
	// HandshakeP50 and HandshakeP95 are milliseconds (ClickHouse's
	// quantiles: a reservoir sample past 8,192 values).
	HandshakeP50, HandshakeP95 float64
}

// FleetStats are a tenant's scan_results between two times.
type FleetStats struct {
	// Latest counts the latest result of each domain, region and IP that
	// saw a certificate, by dimension.
	Latest []FleetCount
	// Outcomes counts every scan (per region and IP) by region and outcome,
	// by the hour from the rollups: every copy of a rescanned job counts.
	Outcomes []RegionOutcome
}

// week is a week's length and weekOffset the Monday 1970-01-05 00:00 UTC,
// in seconds: the Monday of a time t is t - (t - weekOffset) mod week.
const (
	week       = 7 * 24 * 3600
	weekOffset = 4 * 24 * 3600
)

// WeekOf is the Monday 00:00 UTC of t's ISO week, as DimExpiryWeek counts.
func WeekOf(t time.Time) time.Time {
	s := t.Unix() - weekOffset
	s -= ((s % week) + week) % week
	return time.Unix(s+weekOffset, 0).UTC()
}

// QueryFleetStats reads a tenant's fleet from the scans scheduled in
// [since, now]: Latest from each domain, region and IP's latest scan, its
// expiry weeks from now's week for weeks weeks; Outcomes from every scan,
// counted by the hour in the rollups (rollup.go): from the start of
// since's hour.
//
// Latest filters in PREWHERE, before FINAL merges the copies: safe
// because every copy of a row shares the key columns filtered on, and it
// reads the other columns only for the window's rows (on 18.16 a third
// faster in the benchmark's first query).
func QueryFleetStats(ctx context.Context, conn driver.Conn, tenantID string, since, now time.Time, weeks int) (FleetStats, error) {
	var out FleetStats
	from := WeekOf(now).Unix()
	until := from + int64(weeks)*week
	// One pass over the latest results counts every dimension: ARRAY JOIN
	// turns each result into one row per (dimension, value).
	rows, err := conn.Query(ctx, `SELECT tupleElement(dim, 1) AS d, tupleElement(dim, 2) AS v,
			count(), uniqExact(domain_id), uniqExact(leaf)
		FROM (
			SELECT domain_id, region, ip,
				argMax(certificate_found, scheduled_at) AS found,
				argMax(leaf_sha256, scheduled_at) AS leaf,
				argMax(issuer, scheduled_at) AS iss,
				argMax(tls_version, scheduled_at) AS tls,
				argMax(concat(key_type, ' ', toString(key_bits)), scheduled_at) AS k,
				argMax(ifNull(not_after_unix, 0), scheduled_at) AS na
			FROM scan_results FINAL
			PREWHERE tenant_id = ? AND scheduled_at >= ? AND scheduled_at <= ?
			GROUP BY domain_id, region, ip
		)
		ARRAY JOIN [
			tuple('`+DimIssuer+`', iss),
			tuple('`+DimTLSVersion+`', tls),
			tuple('`+DimKey+`', k),
			multiIf(na < ?, tuple('`+DimExpired+`', ''),
				na >= ?, tuple('`+DimLater+`', ''),
				tuple('`+DimExpiryWeek+`', toString(intDiv(na - ?, ?) * ? + ?)))
		] AS dim
		WHERE found = 1
		GROUP BY d, v
		ORDER BY d, v`, tenantID, clampDateTime(since), clampDateTime(now), now.Unix(), until, weekOffset, week, week, weekOffset)
	if err != nil {
		return out, fmt.Errorf("query fleet of %s: %w", tenantID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c FleetCount
		if err := rows.Scan(&c.Dimension, &c.Value, &c.Endpoints, &c.Domains, &c.Certificates); err != nil {
			return out, fmt.Errorf("read fleet of %s: %w", tenantID, err)
		}
		out.Latest = append(out.Latest, c)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read fleet of %s: %w", tenantID, err)
	}

	out.Outcomes, err = scanOutcomes(ctx, conn, tenantID, since, now)
	return out, err
}
