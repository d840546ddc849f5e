package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// ReplayEvents calls fn with every stored event once, oldest first (ties in
// the same millisecond ordered by event id), and stops at the first error
// fn returns. Rows are streamed, so the event store need not fit in memory.
func ReplayEvents(ctx context.Context, conn driver.Conn, fn func(events.Envelope) error) error {
	rows, err := conn.Query(ctx, `SELECT event_id, name, occurred_at_unix_ms, tenant_id, aggregate_id, payload
		FROM events FINAL
		ORDER BY occurred_at, occurred_at_unix_ms, event_id`)
	if err != nil {
		return fmt.Errorf("query events: %w", err)
	}
	return readEvents(rows, fn)
}

// ReplayEventsSince calls fn, oldest first as ReplayEvents, with the
// stored events that occurred at or after since or were stored at or after
// it (inserted_at, the sink's clock): the replay after a view snapshot,
// which must bring back an event published long after it occurred (its
// occurred_at is old, its inserted_at is not). It reads without FINAL, so
// that ClickHouse reads the two time columns of every row and the rest
// only of the rows that match (PREWHERE): an event's copies that a merge
// has not collapsed yet come one after the other, in occurred order, which
// the projector's views take as they take redeliveries.
func ReplayEventsSince(ctx context.Context, conn driver.Conn, since time.Time, fn func(events.Envelope) error) error {
	rows, err := conn.Query(ctx, `SELECT event_id, name, occurred_at_unix_ms, tenant_id, aggregate_id, payload
		FROM events
		PREWHERE occurred_at_unix_ms >= ? OR inserted_at >= toDateTime(?)
		ORDER BY occurred_at, occurred_at_unix_ms, event_id`, uint64(max(since.UnixMilli(), 0)), max(since.Unix(), 0))
	if err != nil {
		return fmt.Errorf("query events: %w", err)
	}
	return readEvents(rows, fn)
}

