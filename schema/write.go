package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// EventColumns are the columns of the events table, in table order.
const EventColumns = "event_id, name, occurred_at, occurred_at_unix_ms, tenant_id, aggregate_id, payload, stream, inserted_at"

// StoredEvent is one row of the events table.
type StoredEvent struct {
	// Event is the envelope as published.
	Event events.Envelope
	// Stream is the Redis stream the event was read from.
	Stream string
	// InsertedAt is when the sink stored it.
	InsertedAt time.Time
}

// InsertEvents stores the events in one insert. Inserting an event again
// is harmless: reads with FINAL see it once.
func InsertEvents(ctx context.Context, conn driver.Conn, rows []StoredEvent) error {
	n := len(rows)
	var (
		ids                                     = make([]uuid.UUID, n)
		names, tenants, aggs, payloads, streams = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		occurred, inserted                      = make([]time.Time, n), make([]time.Time, n)
		ms                                      = make([]uint64, n)
	)
	for i, r := range rows {
		e := r.Event
		ids[i], names[i], tenants[i], aggs[i] = e.EventID, e.Name, e.TenantID, e.AggregateID
		occurred[i], ms[i] = clampDateTime(e.OccurredAt), uint64(max(e.OccurredAt.UnixMilli(), 0))
		payloads[i], streams[i], inserted[i] = string(e.Payload), r.Stream, clampDateTime(r.InsertedAt)
	}
	return insertColumns(ctx, conn, "events", EventColumns, ids, names, occurred, ms, tenants, aggs, payloads, streams, inserted)
}

// InsertScanRows stores the rows in one insert. Inserting a row again is
// harmless: reads with FINAL see it once.
func InsertScanRows(ctx context.Context, conn driver.Conn, rows []ScanRow) error {
	n := len(rows)
	var (
		eventIDs, jobIDs                               = make([]uuid.UUID, n), make([]uuid.UUID, n)
		scheduledAt                                    = make([]time.Time, n)
		tenants, domains, hosts, regions, agents, ips  = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		outcomes, details, subjects, issuers, serials  = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		leafs, keyTypes, sigAlgs, tlsVersions, ciphers = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		ports, keyBits                                 = make([]uint16, n), make([]uint16, n)
		found, chainLen, chainValid, hostnameValid     = make([]uint8, n), make([]uint8, n), make([]uint8, n), make([]uint8, n)
		sans                                           = make([][]string, n)
		notBefore, notAfter                            = make([]*int64, n), make([]*int64, n)
		connectMS, handshakeMS                         = make([]uint32, n), make([]uint32, n)
		startedAt, scannedAt                           = make([]time.Time, n), make([]time.Time, n)
		httpStatus                                     = make([]uint16, n)
		hstsMaxAge                                     = make([]int64, n)
		hstsSub, legacyChecked                         = make([]uint8, n), make([]uint8, n)
		legacy                                         = make([][]string, n)
	)
	for i := range rows {
		r := &rows[i]
		eventIDs[i], jobIDs[i], scheduledAt[i] = r.EventID, r.JobID, clampDateTime(r.ScheduledAt)
		tenants[i], domains[i], hosts[i], regions[i], agents[i], ips[i] = r.TenantID, r.DomainID, r.Host, r.Region, r.Agent, r.IP
		outcomes[i], details[i], subjects[i], issuers[i], serials[i] = r.Outcome, r.Detail, r.Subject, r.Issuer, r.Serial
		leafs[i], keyTypes[i], sigAlgs[i], tlsVersions[i], ciphers[i] = r.LeafSHA256, r.KeyType, r.SignatureAlgorithm, r.TLSVersion, r.CipherSuite
		ports[i], keyBits[i] = r.Port, r.KeyBits
		found[i], chainLen[i], chainValid[i], hostnameValid[i] = boolU8(r.CertificateFound), r.ChainLength, boolU8(r.ChainValid), boolU8(r.HostnameValid)
		sans[i] = nonNil(r.SANs)
		notBefore[i], notAfter[i] = unixPtr(r.NotBefore), unixPtr(r.NotAfter)
		connectMS[i], handshakeMS[i] = r.ConnectMS, r.HandshakeMS
		startedAt[i], scannedAt[i] = clampDateTime(r.StartedAt), clampDateTime(r.ScannedAt)
		httpStatus[i], hstsMaxAge[i] = r.HTTPStatus, r.HSTSMaxAge
		hstsSub[i], legacyChecked[i], legacy[i] = boolU8(r.HSTSIncludeSubdomains), boolU8(r.LegacyTLSChecked), nonNil(r.LegacyTLS)
	}
	return insertColumns(ctx, conn, "scan_results", ScanColumns,
		eventIDs, jobIDs, scheduledAt, tenants, domains, hosts, ports, regions, agents, ips, outcomes, details,
		found, subjects, issuers, sans, serials, notBefore, notAfter, leafs, keyTypes, keyBits,
		sigAlgs, chainLen, tlsVersions, ciphers, chainValid, hostnameValid, connectMS,
		handshakeMS, startedAt, scannedAt, httpStatus, hstsMaxAge, hstsSub, legacyChecked, legacy)
}

// insertColumns appends whole columns rather than rows: no value is boxed
// per row, which is most of the client's cost on large batches.
func insertColumns(ctx context.Context, conn driver.Conn, table, columns string, cols ...any) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append column %d of %s: %w", i, table, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}

// eventsTable is the final shape of the events table (migration 6).
//
//   - One row per event id: a publisher that crashed between publishing an
//     event and acknowledging its cause publishes it again with the same id
//     (events.ScanEventID, events.RegistrationEventID, ...) but a later
//     occurred_at. The sorting key is only what every copy shares, so
//     copies collapse on merge and read once with FINAL.
//   - ReplacingMergeTree(occurred_at_unix_ms): of the copies, merges and
//     FINAL keep the latest, as scan_results keeps the latest scan, and the
//     choice does not depend on which copy was inserted last.
//   - No partitions: copies must share one to merge, and nothing every copy
//     shares orders by time. The only reader (ReplayEvents) reads it all.
const eventsTable = `CREATE TABLE IF NOT EXISTS %s (
	event_id UUID,
	name String,
	occurred_at DateTime,
	occurred_at_unix_ms UInt64,
	tenant_id String,
	aggregate_id String,
	payload String,
	stream String,
	inserted_at DateTime
) ENGINE = ReplacingMergeTree(occurred_at_unix_ms)
PARTITION BY tuple()
ORDER BY (` + eventsKey + `)`

const eventsKey = "tenant_id, event_id"

// eventsReshape is migration 6: events to eventsTable's shape. The parked
// old tables are events_v1_<ns>; their columns are the same.
var eventsReshape = reshape{
	table:      "events",
	create:     eventsTable,
	sortingKey: eventsKey,
	next:       "events_v6",
	parked:     "events_v1_",
	columns:    EventColumns,
	oldSelect:  EventColumns,
}
