// Package chaos is certfleet's fault suite, kept in the project: its tests
// build the certfleet binary, run its roles as separate processes on real
// Redis and ClickHouse servers against a lab of TLS endpoints, inject
// faults (poison stream entries, a Redis restart, a ClickHouse outage) and
// check what the system promises: nothing acknowledged is lost, nothing
// reads twice, every role recovers. The package has no code besides its
// tests; `go tool task chaos` runs the long form (CERTFLEET_CHAOS=full).
package chaos