// readEvents reads rows of event_id, name, occurred_at_unix_ms,
// tenant_id, aggregate_id and payload into fn; it closes rows.
func readEvents(rows driver.Rows, fn func(events.Envelope) error) error {
	defer rows.Close()
	for rows.Next() {
		var (
			e       events.Envelope
			ms      uint64
			payload string
		)
		if err := rows.Scan(&e.EventID, &e.Name, &ms, &e.TenantID, &e.AggregateID, &payload); err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		e.OccurredAt = time.UnixMilli(int64(ms)).UTC()
		e.Payload = []byte(payload)
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	return nil
}

// ScanRow is one row of scan_results: what one region saw at one IP of a
// domain in one scan.
type ScanRow struct {
	EventID uuid.UUID
	JobID   uuid.UUID
	// ScheduledAt is the job's scheduled time, the same for every delivery
	// of the job; for events of agents that predate it, the scan's start.
	ScheduledAt        time.Time
	TenantID           string
	DomainID           string
	Host               string
	Port               uint16
	Region             string
	Agent              string
	IP                 string
	Outcome            string
	Detail             string
	CertificateFound   bool
	Subject            string
	Issuer             string
	SANs               []string
	Serial             string
	NotBefore          *time.Time // nil when no certificate was seen; exact, also outside 1970..2106
	NotAfter           *time.Time // events.NoExpiry when the certificate has no expiry (HasNoExpiry)
	LeafSHA256         string
	KeyType            string
	KeyBits            uint16
	SignatureAlgorithm string
	ChainLength        uint8
	TLSVersion         string
	CipherSuite        string
	ChainValid         bool
	HostnameValid      bool
	ConnectMS          uint32
	HandshakeMS        uint32
	StartedAt          time.Time
	ScannedAt          time.Time // the scan's FinishedAt
	// HTTP and protocol facts (migration 2); see events.IPResult.
	HTTPStatus            uint16
	HSTSMaxAge            int64
	HSTSIncludeSubdomains bool
	LegacyTLSChecked      bool
	LegacyTLS             []string
}

// HasNoExpiry tells whether the row's certificate has no well-defined
// expiration (RFC 5280's 99991231235959Z): shown as "no expiry", never as
// a date or a number of days.
func (r ScanRow) HasNoExpiry() bool {
	return r.CertificateFound && r.NotAfter != nil && r.NotAfter.Equal(events.NoExpiry)
}

// ScanColumns are the columns of scan_results (see scanResultsTable), in
// the order of ScanRow's fields.
const ScanColumns = "event_id, job_id, scheduled_at, tenant_id, domain_id, host, port, region, agent, ip, outcome, detail, " +
	"certificate_found, subject, issuer, sans, serial, not_before_unix, not_after_unix, leaf_sha256, key_type, key_bits, " +
	"signature_algorithm, chain_length, tls_version, cipher_suite, chain_valid, hostname_valid, connect_ms, " +
	"handshake_ms, started_at, scanned_at, http_status, hsts_max_age, hsts_include_subdomains, legacy_tls_checked, legacy_tls"

// ScanRows returns the scan_results rows of a scan.completed event: one per
// IPResult, including the IP-less entry of a failed resolution. An event
// with a value its column cannot hold is refused
// (events.DecodeScanCompleted), never stored wrapped or clamped.
func ScanRows(e events.Envelope) ([]ScanRow, error) {
	p, err := events.DecodeScanCompleted(e)
	if err != nil {
		return nil, err
	}
	scheduled := p.ScheduledAt
	for _, t := range []time.Time{p.StartedAt, p.FinishedAt, e.OccurredAt} {
		if !scheduled.IsZero() {
			break
		}
		// An older agent's event: the scan's own times are the best
		// stand-in, though a rescan after a redelivery then stores apart.
		scheduled = t
	}
	out := make([]ScanRow, 0, len(p.Results))
	for _, r := range p.Results {
		out = append(out, ScanRow{
			EventID:               e.EventID,
			JobID:                 p.JobID,
			ScheduledAt:           clampDateTime(scheduled),
			TenantID:              e.TenantID,
			DomainID:              p.DomainID,
			Host:                  p.Host,
			Port:                  uint16(p.Port), // checked by DecodeScanCompleted, as the casts below
			Region:                p.Region,
			Agent:                 p.Agent,
			IP:                    r.IP,
			Outcome:               string(r.Outcome),
			Detail:                r.Detail,
			CertificateFound:      r.CertificateFound,
			Subject:               r.Subject,
			Issuer:                r.Issuer,
			SANs:                  nonNil(r.SANs),
			Serial:                r.Serial,
			NotBefore:             optionalTime(r.NotBefore),
			NotAfter:              optionalTime(r.NotAfter),
			LeafSHA256:            r.LeafSHA256,
			KeyType:               r.KeyType,
			KeyBits:               uint16(r.KeyBits),
			SignatureAlgorithm:    r.SignatureAlgorithm,
			ChainLength:           uint8(r.ChainLength),
			TLSVersion:            r.TLSVersion,
			CipherSuite:           r.CipherSuite,
			ChainValid:            r.ChainValid,
			HostnameValid:         r.HostnameValid,
			ConnectMS:             uint32(r.ConnectMS),
			HandshakeMS:           uint32(r.HandshakeMS),
			StartedAt:             clampDateTime(p.StartedAt),
			ScannedAt:             clampDateTime(p.FinishedAt),
			HTTPStatus:            uint16(r.HTTPStatus),
			HSTSMaxAge:            r.HSTSMaxAge,
			HSTSIncludeSubdomains: r.HSTSIncludeSubdomains,
			LegacyTLSChecked:      r.LegacyTLSChecked,
			LegacyTLS:             nonNil(r.LegacyTLS),
		})
	}
	return out, nil
}

// ScanHistory returns up to limit scan_results rows of a domain, latest
// scan first, each stored row once however often its event was delivered.
func ScanHistory(ctx context.Context, conn driver.Conn, tenantID, domainID string, limit int) ([]ScanRow, error) {
	rows, err := conn.Query(ctx, "SELECT "+ScanColumns+` FROM scan_results FINAL
		WHERE tenant_id = ? AND domain_id = ?
		ORDER BY scheduled_at DESC, scanned_at DESC, region, ip, job_id
		LIMIT ?`, tenantID, domainID, limit)
	if err != nil {
		return nil, fmt.Errorf("query scan history of %s: %w", domainID, err)
	}
	return readScanRows(rows, "scan history of "+domainID)
}

// readScanRows reads rows of a query selecting ScanColumns; what names the
// read in errors. It closes rows.
func readScanRows(rows driver.Rows, what string) ([]ScanRow, error) {
	defer rows.Close()
	var out []ScanRow
	for rows.Next() {
		var (
			r                                ScanRow
			found, chainValid, hostnameValid uint8
			hstsSub, legacyChecked           uint8
			notBefore, notAfter              *int64
		)
		if err := rows.Scan(&r.EventID, &r.JobID, &r.ScheduledAt, &r.TenantID, &r.DomainID, &r.Host, &r.Port, &r.Region, &r.Agent,
			&r.IP, &r.Outcome, &r.Detail, &found, &r.Subject, &r.Issuer, &r.SANs, &r.Serial, &notBefore, &notAfter,
			&r.LeafSHA256, &r.KeyType, &r.KeyBits, &r.SignatureAlgorithm, &r.ChainLength, &r.TLSVersion,
			&r.CipherSuite, &chainValid, &hostnameValid, &r.ConnectMS, &r.HandshakeMS, &r.StartedAt,
			&r.ScannedAt, &r.HTTPStatus, &r.HSTSMaxAge, &hstsSub, &legacyChecked, &r.LegacyTLS); err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		r.CertificateFound, r.ChainValid, r.HostnameValid = found == 1, chainValid == 1, hostnameValid == 1
		r.HSTSIncludeSubdomains, r.LegacyTLSChecked = hstsSub == 1, legacyChecked == 1
		r.NotBefore, r.NotAfter = fromUnix(notBefore), fromUnix(notAfter)
		r.ScheduledAt, r.StartedAt, r.ScannedAt = r.ScheduledAt.UTC(), r.StartedAt.UTC(), r.ScannedAt.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return out, nil
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// optionalTime is a certificate date: nil when none was seen, exact
// otherwise (its column is Unix seconds, not DateTime).
func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

// DateTime holds whole seconds from 1970 to 2106. Scan times outside are
// refused when the event is decoded; clampDateTime keeps an insert of the
// envelope times of the events table from failing for a whole batch.
var (
	minDateTime = time.Unix(0, 0).UTC()
	maxDateTime = time.Unix(1<<32-1, 0).UTC()
)

func clampDateTime(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Second)
	if t.Before(minDateTime) {
		return minDateTime
	}
	if t.After(maxDateTime) {
		return maxDateTime
	}
	return t
}

func unixPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

func fromUnix(s *int64) *time.Time {
	if s == nil {
		return nil
	}
	t := time.Unix(*s, 0).UTC()
	return &t
}
