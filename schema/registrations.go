package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// registrationsTable holds one row per registration lookup
// (registration.looked_up.v1), for the history of a registrable domain:
// when its expiry moved (renewed) or its registrar changed.
//
//   - ORDER BY (domain, looked_up_at): a domain's history is one range of
//     the index, in time order. A redelivered event has the same key (the
//     lookup's own time, not when it was stored), so ReplacingMergeTree
//     collapses it and reads with FINAL see it once.
//   - PARTITION BY month of looked_up_at: a row and its copies share a
//     partition.
//   - The registration's dates are Unix seconds (Int64), NULL when the
//     registry gives none: exact for every date a registry may publish,
//     where DateTime ends in 2106.
const registrationsTable = `CREATE TABLE IF NOT EXISTS registrations (
	event_id UUID,
	domain String,
	status String,
	detail String,
	source String,
	server String,
	registrar String,
	created_unix Nullable(Int64),
	expires_unix Nullable(Int64),
	updated_unix Nullable(Int64),
	statuses Array(String),
	name_servers Array(String),
	looked_up_at DateTime,
	retry_after Nullable(DateTime),
	inserted_at DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(looked_up_at)
ORDER BY (domain, looked_up_at)`

// RegistrationColumns are the columns of registrations, in the order of
// RegistrationRow's fields.
const RegistrationColumns = "event_id, domain, status, detail, source, server, registrar, created_unix, expires_unix, updated_unix, " +
	"statuses, name_servers, looked_up_at, retry_after, inserted_at"

// RegistrationRow is one row of registrations: one lookup of a
// registrable domain.
type RegistrationRow struct {
	EventID     uuid.UUID
	Domain      string
	Status      string
	Detail      string
	Source      string
	Server      string
	Registrar   string
	CreatedAt   *time.Time // nil when the registry gave none; whole seconds
	ExpiresAt   *time.Time
	UpdatedAt   *time.Time
	Statuses    []string
	NameServers []string
	LookedUpAt  time.Time
	RetryAfter  *time.Time
	InsertedAt  time.Time
}

// RegistrationRowOf returns the registrations row of a
// registration.looked_up.v1 event, or the reason it is refused
// (events.DecodeRegistrationLookedUp).
func RegistrationRowOf(e events.Envelope, insertedAt time.Time) (RegistrationRow, error) {
	r, err := events.DecodeRegistrationLookedUp(e)
	if err != nil {
		return RegistrationRow{}, err
	}
	return RegistrationRow{
		EventID:     e.EventID,
		Domain:      r.Domain,
		Status:      r.Status,
		Detail:      r.Detail,
		Source:      r.Source,
		Server:      r.Server,
		Registrar:   r.Registrar,
		CreatedAt:   wholeSeconds(r.CreatedAt),
		ExpiresAt:   wholeSeconds(r.ExpiresAt),
		UpdatedAt:   wholeSeconds(r.UpdatedAt),
		Statuses:    nonNil(r.Statuses),
		NameServers: nonNil(r.NameServers),
		LookedUpAt:  clampDateTime(r.LookedUpAt),
		RetryAfter:  wholeSeconds(r.RetryAfter), // in DateTime's range: checked by the decoder
		InsertedAt:  clampDateTime(insertedAt),
	}, nil
}

