package schema

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
)

// A ClickHouse cluster (--clickhouse-cluster NAME) keeps every table twice
// on each server: the rows in <table>_local, a Replicated*MergeTree whose
// replicas (one a server) ZooKeeper keeps in step, and a Distributed table
// under the table's own name in front of it. Every query of certfleet
// names the Distributed table, so it reads and writes through the cluster
// without knowing it; a write lands on the server's own replica (it is in
// the shard, and internal_replication leaves the copying to
// ReplicatedMergeTree), a read asks one live replica.
//
// clusterConn is where that is decided, once: its Exec turns each
// `CREATE TABLE IF NOT EXISTS t (...) ENGINE = *MergeTree(...)` a
// migration runs into the replicated local table and the Distributed one,
// and each `ALTER TABLE t` into one of the local table (ADD COLUMN: of
// both). Migrations are written for one server and need not know.
type clusterConn struct {
	driver.Conn
	// cluster is the name in the servers' remote_servers.
	cluster string
	// db is the database, the same on every server.
	db string
	// opts open a connection to one server: migrations run on each.
	opts clickhouse.Options
}

// LocalSuffix ends the name of a table's replicated local table on a
// cluster (events_local behind events).
const LocalSuffix = "_local"

// createMergeTree matches a migration's CREATE TABLE of a MergeTree table:
// name, columns, engine prefix (Replacing, Summing, ...), engine
// arguments and what follows them (PARTITION BY, ORDER BY, ...).
var createMergeTree = regexp.MustCompile(`(?s)^\s*CREATE TABLE IF NOT EXISTS\s+(\w+)\s*(\(.*\))\s*ENGINE\s*=\s*(\w*)MergeTree\(([^)]*)\)(.*)$`)

// alterTable matches an ALTER TABLE and whether it adds a column.
var alterTable = regexp.MustCompile(`(?s)^\s*ALTER TABLE\s+(\w+)\s+(ADD COLUMN\s+(\w+))?`)

// tableOf names the table a statement creates or alters, if it does.
func tableOf(stmt string) string {
	if m := createMergeTree.FindStringSubmatch(stmt); m != nil {
		return m[1]
	}
	if m := alterTable.FindStringSubmatch(stmt); m != nil {
		return m[1]
	}
	return ""
}

// Exec runs query on the cluster's shape of the schema (see clusterConn).
func (c *clusterConn) Exec(ctx context.Context, query string, args ...any) error {
	if m := createMergeTree.FindStringSubmatch(query); m != nil && !strings.HasPrefix(m[3], "Replicated") {
		name, local := m[1], m[1]+LocalSuffix
		zkPath := "/clickhouse/tables/{shard}/" + c.db + "/" + name
		engineArgs := "'" + zkPath + "', '{replica}'"
		if strings.TrimSpace(m[4]) != "" {
			engineArgs += ", " + m[4]
		}
		columns := m[2]
		if zk := c.replicaColumns(ctx, zkPath); zk != "" {
			columns = zk
		}
		for _, q := range []string{
			"CREATE TABLE IF NOT EXISTS " + local + " " + columns + " ENGINE = Replicated" + m[3] + "MergeTree(" + engineArgs + ")" + m[5],
			"CREATE TABLE IF NOT EXISTS " + name + " AS " + local + " ENGINE = Distributed(" + c.cluster + ", " + c.db + ", " + local + ")",
		} {
			if err := c.Conn.Exec(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	}
	if m := alterTable.FindStringSubmatch(query); m != nil && !strings.HasSuffix(m[1], LocalSuffix) {
		name, local := m[1], m[1]+LocalSuffix
		rest := query[strings.Index(query, name)+len(name):]
		if m[2] == "" {
			// DELETE, DROP PARTITION, ...: the rows are in the local
			// table; ReplicatedMergeTree repeats it on every replica.
			return c.Conn.Exec(ctx, "ALTER TABLE "+local+rest, args...)
		}
		// The Distributed table must list the column too, after its
		// local table has it (a read would miss it otherwise). Each is
		// altered only if it lacks the column: a retry after a failure
		// between the two, or a replica the column reached through
		// ZooKeeper already, finds it there.
		for _, t := range []string{local, name} {
			ok, err := hasColumn(ctx, c.Conn, Column{Table: t, Name: m[3]})
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			if err := c.Conn.Exec(ctx, "ALTER TABLE "+t+rest, args...); err != nil {
				if ok, cerr := hasColumn(ctx, c.Conn, Column{Table: t, Name: m[3]}); cerr == nil && ok {
					continue
				}
				return err
			}
		}
		return nil
	}
	return c.Conn.Exec(ctx, query, args...)
}

// replicaColumns returns the columns, as a CREATE TABLE lists them, that
// ZooKeeper keeps at zkPath for the replicas of a table, or "" when it has
// none: a server migrated after the others (it was down) joins a table
// that later migrations may have altered since its CREATE, and ClickHouse
// refuses a replica whose columns differ. Its own ALTERs then find the
// columns there.
func (c *clusterConn) replicaColumns(ctx context.Context, zkPath string) string {
	var shard string
	if err := c.Conn.QueryRow(ctx, "SELECT substitution FROM system.macros WHERE macro = 'shard'").Scan(&shard); err != nil {
		return ""
	}
	var v string
	// No node (no replica yet) is an error: the migration's columns then.
	if err := c.Conn.QueryRow(ctx, "SELECT value FROM system.zookeeper WHERE path = ? AND name = 'columns'",
		strings.Replace(zkPath, "{shard}", shard, 1)).Scan(&v); err != nil {
		return ""
	}
	return columnsOf(v)
}

// columnsOf turns ZooKeeper's columns node ("columns format version: 1",
// "N columns:", then "`name` Type" a line) into "(`name` Type, ...)".
func columnsOf(node string) string {
	lines := strings.Split(strings.TrimSpace(node), "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, " columns:") {
			cols := lines[i+1:]
			if len(cols) == 0 {
				return ""
			}
			return "(" + strings.Join(cols, ", ") + ")"
		}
	}
	return ""
}

// localTable names the table that holds table's rows on the server conn
// is connected to: table itself, or its local table on a cluster. Queries
// of system tables (parts, mutations) need it.
func localTable(conn driver.Conn, table string) string {
	if _, ok := unwrap(conn).(*clusterConn); ok {
		return table + LocalSuffix
	}
	return table
}

// OpenCluster is Open for a ClickHouse cluster: dsn names one or more of
// its servers (clickhouse://a:9000,b:9000/db), and the connection fails
// over from one to the next. cluster names the cluster as the servers'
// remote_servers do; it must have one shard. Migrate then migrates every
// server of the cluster, and every write and read goes through the
// Distributed tables (see clusterConn).
func OpenCluster(ctx context.Context, dsn, cluster string, logger *zap.Logger) (driver.Conn, error) {
	if !validIdentifier.MatchString(cluster) {
		return nil, fmt.Errorf("clickhouse cluster %q: want letters, digits and _", cluster)
	}
	conn, err := Open(ctx, dsn, logger)
	if err != nil {
		return nil, err
	}
	opts, _ := clickhouse.ParseDSN(dsn) // Open parsed it
	var db string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&db); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("read database: %w", err)
	}
	c := &clusterConn{Conn: conn, cluster: cluster, db: db, opts: *opts}
	servers, err := c.servers(ctx)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	logger.Named("schema").Debug("clickhouse cluster", zap.String("cluster", cluster), zap.Strings("servers", servers))
	return c, nil
}

