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
	fs.StringVar(&o.WriteEnv, "write-env", "", "also write the agent's settings as CERTFLEET_* lines to this file (roots go beside it)")
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := lab.Start(ctx, lab.Config{Zone: o.LabZone, Port: o.LabPort, DNSAddr: o.LabDNS}, logger)
	if err != nil {
		return err
	}
	defer l.Close()

	rootsPath := ""
	if o.WriteEnv != "" {
		rootsPath = filepath.Join(filepath.Dir(o.WriteEnv), "lab-roots.pem")
		if err := l.WriteEnv(o.WriteEnv, rootsPath); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "certfleet lab: %d endpoints, DNS on %s\n\n", len(l.Targets()), l.ResolverAddr())
	fmt.Fprintf(stdout, "domains:\n")
	for _, t := range l.Targets() {
		fmt.Fprintf(stdout, "  %-14s %s\n", t.Name, t.Domain)
	}
	fmt.Fprintf(stdout, "\nan agent scans them with:\n  --resolver %s --allow-targets %s", l.ResolverAddr(), strings.Join(l.AllowTargets(), ","))
	if rootsPath != "" {
		fmt.Fprintf(stdout, " --extra-roots %s\n\nsettings written to %s\n", rootsPath, o.WriteEnv)
	} else {
		fmt.Fprintf(stdout, " --extra-roots <the lab's root, see --write-env>\n")
	}
	<-ctx.Done()
	logger.Info("lab stopping", zap.String("reason", context.Cause(ctx).Error()))
	return nil
}
