// Package scalebench measures what certfleet costs per monitored domain
// at scale: Redis memory by component (domain records, indexes, views,
// schedule, alert state), with the streams' backlog counted apart. Its
// test loads a fleet through the real roles (the accounts store, the
// coordinator, the projector and the alert engine, scans fed as the agents
// publish them) into a real Redis; `go tool task bench:scale` runs it at
// CERTFLEET_BENCH_DOMAINS domains (default 100,000), the test suite at
// 2,000.
package scalebench
