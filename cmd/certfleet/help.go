package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// help is what `certfleet <command> -h` prints around the flags.
type help struct {
	// args follow "[flags]" on the usage line.
	args string
	// about says in a line or two what the command does.
	about string
	// examples are command lines, each with a comment saying what it does.
	examples []example
}

type example struct{ comment, line string }

// commandHelp is the help of every command that parses flags, keyed by
// the command as typed ("apikey create").
var commandHelp = map[string]help{
	"all": {about: "Every role in one process, for one machine: API server, projector, coordinator, sink, notifier and an agent.",
		examples: []example{
			{"everything on one machine, against local Redis and ClickHouse", "certfleet all --redis-url redis://127.0.0.1:6379/0 --clickhouse-dsn clickhouse://127.0.0.1:9000/certfleet"},
			{"the same, settings from the environment", "CERTFLEET_LISTEN=:8080 CERTFLEET_REGION=eu-west certfleet all"},
		}},
	"apiserver": {about: "The REST APIs (KeyChest, v1, client certificates, audit), /metrics and the projector that keeps the views and alerts.",
		examples: []example{
			{"serve the APIs on every interface", "certfleet apiserver --listen :8080 --secrets-passphrase-file /run/secrets/certfleet"},
		}},
	"coordinator": {about: "The scan schedule, registration lookups, the ClickHouse sink (--sink) and the notifier.",
		examples: []example{
			{"a replica with a stable consumer name", "certfleet coordinator --name coordinator-0 --scan-interval 6h"},
			{"the schedule only, the sink running elsewhere", "certfleet coordinator --sink=false"},
		}},
	"agent": {about: "DNS and TLS handshakes (and registration lookups) from one region.",
		examples: []example{
			{"an agent in region eu-west", "certfleet agent --region eu-west --name agent-eu-0"},
			{"asking a given DNS server, metrics on every interface", "certfleet agent --region us-east --resolver 10.0.0.2:53 --metrics-listen :9465"},
		}},
	"scan": {args: " HOST[:PORT]...", about: "Scan each address of each host once with the agent's scanner, without Redis or ClickHouse.\nExit status 1 when a certificate is expired, invalid or within --min-days.",
		examples: []example{
			{"a table for two hosts", "certfleet scan example.com example.org:8443"},
			{"JSON, failing below 30 days", "certfleet scan --json --min-days 30 example.com"},
		}},
	"import": {args: " FILE", about: "Import the domains of a CSV file (header row: hostname or host, port, notes, tags separated by ';') or an NDJSON file\n" +
		"(the objects POST /api/v1/domains takes) into a running server, in chunks through POST /api/v1/domains/bulk.\n" +
		"Progress goes to stderr. With --resume, the last acknowledged line is recorded and a re-run continues after it;\n" +
		"a chunk sent twice is harmless (domains already there answer exists). Exit status 1 when some domains were refused.",
		examples: []example{
			{"a CSV file, resumable", "CERTFLEET_API_KEY=ssa_... certfleet import --api https://certfleet.example.com --resume domains.state domains.csv"},
			{"NDJSON in chunks of 5000", "certfleet import --api-key ssa_... --chunk 5000 domains.ndjson"},
		}},
	"migrate": {about: "Apply the ClickHouse migrations and exit.",
		examples: []example{{"", "certfleet migrate --clickhouse-dsn clickhouse://127.0.0.1:9000/certfleet"}}},
	"views rebuild": {about: "Rebuild the Redis views from ClickHouse: the latest complete view snapshot (--view-snapshot-interval of the apiserver)\n" +
		"and the events since its watermark, or every stored event with --full or when there is no snapshot.",
		examples: []example{
			{"", "certfleet views rebuild --redis-url redis://127.0.0.1:6379/0 --clickhouse-dsn clickhouse://127.0.0.1:9000/certfleet"},
			{"replay every stored event", "certfleet views rebuild --full"},
		}},
	"lab": {about: "Serve a local fleet of TLS endpoints with known faults, with its DNS and the RDAP and WHOIS servers of its registrations.",
		examples: []example{{"write the agent's settings to lab.env", "certfleet lab --port 8443 --write-env lab.env"}}},
	"apikey create": {about: "Create an account's v1 API key (the account too if needed) and print it.",
		examples: []example{{"a read-write key into a variable", "KEY=$(certfleet apikey create --email ops@example.com --label ci --scopes read,write)"}}},
	"apikey list": {about: "List an account's API keys.",
		examples: []example{{"", "certfleet apikey list --email ops@example.com"}}},
	"apikey revoke": {about: "Revoke one of an account's API keys.",
		examples: []example{{"the id as apikey list prints it", "certfleet apikey revoke --email ops@example.com --id ID"}}},
	"apikey approve": {about: "Approve a held (claimed) KeyChest key of an account.",
		examples: []example{{"", "certfleet apikey approve --email ops@example.com --id ID"}}},
	"ca init": {about: "Create the deployment's client CA.",
		examples: []example{{"", "CERTFLEET_CA_PASSPHRASE=... certfleet ca init --key-type ecdsa-p256"}}},
	"ca import": {about: "Import an existing CA certificate and key as the client CA.",
		examples: []example{{"", "certfleet ca import --cert ca.pem --key ca-key.pem --ca-passphrase-file /run/secrets/ca"}}},
	"ca show": {about: "Print the client CA in use.",
		examples: []example{{"", "certfleet ca show"}}},
	"quota show": {about: "Print an account's effective limits and what it uses.",
		examples: []example{{"", "certfleet quota show --email ops@example.com"}}},
	"quota set": {about: "Override an account's limits.",
		examples: []example{{"", "certfleet quota set --email ops@example.com --domains 50000"}}},
	"quota clear": {about: "Drop an account's overrides: the defaults apply again.",
		examples: []example{{"", "certfleet quota clear --email ops@example.com --domains"}}},
	"tenant delete": {about: "Delete an account and everything it keeps (domains, keys, alerts, channels, quotas, managed and client certificates, ClickHouse rows) and print what was removed.",
		examples: []example{{"", "certfleet tenant delete --email leaver@example.com --yes"}}},
	"regions list": {about: "List the regions agents were seen in, when last, and which are stale.",
		examples: []example{{"", "certfleet regions list"}}},
	"regions forget": {about: "Forget a region whose agents are gone for good, and drop its consumer group on the job streams (an agent still alive adds both again).",
		examples: []example{{"", "certfleet regions forget --region us-east"}}},
	"version": {about: "Print the release and revision of this binary.",
		examples: []example{{"", "certfleet version"}}},
}

