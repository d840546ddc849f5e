#!/usr/bin/env bash
# Checks, before `go tool task test` starts, that the disk has room for the
# suite: the Go build cache (a cold build of every package with -race, the
# roles' binary without it, deploy/Dockerfile's static binary and Pebble)
# and the temporary directory (test binaries as they are linked, each
# test's Redis and ClickHouse data). A suite that runs out of room half-way
# fails in dozens of places with "no space left on device"; this says so
# once, before anything runs. Measured on 2026-12-07 (docs/development.md,
# "Disk"): a cold run takes some 7-8 GB at its peak, a warm one about 2.5.
#
#   CERTFLEET_TEST_DISK_MIN_GB  below this, fail (default 3: not even a warm
#                               cache's run fits)
#   CERTFLEET_TEST_DISK_GB      below this, warn (default 8: a cold run fits)
#
# --clean-cache (what .ci/run passes): below CERTFLEET_TEST_DISK_GB, empty
# the Go build cache first. A CI machine's cache is disposable, a
# developer's is not, so only CI asks for it.
set -euo pipefail

min_gb=${CERTFLEET_TEST_DISK_MIN_GB:-3}
want_gb=${CERTFLEET_TEST_DISK_GB:-8}
clean=0
case "${1:-}" in
--clean-cache) clean=1 ;;
"") ;;
*) echo "diskcheck: unknown argument $1 (want --clean-cache or none)" >&2; exit 2 ;;
esac

# free_mb DIR: megabytes free for this user on DIR's file system (DIR or
# its nearest existing parent: the cache may not exist yet).
free_mb() {
	local d=$1
	while [ ! -e "$d" ]; do d=$(dirname "$d"); done
	df -Pm "$d" | awk 'NR==2 {print $4}'
}

# least_mb: the least room of the two places the suite writes to.
cache=$(go env GOCACHE)
tmp=${TMPDIR:-/tmp}
least_mb() {
	local a b
	a=$(free_mb "$cache")
	b=$(free_mb "$tmp")
	echo $((a < b ? a : b))
}

have=$(least_mb)
if [ "$clean" -eq 1 ] && [ "$have" -lt $((want_gb * 1024)) ] && [ -d "$cache" ]; then
	echo "diskcheck: $((have / 1024)) GB free, under $want_gb GB: emptying the Go build cache ($(du -sh "$cache" 2>/dev/null | cut -f1))" >&2
	go clean -cache
	have=$(least_mb)
fi
if [ "$have" -lt $((min_gb * 1024)) ]; then
	echo "diskcheck: $((have / 1024)) GB free for the Go build cache ($cache) and the temporary directory ($tmp); the test suite needs at least $min_gb GB, about $want_gb GB on a cold cache. Free some room (the Go build cache takes $(du -sh "$cache" 2>/dev/null | cut -f1); 'go clean -cache' empties it)" >&2
	exit 1
fi
if [ "$have" -lt $((want_gb * 1024)) ]; then
	echo "diskcheck: warning: $((have / 1024)) GB free; a run on a cold Go build cache needs about $want_gb GB" >&2
fi
