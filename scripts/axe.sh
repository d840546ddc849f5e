#!/usr/bin/env bash
# Fetches axe-core's axe.min.js, the accessibility audit that the dashboard's
# browser tests inject into each page, into .data/npm/axe-core-$AXE_VERSION/.
# Pinned version; npm pack fetches the package's tarball from the npm
# registry and only axe.min.js is kept. Prints nothing and touches nothing
# when the file is there.
set -euo pipefail

AXE_VERSION=4.14.1
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.data/npm/axe-core-$AXE_VERSION"
[ -s "$dir/axe.min.js" ] && exit 0

command -v npm >/dev/null 2>&1 || { echo "axe: npm is needed to fetch axe-core@$AXE_VERSION (install nodejs and npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null) ||
	{ echo "axe: npm pack axe-core@$AXE_VERSION failed" >&2; exit 1; }
tar -xzf "$tmp/axe-core-$AXE_VERSION.tgz" -C "$tmp" package/axe.min.js
mkdir -p "$dir"
mv "$tmp/package/axe.min.js" "$dir/axe.min.js"
echo "axe: fetched axe-core@$AXE_VERSION into $dir" >&2
