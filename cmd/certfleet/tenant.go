package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/apiserver/tenants"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/internal/channels"
)

const tenantUsage = "usage: certfleet tenant delete --email E [--yes] [--consumer-wait D]"

// stdinInteractive tells whether stdin is a terminal (a person can
// confirm). A variable so tests can pretend.
var stdinInteractive = func() bool {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	// /dev/null is a character device too, and no person.
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// runTenant is `certfleet tenant delete`: an account leaves (issue 16).
// Each package removes its own keys (apiserver/tenants runs them), the
// ClickHouse rows are deleted by mutations, and tenant.deleted.v1 records
// it; the report prints what was removed, by kind. Without --yes it asks
// for the email again on a terminal and refuses anywhere else.
func runTenant(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "delete" {
		return actionUsage(stderr, "tenant", tenantUsage, args)
	}
	fs := newFlagSet("tenant delete").redis().clickhouse()
	fs.StringVar(&fs.opts.Email, "email", "", "email address of the account to delete (required)")
	fs.BoolVar(&fs.opts.Yes, "yes", false, "delete without asking (required when stdin is not a terminal)")
	fs.DurationVar(&fs.opts.ConsumerWait, "consumer-wait", 30*time.Second, "how long to wait for the projector and the ClickHouse sink to read the deletion's events before views and ClickHouse rows are deleted")
	logger, err := fs.parse(args[1:], stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	o := fs.opts
	email, err := accountEmail(o)
	if err != nil {
		return err
	}
	if !o.Yes {
		if !stdinInteractive() {
			return usagef("refusing to delete %s without --yes: stdin is not a terminal", email)
		}
		fmt.Fprintf(stderr, "this deletes the account %s and all its data for good; type its email to confirm: ", email)
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != email {
			return errors.New("not confirmed: nothing deleted")
		}
	}
	rdb, err := openRedis(ctx, o, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	conn, err := openSchema(ctx, o, logger)
	if err != nil {
		return err
	}
	defer conn.Close()
	acc, err := accounts.New(accounts.Config{Wait: o.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	chs, err := channels.New(channels.Config{Wait: o.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	// Revoking needs no CA passphrase; the URL is not used.
	ca, err := clientca.New(clientca.Config{PublicURL: "http://unused", Wait: o.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	d := &tenants.Deleter{RDB: rdb, Accounts: acc, Channels: chs, CA: ca, CH: conn,
		Groups: []string{projector.Group, sink.Group}, Wait: o.ConsumerWait, Source: accounts.SourceCLI, Logger: logger}
	rep, err := d.Delete(ctx, email)
	if err != nil {
		return err
	}
	return printTenantReport(stdout, email, rep)
}

func printTenantReport(w io.Writer, email string, rep tenants.Report) error {
	if !rep.Existed && rep.Total() == 0 {
		fmt.Fprintf(w, "account %s (tenant %s) was deleted before: nothing left to remove\n", email, rep.TenantID)
	} else {
		fmt.Fprintf(w, "deleted account %s (tenant %s)\n", email, rep.TenantID)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tREMOVED")
	for _, k := range rep.Kinds() {
		fmt.Fprintf(tw, "%s\t%d\n", k, rep.Removed[k])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.ClickHouseTables) > 0 {
		fmt.Fprintf(w, "clickhouse: DELETE issued on %s (mutations run in the background; see system.mutations)\n",
			strings.Join(rep.ClickHouseTables, ", "))
	}
	if !rep.CaughtUp {
		fmt.Fprintln(w, "note: the projector or the sink had not read the deletion's events yet; run this again later to delete what they write after")
	}
	if rep.EventID != "" {
		fmt.Fprintf(w, "recorded tenant.deleted.v1 %s\n", rep.EventID)
	}
	return nil
}
