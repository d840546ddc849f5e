package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/agent/lab"
)

// runLab serves the lab until a signal arrives, after printing what an
// agent needs to scan it.
func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lab")
	o := fs.opts
	fs.IntVar(&o.LabPort, "port", 0, "TLS port of the lab's endpoints (0: a free port)")
	fs.StringVar(&o.LabDNS, "dns-listen", "127.0.0.1:0", "address of the lab's DNS server (UDP and TCP)")
	fs.StringVar(&o.LabZone, "zone", "lab.certfleet.test.", "DNS zone of the lab's names")
	fs.StringVar(&o.WriteEnv, "write-env", "", "also write the agent's settings as CERTFLEET_* lines to this file (roots and the RDAP bootstrap file go beside it)")
	var rdapListen, whoisListen, forward, pebbleBin string
	fs.StringVar(&rdapListen, "rdap-listen", "127.0.0.1:0", "address of the lab's RDAP server (HTTP)")
	fs.StringVar(&whoisListen, "whois-listen", "127.0.0.1:0", "address of the lab's WHOIS server")
	fs.StringVar(&forward, "forward", "system", "DNS servers (host:port, comma-separated) asked for names outside the lab: 'system' for those of /etc/resolv.conf, 'none' to refuse them")
	fs.StringVar(&pebbleBin, "pebble", "", "Pebble binary to run as the lab's ACME CA (go build -o .data/bin/pebble github.com/letsencrypt/pebble/v2/cmd/pebble in tools/; go tool task run does); empty: the lab has no ACME CA")
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	upstreams, err := labForward(forward)
	if err != nil {
		// The lab still serves its own names.
		logger.Warn("names outside the lab will be refused", zap.Error(err))
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := lab.Start(ctx, lab.Config{Zone: o.LabZone, Port: o.LabPort, DNSAddr: o.LabDNS, Forward: upstreams,
		RDAPAddr: rdapListen, WHOISAddr: whoisListen, Pebble: pebbleBin}, logger)
	if err != nil {
		return err
	}
	defer l.Close()

	rootsPath, bootstrapPath := "", ""
	if o.WriteEnv != "" {
		rootsPath = filepath.Join(filepath.Dir(o.WriteEnv), "lab-roots.pem")
		bootstrapPath = filepath.Join(filepath.Dir(o.WriteEnv), lab.BootstrapFile)
		if err := l.WriteEnv(o.WriteEnv, rootsPath); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "certfleet lab: %d endpoints, DNS on %s", len(l.Targets()), l.ResolverAddr())
	if len(upstreams) > 0 {
		fmt.Fprintf(stdout, " (other names from %s)", strings.Join(upstreams, ", "))
	}
	fmt.Fprintf(stdout, "\n\ndomains:\n")
	for _, t := range l.Targets() {
		fmt.Fprintf(stdout, "  %-16s %s\n", t.Name, t.Domain)
	}
	fmt.Fprintf(stdout, "\nregistrations (RDAP %s, WHOIS %s):\n", l.RDAPURL(), l.WHOISAddr())
	for _, r := range l.Registrations() {
		fmt.Fprintf(stdout, "  %-16s %-30s %s\n", r.Name, r.Domain, describeRegistration(r))
	}
	fmt.Fprintf(stdout, "\nan agent scans them with:\n  --resolver %s --allow-targets %s", l.ResolverAddr(), strings.Join(l.AllowTargets(), ","))
	if rootsPath != "" {
		fmt.Fprintf(stdout, " --extra-roots %s\n", rootsPath)
	} else {
		fmt.Fprintf(stdout, " --extra-roots <the lab's root, see --write-env>\n")
		bootstrapPath = "<the lab's bootstrap file, see --write-env>"
	}
	fmt.Fprintf(stdout, "and looks up their registrations with:\n  --rdap-bootstrap %s --whois-server %s\n",
		bootstrapPath, strings.Join(l.WHOISServers(), ","))
	if dir := l.ACMEDirectory(); dir != "" {
		c := l.RFC2136Credentials()
		fmt.Fprintf(stdout, "\nACME CA (Pebble): %s, DNS-01 through RFC 2136 updates of %s with key %s (%s)\n",
			dir, strings.TrimSuffix(o.LabZone, "."), c["RFC2136_TSIG_KEY"], c["RFC2136_TSIG_ALGORITHM"])
	}
	if o.WriteEnv != "" {
		fmt.Fprintf(stdout, "\nsettings written to %s\n", o.WriteEnv)
	}
	<-ctx.Done()
	logger.Info("lab stopping", zap.String("reason", context.Cause(ctx).Error()))
	return nil
}

// labForward reads --forward: "system", "none" or host:port,...
func labForward(v string) ([]string, error) {
	switch v {
	case "none", "":
		return nil, nil
	case "system":
		return lab.SystemResolvers("/etc/resolv.conf")
	}
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

// describeRegistration is one line of what the lab's registries say about r.
func describeRegistration(r lab.Registration) string {
	w := r.Want
	s := w.Status
	if w.Source != "" {
		s += " over " + w.Source
	}
	if w.ExpiresAt != nil {
		s += ", expires " + w.ExpiresAt.Format(time.DateOnly)
	}
	if r.RateLimited {
		s += ", after a 429"
	}
	return s
}