// servers lists host:port of every server of the cluster, from
// system.clusters of the server the connection reached; it refuses a
// cluster it does not know or of more than one shard.
func (c *clusterConn) servers(ctx context.Context) ([]string, error) {
	rows, err := c.Conn.Query(ctx, "SELECT shard_num, host_name, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", c.cluster)
	if err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			shard uint32
			host  string
			port  uint16
		)
		if err := rows.Scan(&shard, &host, &port); err != nil {
			return nil, fmt.Errorf("read system.clusters: %w", err)
		}
		if shard != 1 {
			return nil, fmt.Errorf("clickhouse cluster %s has more than one shard: certfleet supports one shard of replicas", c.cluster)
		}
		out = append(out, fmt.Sprintf("%s:%d", host, port))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("clickhouse cluster %s: not in system.clusters of the server (remote_servers in its configuration)", c.cluster)
	}
	return out, nil
}

// migrateServers migrates each server of the cluster in turn, over a
// connection of its own: tables are created and altered on every replica,
// and each server records the migrations it applied in its own
// schema_migrations (a plain table, not replicated). A server that cannot
// be reached is left out with a warning, so that a role starts while one
// replica is down; the next start of any role, or `certfleet migrate`,
// migrates it once it is back. No server reached is an error.
func (c *clusterConn) migrateServers(ctx context.Context, migrations []Migration, logger *zap.Logger) error {
	servers, err := c.servers(ctx)
	if err != nil {
		return err
	}
	migrated := 0
	for _, addr := range servers {
		opts := c.opts
		opts.Addr = []string{addr}
		one, err := openDatabase(ctx, opts, c.db)
		if err != nil {
			logger.Warn("clickhouse server of the cluster unreachable: not migrated", zap.String("server", addr), zap.Error(err))
			continue
		}
		err = migrate(ctx, one, &clusterConn{Conn: one, cluster: c.cluster, db: c.db, opts: opts}, migrations, logger.With(zap.String("server", addr)))
		_ = one.Close()
		if err != nil {
			return fmt.Errorf("clickhouse server %s: %w", addr, err)
		}
		migrated++
	}
	if migrated == 0 {
		return fmt.Errorf("clickhouse cluster %s: no server reachable of %v", c.cluster, servers)
	}
	return nil
}

// superseded maps each table a reshape migration creates to that
// migration's version, the last one's. On a cluster, what migrations
// before it did to the table is skipped: the reshape creates its final
// shape directly, and reshaping replicated tables is not supported (see
// reshape.runCluster).
func superseded(migrations []Migration) map[string]int {
	out := map[string]int{}
	for _, m := range migrations {
		if m.reshape != nil {
			out[m.reshape.table] = m.Version
		}
	}
	return out
}
