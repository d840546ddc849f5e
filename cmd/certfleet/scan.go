package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/grade"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/printable"
)

// scanOptions are the flags of certfleet scan besides the agent's.
type scanOptions struct {
	JSON    bool
	MinDays int
}

// errScanFailed is a scan that found something wrong: exit status 1.
var errScanFailed = errors.New("")

// scanResult is one address of one host, as certfleet scan shows it.
type scanResult struct {
	Host  string `json:"host"`
	Port  int    `json:"port"`
	Grade string `json:"grade"`
	// DaysRemaining is null without a certificate or without expiry.
	DaysRemaining *int `json:"days_remaining"`
	// Problems say what makes the exit status non-zero, empty when none.
	Problems []string `json:"problems"`
	events.IPResult
}

// runScan is `certfleet scan HOST[:PORT]...`: every address of every host
// scanned once with the agent's scanner, no Redis or ClickHouse. The exit
// status is 1 when a certificate is expired, fails validation, expires
// within --min-days or a scan did not end in ok; 2 for a bad command line.
func runScan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("scan").agent()
	fs.args = true
	fs.BoolVar(&fs.opts.JSON, "json", false, "print JSON (one object per address) instead of a table")
	fs.IntVar(&fs.opts.MinDays, "min-days", 14, "fail when a certificate expires within this many days")
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	if fs.NArg() == 0 {
		return usagef("name at least one HOST[:PORT] to scan, e.g. certfleet scan example.com example.org:8443")
	}
	type target struct {
		host string
		port int
	}
	var targets []target
	for _, a := range fs.Args() {
		host, port, err := domainname.Parse(a)
		if err != nil {
			return usageError{err}
		}
		targets = append(targets, target{host, port})
	}
	scfg, err := scannerConfig(fs.opts)
	if err != nil {
		return usageError{err}
	}
	scanner, err := agent.NewScanner(scfg, logger)
	if err != nil {
		return err
	}
	th := grade.Thresholds{Critical: fs.opts.MinDays, Warning: fs.opts.MinDays}
	var out []scanResult
	for _, t := range targets {
		rep := scanner.Scan(ctx, agent.Target{Host: t.host, Port: t.port})
		now := time.Now()
		for _, r := range rep.Results {
			out = append(out, judge(t.host, t.port, r, now, th))
		}
		if rep.Skipped > 0 {
			fmt.Fprintf(stderr, "%s: %d more addresses not scanned (--max-ips-per-domain)\n", t.host, rep.Skipped)
		}
	}
	if fs.opts.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printScan(stdout, out)
	}
	for _, r := range out {
		if len(r.Problems) > 0 {
			return errScanFailed
		}
	}
	return nil
}

// judge grades one address and names what is wrong with it.
func judge(host string, port int, r events.IPResult, now time.Time, th grade.Thresholds) scanResult {
	g, _ := grade.Grade(r, now, th)
	s := scanResult{Host: host, Port: port, Grade: g, Problems: []string{}, IPResult: r}
	if r.Outcome != events.OutcomeOK {
		s.Problems = append(s.Problems, strings.TrimSuffix(string(r.Outcome)+" "+r.Detail, " "))
	}
	if !r.CertificateFound {
		return s
	}
	if !r.HasNoExpiry() {
		days := grade.DaysUntil(r.NotAfter, now)
		s.DaysRemaining = &days
		switch {
		case now.After(r.NotAfter):
			s.Problems = append(s.Problems, "expired")
		case days < th.Critical:
			s.Problems = append(s.Problems, fmt.Sprintf("expires in %d days (--min-days %d)", days, th.Critical))
		}
	}
	if !r.ChainValid {
		s.Problems = append(s.Problems, "chain not trusted")
	}
	if !r.HostnameValid {
		s.Problems = append(s.Problems, "wrong name")
	}
	return s
}

// printScan writes the results as a table. The issuer comes from the
// scanned server's certificate and the problems may quote it: both are
// escaped (printable.Escape) so that a certificate cannot drive the
// terminal or forge a row.
func printScan(w io.Writer, rs []scanResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tIP\tOUTCOME\tEXPIRES\tDAYS\tGRADE\tISSUER\tPROBLEMS")
	for _, r := range rs {
		expires, days := "-", "-"
		if r.CertificateFound {
			expires = r.NotAfter.UTC().Format("2006-01-02")
			if r.HasNoExpiry() {
				expires = "never"
			}
		}
		if r.DaysRemaining != nil {
			days = fmt.Sprint(*r.DaysRemaining)
		}
		ip := r.IP
		if ip == "" {
			ip = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", domainname.Format(r.Host, r.Port), ip, r.Outcome, expires, days,
			dash(r.Grade), dash(printable.Escape(r.Issuer)), dash(printable.Escape(strings.Join(r.Problems, "; "))))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
