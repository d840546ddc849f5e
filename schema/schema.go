// Package schema owns certfleet's ClickHouse database: it opens connections
// from a --clickhouse-dsn, creates the database and applies the versioned
// migrations, and offers the reads other components need from the history
// (replaying the event store, a domain's scan history, a registrable
// domain's registration history).
//
// Every statement must run on ClickHouse 18.16 (the tests' server) and on
// current releases: columns are named in every INSERT, and only String,
// (U)Int*, DateTime, Array, Nullable, UUID and the MergeTree family are used.
package schema

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
)

// validDatabase keeps the database name safe to splice into DDL, which
// cannot take it as a query parameter.
var validDatabase = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// validIdentifier does the same for the table and column names of
// migrations.
var validIdentifier = validDatabase

// Open connects to the ClickHouse server named by dsn
// (clickhouse://host:port/db?...), creates the database if it is missing,
// and returns a connection whose default database is it.
func Open(ctx context.Context, dsn string, logger *zap.Logger) (driver.Conn, error) {
	logger = logger.Named("schema")
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn: %w", err)
	}
	db := opts.Auth.Database
	if db == "" {
		db = "default"
	}
	if !validDatabase.MatchString(db) {
		return nil, fmt.Errorf("clickhouse database %q: want letters, digits and _", db)
	}
	conn, err := openDatabase(ctx, *opts, db)
	if err != nil {
		return nil, err
	}
	logger.Debug("connected", zap.Strings("addr", opts.Addr), zap.String("database", db))
	return conn, nil
}

// DialTimeout bounds a new connection's dial and handshake, and the wait
// for a free one in the pool, unless the DSN sets `dial_timeout`. The
// driver applies it whatever the caller's context says (30 s by default),
// so a ClickHouse that accepts connections but answers nothing (a hung
// server, a frozen host) held every read that needed a new connection for
// 30 s, past the API's 10 s history deadline. A healthy server answers
// the handshake in milliseconds.
const DialTimeout = 5 * time.Second

// openDatabase connects to the servers opts names, creating the database
// db if it is missing, and returns a connection whose default database is
// it, once it answered a ping.
func openDatabase(ctx context.Context, opts clickhouse.Options, db string) (driver.Conn, error) {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = DialTimeout
	}
	// The database may not exist yet, and a connection naming it would be
	// refused: bootstrap through the server's default database.
	boot := opts
	boot.Auth.Database = ""
	bootConn, err := clickhouse.Open(&boot)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %v: %w", opts.Addr, err)
	}
	defer bootConn.Close()
	if err := bootConn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+db+"`"); err != nil {
		return nil, fmt.Errorf("create database %s on %v: %w", db, opts.Addr, err)
	}
	opts.Auth.Database = db
	conn, err := clickhouse.Open(&opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %v: %w", opts.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping clickhouse %v: %w", opts.Addr, err)
	}
	return conn, nil
}
