package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/printable"
)

const apikeyUsage = "usage: certfleet apikey create --email E --label L [--scopes read,write] [--expires-at T]\n" +
	"       certfleet apikey list --email E\n" +
	"       certfleet apikey revoke --email E --id ID\n" +
	"       certfleet apikey approve --email E --id ID"

// runAPIKey is `certfleet apikey create|list|revoke|approve`: the
// operator's way to give an account (created if needed) its first key of
// the v1 API, and to list, revoke and approve (a claimed KeyChest key) an
// account's keys. It writes to Redis through the same commands as the
// API, events included.
func runAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list" && args[0] != "revoke" && args[0] != "approve") {
		return actionUsage(stderr, "apikey", apikeyUsage, args)
	}
	action := args[0]
	fs := newFlagSet("apikey " + action).redis()
	fs.StringVar(&fs.opts.Email, "email", "", "email address of the account (required)")
	switch action {
	case "create":
		fs.StringVar(&fs.opts.Label, "label", "", "what the key is for, 1-100 characters (required)")
		fs.StringVar(&fs.opts.Scopes, "scopes", "read", "comma-separated permissions: read, write")
		fs.StringVar(&fs.opts.ExpiresAt, "expires-at", "", "RFC 3339 time, or a date (its start, UTC), after which the key is refused (default: never)")
	case "revoke", "approve":
		fs.StringVar(&fs.opts.KeyID, "id", "", "id of the key to "+action+" (required; see apikey list)")
	}
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
	var expires *time.Time
	if action == "create" {
		if o.ExpiresAt != "" {
			t, err := accounts.ParseExpiry(o.ExpiresAt)
			if err != nil {
				return usagef("--expires-at: %w", err)
			}
			expires = &t
		}
	}
	if (action == "revoke" || action == "approve") && o.KeyID == "" {
		return usagef("--id is required")
	}

	rdb, err := openRedis(ctx, o, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, err := accounts.New(accounts.Config{Wait: o.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	switch action {
	case "create":
		tenant, err := store.EnsureAccount(ctx, email)
		if err != nil {
			return err
		}
		k, err := store.CreateKey(ctx, tenant, o.Label, strings.Split(o.Scopes, ","), expires, accounts.SourceCLI)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "id:          %s\nkey:         %s\npermissions: %s\n", k.ID, k.Key, strings.Join(k.Scopes, ","))
		fmt.Fprintln(stderr, "the key is shown only this once: store it now")
		return nil
	case "list":
		// Listing never creates the account: an unknown one has no keys.
		keys, err := store.ListKeys(ctx, events.TenantID(email))
		if err != nil {
			return err
		}
		return printKeys(stdout, keys)
	case "approve":
		if _, err := store.ApproveKey(ctx, events.TenantID(email), o.KeyID); err != nil {
			return fmt.Errorf("approve %s: %w", o.KeyID, err)
		}
		fmt.Fprintf(stdout, "approved %s\n", o.KeyID)
		return nil
	default:
		if err := store.RevokeKey(ctx, events.TenantID(email), o.KeyID); err != nil {
			return fmt.Errorf("revoke %s: %w", o.KeyID, err)
		}
		fmt.Fprintf(stdout, "revoked %s\n", o.KeyID)
		return nil
	}
}

// printKeys writes keys as a table, times in RFC 3339 UTC, "-" for none.
// A label is escaped (printable.Escape): one stored before labels were
// checked may hold control characters, which would drive the terminal or
// forge a row.
func printKeys(w io.Writer, keys []accounts.APIKey) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tPREFIX\tLABEL\tPERMISSIONS\tCREATED\tEXPIRES\tLAST USED")
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, k := range keys {
		kind := k.Kind
		if k.Held {
			kind += " (not approved)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, kind, k.Prefix, printable.Escape(k.Label), strings.Join(k.Scopes, ","),
			at(&k.CreatedAt), at(k.ExpiresAt), at(k.LastUsedAt))
	}
	return tw.Flush()
}

// accountEmail is the account an operator command names with --email
// (required), normalized; a usage error when missing or malformed.
func accountEmail(o *options) (string, error) {
	if o.Email == "" {
		return "", usagef("--email is required")
	}
	email, err := accounts.ParseEmail(o.Email)
	if err != nil {
		return "", usagef("--email: %w", err)
	}
	return email, nil
}
