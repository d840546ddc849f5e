// Package scalebench measures what certfleet costs per monitored domain
// at scale: Redis memory by component (domain records, indexes, views,
// schedule, alert state), with the streams' backlog counted apart. Its
// test loads a fleet through the real roles (the accounts store, the
// coordinator, the projector and the alert engine, scans fed as the agents
// publish them) into a real Redis; `go tool task bench:scale` runs it at
// CERTFLEET_BENCH_DOMAINS domains (default 100,000), the test suite at
// 2,000.
//
// TestEventStoreAtScale measures the event store the same way, with the
// sink and a real ClickHouse: the sink's rows/s, bytes per scan row, the
// view snapshot, the view rebuild from it against the full replay in the
// same run, and the projector's and sink's lag at the rate of results 1M
// domains x 3 regions at a 12 h interval implies and at 10x; the test
// suite runs it at 300 domains.
package scalebench