func wholeSeconds(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

// InsertRegistrations stores the rows in one insert. Inserting a row
// again is harmless: reads with FINAL see it once.
func InsertRegistrations(ctx context.Context, conn driver.Conn, rows []RegistrationRow) error {
	n := len(rows)
	var (
		ids                                                 = make([]uuid.UUID, n)
		domains, statuses, details, sources, servers, regrs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		created, expires, updated                           = make([]*int64, n), make([]*int64, n), make([]*int64, n)
		epp, ns                                             = make([][]string, n), make([][]string, n)
		looked, inserted                                    = make([]time.Time, n), make([]time.Time, n)
		retry                                               = make([]*time.Time, n)
	)
	for i, r := range rows {
		ids[i], domains[i], statuses[i], details[i], sources[i], servers[i], regrs[i] = r.EventID, r.Domain, r.Status, r.Detail, r.Source, r.Server, r.Registrar
		created[i], expires[i], updated[i] = unixPtr(r.CreatedAt), unixPtr(r.ExpiresAt), unixPtr(r.UpdatedAt)
		epp[i], ns[i] = nonNil(r.Statuses), nonNil(r.NameServers)
		looked[i], inserted[i], retry[i] = r.LookedUpAt, r.InsertedAt, r.RetryAfter
	}
	return insertColumns(ctx, conn, "registrations", RegistrationColumns,
		ids, domains, statuses, details, sources, servers, regrs, created, expires, updated, epp, ns, looked, retry, inserted)
}

// RegistrationHistory returns up to limit lookups of the registrable
// domain, latest first, each once however often its event was delivered.
func RegistrationHistory(ctx context.Context, conn driver.Conn, domain string, limit int) ([]RegistrationRow, error) {
	return queryRegistrations(ctx, conn, domain, "domain = ?", []any{domain}, 0, limit)
}

// RegistrationHistoryPage is one page of RegistrationHistory: limit
// lookups after the newest offset, and how many lookups there are in all.
func RegistrationHistoryPage(ctx context.Context, conn driver.Conn, domain string, offset, limit int) ([]RegistrationRow, uint64, error) {
	var total uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM registrations FINAL WHERE domain = ?", domain).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count registration history of %s: %w", domain, err)
	}
	rows, err := queryRegistrations(ctx, conn, domain, "domain = ?", []any{domain}, offset, limit)
	return rows, total, err
}

// RegistrationAnswerBefore returns the newest lookup of the registrable
// domain before t that the registry answered (status in answered), or nil:
// what a page's oldest lookup is compared with to tell a renewal.
func RegistrationAnswerBefore(ctx context.Context, conn driver.Conn, domain string, t time.Time, answered []string) (*RegistrationRow, error) {
	rows, err := queryRegistrations(ctx, conn, domain, "domain = ? AND looked_up_at < ? AND has(?, status)",
		[]any{domain, t, answered}, 0, 1)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return &rows[0], nil
}

// queryRegistrations reads the registrations rows matching where (with
// args), latest first, limit of them after offset.
func queryRegistrations(ctx context.Context, conn driver.Conn, domain, where string, args []any, offset, limit int) ([]RegistrationRow, error) {
	rows, err := conn.Query(ctx, "SELECT "+RegistrationColumns+" FROM registrations FINAL WHERE "+where+`
		ORDER BY looked_up_at DESC
		LIMIT ?, ?`, append(args, offset, limit)...)
	if err != nil {
		return nil, fmt.Errorf("query registration history of %s: %w", domain, err)
	}
	defer rows.Close()
	var out []RegistrationRow
	for rows.Next() {
		var (
			r                         RegistrationRow
			created, expires, updated *int64
		)
		if err := rows.Scan(&r.EventID, &r.Domain, &r.Status, &r.Detail, &r.Source, &r.Server, &r.Registrar,
			&created, &expires, &updated, &r.Statuses, &r.NameServers, &r.LookedUpAt, &r.RetryAfter, &r.InsertedAt); err != nil {
			return nil, fmt.Errorf("read registration history of %s: %w", domain, err)
		}
		r.CreatedAt, r.ExpiresAt, r.UpdatedAt = fromUnix(created), fromUnix(expires), fromUnix(updated)
		r.LookedUpAt, r.InsertedAt = r.LookedUpAt.UTC(), r.InsertedAt.UTC()
		if r.RetryAfter != nil {
			u := r.RetryAfter.UTC()
			r.RetryAfter = &u
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read registration history of %s: %w", domain, err)
	}
	return out, nil
}
