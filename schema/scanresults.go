package schema

import (
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/events"
)

// scanResultsTable is the final shape of scan_results (migration 4), the
// one the history API and a ClickHouse cluster build on; see "scan_results"
// in docs/architecture.md.
//
//   - One row per scan of a job from one region and IP, whatever the
//     redeliveries: the sorting key holds only what every delivery of the
//     job shares (tenant, domain, the job's scheduled time, region, IP, job
//     id), never when the scan ran. job_id last keeps two jobs scheduled in
//     the same second (a manual check beside the schedule) apart.
//   - ReplacingMergeTree(scanned_at): of the copies of a row, merges and
//     FINAL keep the latest scan: a job rescanned after a redelivery is
//     shown as last seen, and the choice does not depend on which copy was
//     inserted last (replicas merge alike).
//   - PARTITION BY month of scheduled_at: a row and its copies always share
//     a partition (so they can merge), and history reads of a time range
//     touch only its months. The key starts with tenant and domain, so a
//     domain's history is one range of the index.
//   - not_before_unix / not_after_unix are Unix seconds (Int64), exact for
//     every date a certificate can carry: DateTime ends in 2106, and
//     notAfter 99991231235959Z (RFC 5280: no well-defined expiration,
//     events.NoExpiry) is 253402300799. NULL when no certificate was seen.
//   - chain_length stays UInt8: a longer chain is refused where the event
//     is decoded (events.MaxChainLength).
const scanResultsTable = `CREATE TABLE IF NOT EXISTS %s (
	event_id UUID,
	job_id UUID,
	scheduled_at DateTime,
	tenant_id String,
	domain_id String,
	host String,
	port UInt16,
	region String,
	agent String,
	ip String,
	outcome String,
	detail String,
	certificate_found UInt8,
	subject String,
	issuer String,
	sans Array(String),
	serial String,
	not_before_unix Nullable(Int64),
	not_after_unix Nullable(Int64),
	leaf_sha256 String,
	key_type String,
	key_bits UInt16,
	signature_algorithm String,
	chain_length UInt8,
	tls_version String,
	cipher_suite String,
	chain_valid UInt8,
	hostname_valid UInt8,
	connect_ms UInt32,
	handshake_ms UInt32,
	started_at DateTime,
	scanned_at DateTime,
	http_status UInt16,
	hsts_max_age Int64,
	hsts_include_subdomains UInt8,
	legacy_tls_checked UInt8,
	legacy_tls Array(String)
) ENGINE = ReplacingMergeTree(scanned_at)
PARTITION BY toYYYYMM(scheduled_at)
ORDER BY (` + scanResultsKey + `)`

const scanResultsKey = "tenant_id, domain_id, scheduled_at, region, ip, job_id"

// scanResultsReshape is migration 4: scan_results to scanResultsTable's
// shape. The parked old tables are scan_results_v3_<ns>.
var scanResultsReshape = reshape{
	table:      "scan_results",
	create:     scanResultsTable,
	sortingKey: scanResultsKey,
	next:       "scan_results_v4",
	parked:     "scan_results_v3_",
	columns:    ScanColumns,
	oldSelect:  oldScanSelect,
}

// oldScanSelect reads a table of the shape of migrations 1 and 2 as rows
// of the new one. An old row has no scheduled time: its started_at stands
// in. Its dates were clamped into DateTime: a not_after at the top of the
// range (2106-02-07 06:28:15) was a later date, by far most often RFC
// 5280's 99991231235959Z, and becomes that.
var oldScanSelect = strings.NewReplacer(
	"scheduled_at", "started_at",
	"not_before_unix", "toInt64(not_before)",
	"not_after_unix", "if(toInt64(not_after) = 4294967295, toInt64("+strconv.FormatInt(events.NoExpiry.Unix(), 10)+"), toInt64(not_after))",
).Replace(ScanColumns)
