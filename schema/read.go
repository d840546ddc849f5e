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
	EventID            uuid.UUID
	JobID              uuid.UUID
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
	NotBefore          *time.Time // nil when no certificate was seen
	NotAfter           *time.Time
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

// ScanColumns are the columns of scan_results, in the order of ScanRow's
// fields.
const ScanColumns = "event_id, job_id, tenant_id, domain_id, host, port, region, agent, ip, outcome, detail, " +
	"certificate_found, subject, issuer, sans, serial, not_before, not_after, leaf_sha256, key_type, key_bits, " +
	"signature_algorithm, chain_length, tls_version, cipher_suite, chain_valid, hostname_valid, connect_ms, " +
	"handshake_ms, started_at, scanned_at, http_status, hsts_max_age, hsts_include_subdomains, legacy_tls_checked, legacy_tls"

// ScanRows returns the scan_results rows of a scan.completed event: one per
// IPResult, including the IP-less entry of a failed resolution.
func ScanRows(e events.Envelope) ([]ScanRow, error) {
	var p events.ScanCompletedV1
	if err := e.Decode(&p); err != nil {
		return nil, err
	}
	out := make([]ScanRow, 0, len(p.Results))
	for _, r := range p.Results {
		out = append(out, ScanRow{
			EventID:               e.EventID,
			JobID:                 p.JobID,
			TenantID:              e.TenantID,
			DomainID:              p.DomainID,
			Host:                  p.Host,
			Port:                  uint16(p.Port),
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
			KeyBits:               clampU16(r.KeyBits),
			SignatureAlgorithm:    r.SignatureAlgorithm,
			ChainLength:           uint8(min(max(r.ChainLength, 0), 255)),
			TLSVersion:            r.TLSVersion,
			CipherSuite:           r.CipherSuite,
			ChainValid:            r.ChainValid,
			HostnameValid:         r.HostnameValid,
			ConnectMS:             clampU32(r.ConnectMS),
			HandshakeMS:           clampU32(r.HandshakeMS),
			StartedAt:             clampDateTime(p.StartedAt),
			ScannedAt:             clampDateTime(p.FinishedAt),
			HTTPStatus:            clampU16(r.HTTPStatus),
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
		ORDER BY scanned_at DESC, region, ip, event_id
		LIMIT ?`, tenantID, domainID, limit)
	if err != nil {
		return nil, fmt.Errorf("query scan history of %s: %w", domainID, err)
	}
	defer rows.Close()
	var out []ScanRow
	for rows.Next() {
		var (
			r                                ScanRow
			found, chainValid, hostnameValid uint8
			hstsSub, legacyChecked           uint8
			notBefore, notAfter              *time.Time
		)
		if err := rows.Scan(&r.EventID, &r.JobID, &r.TenantID, &r.DomainID, &r.Host, &r.Port, &r.Region, &r.Agent,
			&r.IP, &r.Outcome, &r.Detail, &found, &r.Subject, &r.Issuer, &r.SANs, &r.Serial, &notBefore, &notAfter,
			&r.LeafSHA256, &r.KeyType, &r.KeyBits, &r.SignatureAlgorithm, &r.ChainLength, &r.TLSVersion,
			&r.CipherSuite, &chainValid, &hostnameValid, &r.ConnectMS, &r.HandshakeMS, &r.StartedAt,
			&r.ScannedAt, &r.HTTPStatus, &r.HSTSMaxAge, &hstsSub, &legacyChecked, &r.LegacyTLS); err != nil {
			return nil, fmt.Errorf("read scan history of %s: %w", domainID, err)
		}
		r.CertificateFound, r.ChainValid, r.HostnameValid = found == 1, chainValid == 1, hostnameValid == 1
		r.HSTSIncludeSubdomains, r.LegacyTLSChecked = hstsSub == 1, legacyChecked == 1
		r.NotBefore, r.NotAfter = utcPtr(notBefore), utcPtr(notAfter)
		r.StartedAt, r.ScannedAt = r.StartedAt.UTC(), r.ScannedAt.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read scan history of %s: %w", domainID, err)
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

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := clampDateTime(t)
	return &u
}

// DateTime holds whole seconds from 1970 to 2106; a certificate may carry
// dates outside (not_after 9999-12-31 is common on self-signed ones), and
// an out-of-range value would make the insert fail for the whole batch, so
// such dates are stored at the nearest end of the range.
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

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func clampU16(v int) uint16 { return uint16(min(max(v, 0), 1<<16-1)) }

func clampU32(v int64) uint32 { return uint32(min(max(v, 0), 1<<32-1)) }