// printExamples writes the examples section of a usage.
func printExamples(w io.Writer, examples []example) {
	if len(examples) == 0 {
		return
	}
	fmt.Fprintf(w, "\nexamples:\n")
	for _, e := range examples {
		if e.comment != "" {
			fmt.Fprintf(w, "  # %s\n", e.comment)
		}
		fmt.Fprintf(w, "  %s\n", e.line)
	}
}

// isHelp tells whether arg asks for help, as the flag package reads it.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h"
}

// groupHelp answers `certfleet <cmd> -h` for a command with actions
// (apikey, ca, quota, regions, views) or without flags (version): its usage and
// every action's examples. It returns flag.ErrHelp (exit status 0).
func groupHelp(w io.Writer, cmd, usage string) error {
	fmt.Fprintln(w, usage)
	var keys []string
	for k := range commandHelp {
		if k == cmd || strings.HasPrefix(k, cmd+" ") {
			keys = append(keys, k)
		}
	}
	// In the order the usage names the actions.
	slices.SortFunc(keys, func(a, b string) int {
		return strings.Index(usage, "certfleet "+a) - strings.Index(usage, "certfleet "+b)
	})
	var examples []example
	for _, k := range keys {
		examples = append(examples, commandHelp[k].examples...)
	}
	printExamples(w, examples)
	if len(keys) > 1 || (len(keys) == 1 && keys[0] != cmd) {
		fmt.Fprintf(w, "\nRun 'certfleet %s <action> -h' for an action's flags, each with its CERTFLEET_* environment variable.\n", cmd)
	}
	return flag.ErrHelp
}

// actionUsage is a usageError for a command with actions, or its help.
func actionUsage(w io.Writer, cmd, usage string, args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		return groupHelp(w, cmd, usage)
	}
	return usageError{errors.New(usage)}
}
