#!/usr/bin/env bash
# `go tool task bench`: the agent and sink benchmarks, then how each measured
# path compares with its baseline.
#
#   scripts/bench.sh [packages...]      (default ./agent/ ./coordinator/sink/ ./apiserver/projector/)
#   BENCHTIME=5s scripts/bench.sh       (default 3s per benchmark)
#
# A benchmark's baseline is its sibling sub-benchmark named "baseline"
# (BenchmarkHandshakes/scanner beside BenchmarkHandshakes/baseline): the summary
# divides each rate metric (unit ending in /s) of the measured path by the
# baseline's, or the baseline's ns/op by the path's when there is no rate metric.
# Metrics a benchmark reports itself with a unit containing "ratio" are
# listed too. The raw output is kept in .data/bench.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
mkdir -p .data
out=.data/bench.txt
[ $# -gt 0 ] || set -- ./agent/ ./coordinator/sink/ ./apiserver/projector/

go test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-3s}" -count 1 "$@" | tee "$out"

echo
echo "== summary (ratio = measured / baseline; higher is better)"
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	names[++n] = name
	for (i = 3; i < NF; i += 2) { v[name, $(i + 1)] = $i; units[name] = units[name] " " $(i + 1) }
}
END {
	shown = 0
	for (k = 1; k <= n; k++) {
		name = names[k]
		parent = name; sub(/\/[^\/]*$/, "", parent)
		leaf = substr(name, length(parent) + 2)
		split(units[name], us, " ")
		for (j in us) if (us[j] ~ /ratio/) { printf "%-50s %12s %s\n", name, v[name, us[j]], us[j]; shown++ }
		base = parent "/baseline"
		if (parent == name || leaf == "baseline" || !((base, "ns/op") in v)) continue
		rated = 0
		for (j in us) {
			u = us[j]
			if (u ~ /\/s$/ && (base, u) in v && v[base, u] > 0) {
				printf "%-50s %12.1f %-14s baseline %12.1f   ratio %.2f\n", name, v[name, u], u, v[base, u], v[name, u] / v[base, u]
				rated = 1; shown++
			}
		}
		if (!rated && v[name, "ns/op"] > 0) {
			printf "%-50s %12.1f ns/op          baseline %12.1f   ratio %.2f\n", name, v[name, "ns/op"], v[base, "ns/op"], v[base, "ns/op"] / v[name, "ns/op"]
			shown++
		}
	}
	if (!shown) print "(no benchmark with a \"baseline\" sibling or a ratio metric)"
}' "$out"
