#!/usr/bin/env bash
# Installs the Debian packages that certfleet's tests and `task run` need and
# that are missing: redis-server, clickhouse-server and clickhouse-client
# (Debian's 18.16, the version the tests run against), zookeeper (the
# ClickHouse cluster tests' coordination service; Java, which its package
# pulls in), openssl, curl, jq and unzip (the README's walk-through uses it),
# prometheus (for promtool, which checks and tests deploy/'s alert rules) and
# chromium-headless-shell (the dashboard's browser tests drive it; it makes
# no calls home and starts in under a second, unlike full chromium); and
# axe-core's axe.min.js via scripts/axe.sh (npm) for their accessibility audit.
# Prints nothing and touches nothing when all of them are there.
#
# The packages' system services are not started (a temporary policy-rc.d
# forbids it) and, on a machine booted with systemd, not enabled either:
# scripts/services.sh and the tests run their own servers under the
# repository, and a system Redis or ClickHouse would only hold the ports.
set -euo pipefail

die() { echo "deps: $*" >&2; exit 1; }

# found NAME: NAME is on PATH or in a sbin directory that a user's PATH
# often lacks (clickhouse-server lives in /usr/sbin); an absolute NAME is
# looked at where it says (zookeeper's scripts are off every PATH).
found() {
	case "$1" in /*) [ -x "$1" ]; return ;; esac
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# package:binary pairs; redis-cli comes with redis-server (redis-tools).
wanted=(
	redis-server:redis-server
	redis-tools:redis-cli
	clickhouse-server:clickhouse-server
	clickhouse-client:clickhouse-client
	zookeeper:/usr/share/zookeeper/bin/zkServer.sh
	openssl:openssl
	curl:curl
	jq:jq
	unzip:unzip
	prometheus:promtool
	chromium-headless-shell:/usr/lib/chromium/chromium-headless-shell
)

missing=()
for w in "${wanted[@]}"; do
	found "${w#*:}" || missing+=("${w%%:*}")
done
# axe-core for the dashboard's accessibility audit (npm, not apt).
bash "$(dirname "$0")/axe.sh"

[ "${#missing[@]}" -eq 0 ] && exit 0

command -v apt-get >/dev/null 2>&1 ||
	die "missing ${missing[*]} and there is no apt-get: install them with your system's package manager"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 ||
		die "missing ${missing[*]}: run this as root or install sudo (apt-get install ${missing[*]})"
	sudo=(sudo)
fi

echo "deps: installing ${missing[*]}" >&2

# policy-rc.d answering 101 makes invoke-rc.d and deb-systemd-invoke skip
# starting the services the packages ship. Only ours is removed afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=
cleanup() {
	if [ -n "$own_policy" ]; then
		"${sudo[@]}" rm -f "$policy" || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ ! -e "$policy" ]; then
	own_policy=1
	printf '#!/bin/sh\n# written by certfleet scripts/deps.sh during an install\nexit 101\n' |
		"${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
fi

apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${apt[@]}" update -qq || die "apt-get update failed"
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" ||
	die "apt-get install ${missing[*]} failed"
# The downloaded packages are not needed once installed; on a small disk
# their few hundred MB are the test suite's (scripts/diskcheck.sh).
"${apt[@]}" clean || true

# The units were enabled by the packages' postinst; keep them from holding
# ports 6379, 9000 and 2181 after the next boot. Only for what this run installed.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	for unit in redis-server clickhouse-server zookeeper; do
		case " ${missing[*]} " in
		*" $unit "*)
			"${sudo[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 &&
				echo "deps: disabled the system $unit service (certfleet runs its own)" >&2 || true
			;;
		esac
	done
fi

for w in "${wanted[@]}"; do
	found "${w#*:}" || die "${w#*:} still missing after installing ${w%%:*}"
done
echo "deps: installed ${missing[*]}" >&2
