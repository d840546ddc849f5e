package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
)

const quotaUsage = "usage: certfleet quota show --email E\n" +
	"       certfleet quota set --email E [--domains N] [--channels N] [--api-keys N] [--requests-in-flight N] [--held-api-keys N] [--held-domains N] ...\n" +
	"       certfleet quota clear --email E [--domains] [--channels] [--api-keys] [--requests-in-flight] [--held-api-keys] [--held-domains] ..."

// runQuota is `certfleet quota show|set|clear`: the operator's overrides
// of an account's limits (internal/quota). show prints the effective
// limits against the defaults of the flags given (the API server's own
// --quota-* flags; give the same here), and what is used.
func runQuota(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "set" && args[0] != "clear") {
		return actionUsage(stderr, "quota", quotaUsage, args)
	}
	action := args[0]
	fs := newFlagSet("quota " + action).redis()
	fs.StringVar(&fs.opts.Email, "email", "", "email address of the account (required)")
	if action == "show" {
		fs.tenancy()
	}
	// One flag per resource, named as the resource with '-' for '_'.
	values := map[string]*int64{}
	cleared := map[string]*bool{}
	byFlag := map[string]quota.Resource{}
	for _, r := range quota.Resources {
		name := strings.ReplaceAll(string(r), "_", "-")
		byFlag[name] = r
		switch action {
		case "set":
			values[name] = fs.Int64(name, 0, fmt.Sprintf("limit of %s for this account (0: unlimited)", r))
		case "clear":
			cleared[name] = fs.Bool(name, false, fmt.Sprintf("drop this account's %s override: the default applies again", r))
		}
	}
	logger, err := fs.parse(args[1:], stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	email, err := accountEmail(fs.opts)
	if err != nil {
		return err
	}
	tenant := events.TenantID(email)
	rdb, err := openRedis(ctx, fs.opts, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()

	switch action {
	case "set":
		l := quota.Limits{}
		fs.Visit(func(f *flag.Flag) {
			if v, ok := values[f.Name]; ok {
				l[byFlag[f.Name]] = *v
			}
		})
		if len(l) == 0 {
			return errors.New("set at least one of --domains, --channels, --api-keys, --requests-in-flight, --held-api-keys, --held-domains, ...")
		}
		if err := quota.Set(ctx, rdb, tenant, l); err != nil {
			return err
		}
	case "clear":
		var rs []quota.Resource
		for name, on := range cleared {
			if *on {
				rs = append(rs, byFlag[name])
			}
		}
		if len(rs) == 0 {
			return errors.New("name at least one of --domains, --channels, --api-keys, --requests-in-flight, --held-api-keys, --held-domains, ...")
		}
		if err := quota.Clear(ctx, rdb, tenant, rs...); err != nil {
			return err
		}
	}
	o := fs.opts.tenancyOptions
	if action != "show" {
		o = newFlagSet("defaults").tenancy().opts.tenancyOptions // the flags' defaults
	}
	overrides, err := quota.Overrides(ctx, rdb, tenant)
	if err != nil {
		return err
	}
	eff := overrides.With(o.quotas())
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tLIMIT\tSOURCE")
	for _, r := range quota.Resources {
		src := "default"
		if _, ok := overrides[r]; ok {
			src = "account"
		}
		lim := fmt.Sprint(eff[r])
		if eff[r] == 0 {
			lim = "unlimited"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r, lim, src)
	}
	return tw.Flush()
}
