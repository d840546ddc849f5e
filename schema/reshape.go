package schema

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// reshape moves a table to a new sorting key. ClickHouse 18.16 cannot
// change a sorting key, so the new table is created beside the old one, the
// two swap names in one RENAME, and the old rows are copied over with
// INSERT ... SELECT.
//
// run follows the Migration contract by working from the state it finds,
// as often as needed:
//   - table old-shaped: create next, then one RENAME parks the old table as
//     parked<ns> and gives the new one its name. If the RENAME fails,
//     another process swapped first (or the names changed under it): look
//     again.
//   - table new-shaped: copy every parked table (and a stray next that a
//     concurrent process created too late) into it. A copy that runs twice
//     (a process died in it, two processes at once) inserts rows with the
//     same keys, which collapse: reads use FINAL.
//
// Parked tables are never dropped here: an INSERT that a sink of the old
// version had in flight when the names swapped may still land in one, and
// only the operator knows when no such sink is left. docs/architecture.md
// says how to check, copy and drop them.
type reshape struct {
	// table is the table's name.
	table string
	// create is its CREATE TABLE IF NOT EXISTS statement in the new shape,
	// with %s for the name.
	create string
	// sortingKey is the new shape's, as system.tables spells it.
	sortingKey string
	// next is the name the new table is created under before it takes
	// table's.
	next string
	// parked prefixes the names old-shaped tables are renamed to.
	parked string
	// columns are the new shape's columns, in table order.
	columns string
	// oldSelect reads an old-shaped table as rows of the new shape.
	oldSelect string
}

func (r reshape) run(ctx context.Context, conn driver.Conn) error {
	if _, ok := conn.(*clusterConn); ok {
		return r.runCluster(ctx, conn)
	}
	const attempts = 10
	var renameErr error
	for attempt := range attempts {
		if attempt > 0 {
			// Give a concurrent migration the moment it needs to finish
			// its swap.
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
		}
		shape, err := r.shape(ctx, conn, r.table)
		if unknownTable(err) {
			// 18.16 reads every table's metadata to answer sorting_key:
			// one another process renames at that moment is missing.
			renameErr = err
			continue
		}
		if err != nil {
			return err
		}
		switch shape {
		case shapeNew:
			// Another process that read the old shape before this one's
			// swap may park the new table in turn, between its two
			// renames: the table is missing for that moment. Look again;
			// what it parked is copied then.
			err := r.copyParked(ctx, conn)
			if !unknownTable(err) {
				return err
			}
			renameErr = err
		case shapeOld:
			if err := conn.Exec(ctx, fmt.Sprintf(r.create, r.next)); err != nil {
				return fmt.Errorf("create %s: %w", r.next, err)
			}
			parked := r.parked + strconv.FormatInt(time.Now().UnixNano(), 10)
			renameErr = conn.Exec(ctx, "RENAME TABLE "+r.table+" TO "+parked+", "+r.next+" TO "+r.table)
		case shapeMissing:
			if err := conn.Exec(ctx, fmt.Sprintf(r.create, r.table)); err != nil {
				return fmt.Errorf("create %s: %w", r.table, err)
			}
		}
	}
	return fmt.Errorf("%s did not take its new shape after %d attempts: %w", r.table, attempts, renameErr)
}

// runCluster gives the table its final shape on a cluster, where only the
// last reshape of a table runs (superseded): missing, it is created in that
// shape directly (replicated, behind a Distributed table, as clusterConn
// creates every table); there already, it is left alone if it has it. An
// old shape would take moving rows between replicated tables, which is not
// supported: the migration fails and says so rather than leave a
// half-moved table (docs/scaling.md: a later reshape must add it).
func (r reshape) runCluster(ctx context.Context, conn driver.Conn) error {
	shape, err := r.shape(ctx, conn, localTable(conn, r.table))
	if err != nil {
		return err
	}
	if shape == shapeOld {
		return fmt.Errorf("%s has an older sorting key on this cluster: reshaping replicated tables is not supported", localTable(conn, r.table))
	}
	// The local table and the Distributed one, each if missing: a
	// process that died between the two created only the first.
	if err := conn.Exec(ctx, fmt.Sprintf(r.create, r.table)); err != nil {
		return fmt.Errorf("create %s: %w", r.table, err)
	}
	return nil
}

// copyParked copies every parked table, and a stray next, into the table.
func (r reshape) copyParked(ctx context.Context, conn driver.Conn) error {
	rows, err := conn.Query(ctx, `SELECT name FROM system.tables WHERE database = currentDatabase()
		AND (startsWith(name, ?) OR name = ?) ORDER BY name`, r.parked, r.next)
	if err != nil {
		return fmt.Errorf("list parked %s tables: %w", r.table, err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("list parked %s tables: %w", r.table, err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list parked %s tables: %w", r.table, err)
	}
	for _, n := range names {
		if !validIdentifier.MatchString(n) {
			continue
		}
		shape, err := r.shape(ctx, conn, n)
		if err != nil {
			return err
		}
		sel := r.columns
		switch shape {
		case shapeMissing:
			continue // gone since it was listed
		case shapeOld:
			sel = r.oldSelect
		}
		if err := conn.Exec(ctx, "INSERT INTO "+r.table+" ("+r.columns+") SELECT "+sel+" FROM "+n); err != nil {
			return fmt.Errorf("copy %s into %s: %w", n, r.table, err)
		}
	}
	return nil
}

// unknownTable tells whether err is ClickHouse's UNKNOWN_TABLE (60).
func unknownTable(err error) bool {
	var ex *proto.Exception
	return errors.As(err, &ex) && ex.Code == 60
}

type shape int

const (
	shapeMissing shape = iota
	shapeOld
	shapeNew
)

// shape tells whether table exists and, if so, whether it has the new
// sorting key.
func (r reshape) shape(ctx context.Context, conn driver.Conn, table string) (shape, error) {
	rows, err := conn.Query(ctx, `SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = ?`, table)
	if err != nil {
		return 0, fmt.Errorf("look up table %s: %w", table, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("look up table %s: %w", table, err)
		}
		return shapeMissing, nil
	}
	var key string
	if err := rows.Scan(&key); err != nil {
		return 0, fmt.Errorf("look up table %s: %w", table, err)
	}
	if sameKey(key, r.sortingKey) {
		return shapeNew, nil
	}
	return shapeOld, nil
}

// sameKey compares sorting keys as system.tables spells them, whatever the
// spaces.
func sameKey(a, b string) bool {
	return strings.ReplaceAll(a, " ", "") == strings.ReplaceAll(b, " ", "")
}
