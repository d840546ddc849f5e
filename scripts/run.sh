#!/usr/bin/env bash
# `go tool task run`: certfleet on this machine, scanning a local lab.
#
#   scripts/run.sh        start, register the lab's domains, wait
#   scripts/run.sh stop   stop a run started in another terminal
#
# Needs the services up (scripts/services.sh start, which writes
# .data/services.env) and .data/bin/certfleet built: the Taskfile's run task
# does both first. Starts `certfleet lab` (TLS endpoints with known faults, a
# DNS server for their names that forwards other names to the system's
# resolvers, and RDAP and WHOIS servers for their registrations), which
# writes the flags an agent needs to .data/lab.env (with the RDAP bootstrap
# file beside it); then `certfleet all` with those flags; then registers the
# lab's domains through the KeyChest API and shows what the scans found.
# Ctrl-C or SIGTERM stops certfleet and the lab; Redis and ClickHouse keep
# running (go tool task services:stop).
#
# CERTFLEET_* variables in the environment reach certfleet as flags, e.g.
# CERTFLEET_LISTEN=127.0.0.1:8081 or CERTFLEET_SCAN_INTERVAL=5m.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
NAME=run
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# CERTFLEET_RUN_DATA moves everything the run writes (the README walk-through
# test runs a demo of its own on its own servers that way).
DATA=${CERTFLEET_RUN_DATA:-$ROOT/.data}
BIN=$DATA/bin/certfleet
LOGS=$DATA/logs
STATE=$DATA/run
RUN_PID=$STATE/run.pid
LAB_PIDFILE=$STATE/lab.pid
APP_PIDFILE=$STATE/certfleet.pid
AGENT_PIDFILE=$STATE/agent.pid
LAB_ENV=$DATA/lab.env
KEY_FILE=$DATA/api_key
V1_KEY_FILE=$DATA/v1_key
V1_WRITE_KEY_FILE=$DATA/v1_write_key
EMAIL=demo@example.com

# stop_ours: ends a lab and a certfleet that an earlier run left behind.
stop_ours() {
	local f
	for f in "$APP_PIDFILE" "$AGENT_PIDFILE" "$LAB_PIDFILE"; do
		if alive "$f" "$BIN"; then
			say "stopping $(basename "$f" .pid) (pid $(cat "$f")) left by an earlier run"
			stop_pid "$(basename "$f" .pid)" "$(cat "$f")" 20
		fi
		rm -f "$f"
	done
}

if [ "${1:-}" = stop ]; then
	if alive "$RUN_PID" run.sh; then
		pid=$(cat "$RUN_PID")
		kill -TERM "$pid"
		for ((i = 0; i < 400; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && die "run (pid $pid) still running after 40s"
		say "stopped"
	else
		stop_ours
		say "no run is going on"
	fi
	exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

[ -x "$BIN" ] || die "$(rel "$BIN") missing: run 'go tool task build'"
[ -s "$DATA/services.env" ] || die "services not started: run 'go tool task services'"
command -v curl >/dev/null 2>&1 || die "curl missing: run 'go tool task deps'"
if alive "$RUN_PID" run.sh; then
	die "already running (pid $(cat "$RUN_PID")); stop it with Ctrl-C there or 'go tool task run:stop'"
fi
stop_ours

# The services' URLs, unless the environment names other servers.
while IFS='=' read -r k v; do
	[ -n "$k" ] && [ -z "${!k:-}" ] && export "$k=$v"
done <"$DATA/services.env"

# The demo's passphrases for the client CA and channel secrets, made once and
# kept in .data/secrets.env (mode 600) so sealed keys open on every run;
# values in the environment win.
SECRETS=$DATA/secrets.env
if [ ! -s "$SECRETS" ]; then
	(
		umask 077
		printf 'CERTFLEET_CA_PASSPHRASE=%s\nCERTFLEET_SECRETS_PASSPHRASE=%s\n' \
			"$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$SECRETS"
	)
fi
while IFS='=' read -r k v; do
	[ -n "$k" ] && [ -z "${!k:-}" ] && export "$k=$v"
done <"$SECRETS"

LISTEN=${CERTFLEET_LISTEN:-127.0.0.1:8080}
port=${LISTEN##*:}
case "${LISTEN%:*}" in
"" | 0.0.0.0) HOSTPORT=127.0.0.1:$port ;;
"[::]") HOSTPORT=[::1]:$port ;;
*) HOSTPORT=$LISTEN ;;
esac
BASE=http://$HOSTPORT
API=$BASE/api/v1.0
if listening "$port"; then
	die "port $port for the API is taken by $(holder "$port"); set CERTFLEET_LISTEN=127.0.0.1:<free port>"
fi

mkdir -p "$LOGS" "$STATE"
echo $$ >"$RUN_PID"
LAB_PID=
APP_PID=
AGENT_PID=
TICK=
# stop_child NAME PID: TERM, then KILL after 20s, and reap it.
stop_child() {
	[ -n "$2" ] || return 0
	say "stopping $1 (pid $2)"
	stop_pid "$1" "$2" 20
	wait "$2" 2>/dev/null || true
}
cleanup() {
	local code=$?
	trap '' INT TERM
	trap - EXIT
	[ -n "$TICK" ] && kill "$TICK" 2>/dev/null
	echo
	stop_child certfleet "$APP_PID"
	stop_child "the second agent" "$AGENT_PID"
	stop_child "the lab" "$LAB_PID"
	rm -f "$APP_PIDFILE" "$AGENT_PIDFILE" "$LAB_PIDFILE" "$RUN_PID"
	say "Redis and ClickHouse keep running; stop them with 'go tool task services:stop'"
	exit "$code"
}
trap cleanup EXIT
# Ctrl-C and SIGTERM are how a run is meant to end: a clean stop exits 0,
# so task reports no failure.
trap 'exit 0' INT TERM

# Each child runs in its own session, so the terminal's Ctrl-C reaches only
# this script, which then stops them in order, once.
# A fixed lab port keeps the lab's domains (host:port) the same from run to
# run, so the demo account's earlier registrations keep being scanned.
LAB_PORT=${CERTFLEET_LAB_PORT:-9443}
if listening "$LAB_PORT"; then
	warn "lab port $LAB_PORT is taken by $(holder "$LAB_PORT"); the lab takes a free port"
	LAB_PORT=0
fi
rm -f "$LAB_ENV"
# Pebble (go tool task build:pebble) makes the lab an ACME CA too.
PEBBLE=$DATA/bin/pebble
[ -x "$PEBBLE" ] || PEBBLE=$ROOT/.data/bin/pebble
[ -x "$PEBBLE" ] || { warn "$(rel "$PEBBLE") missing ('go tool task build:pebble'): the lab runs without an ACME CA"; PEBBLE=; }
setsid "$BIN" lab --port "$LAB_PORT" --write-env "$LAB_ENV" ${PEBBLE:+--pebble "$PEBBLE"} </dev/null >"$LOGS/lab.log" 2>&1 &
LAB_PID=$!
echo "$LAB_PID" >"$LAB_PIDFILE"
say "lab starting (pid $LAB_PID, log $(rel "$LOGS/lab.log"))"
for ((i = 0; i < 300; i++)); do
	grep -q '^CERTFLEET_LAB_DOMAINS=' "$LAB_ENV" 2>/dev/null && break
	if ! kill -0 "$LAB_PID" 2>/dev/null; then
		tail_log "$LOGS/lab.log"
		die "the lab exited during start"
	fi
	sleep 0.1
done
grep -q '^CERTFLEET_LAB_DOMAINS=' "$LAB_ENV" 2>/dev/null || {
	tail_log "$LOGS/lab.log"
	die "the lab wrote no CERTFLEET_LAB_DOMAINS to $(rel "$LAB_ENV") in 30s"
}
# The lab's resolver, roots, allowed targets, RDAP bootstrap file
# (CERTFLEET_RDAP_BOOTSTRAP) and WHOIS servers (CERTFLEET_WHOIS_SERVER)
# become certfleet's flags: --rdap-bootstrap and --whois-server of the
# roles that look registrations up. Read, not sourced: a value may or may
# not be quoted.
while IFS= read -r line; do
	[[ $line =~ ^(CERTFLEET_[A-Z0-9_]+)=(.*)$ ]] || continue
	k=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
	[[ $v =~ ^\"(.*)\"$ || $v =~ ^\'(.*)\'$ ]] && v=${BASH_REMATCH[1]}
	export "$k=$v"
done <"$LAB_ENV"
read -r -a DOMAINS <<<"${CERTFLEET_LAB_DOMAINS:-}"
[ "${#DOMAINS[@]}" -gt 0 ] || die "CERTFLEET_LAB_DOMAINS in $(rel "$LAB_ENV") is empty"

# Two regions on one machine: `all` scans as region-a, a second agent as
# region-b, so every result shows up once per region.
setsid "$BIN" all --region region-a </dev/null >"$LOGS/certfleet.log" 2>&1 &
APP_PID=$!
echo "$APP_PID" >"$APP_PIDFILE"
say "certfleet starting (pid $APP_PID, log $(rel "$LOGS/certfleet.log"))"
# /readyz, not /healthz: the port answers /healthz from the start, while
# certfleet still waits for Redis and builds its indexes, and the API only
# once it runs.
for ((i = 0; i < 900; i++)); do
	curl -fs -m 3 -o /dev/null "$BASE/readyz" && break
	if ! kill -0 "$APP_PID" 2>/dev/null; then
		tail_log "$LOGS/certfleet.log"
		die "certfleet exited during start"
	fi
	sleep 0.1
done
curl -fs -m 3 -o /dev/null "$BASE/readyz" || {
	tail_log "$LOGS/certfleet.log"
	die "certfleet not ready ($BASE/readyz) in 90s: $(curl -s -m 3 "$BASE/readyz")"
}

AGENT_METRICS=127.0.0.1:9465
if listening 9465; then
	warn "port 9465 is taken by $(holder 9465); the second agent serves no /metrics"
	AGENT_METRICS=
fi
setsid "$BIN" agent --region region-b --metrics-listen "$AGENT_METRICS" </dev/null >"$LOGS/agent.log" 2>&1 &
AGENT_PID=$!
echo "$AGENT_PID" >"$AGENT_PIDFILE"
say "second agent starting in region-b (pid $AGENT_PID, log $(rel "$LOGS/agent.log"))"

# field NAME: the string or literal value of key NAME in the JSON on stdin
# (of its last occurrence: callers pass JSON where NAME occurs once).
field() { sed -n "s/.*\"$1\" *: *\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n1; }

# The account's key is kept in .data/api_key: a key of the client's own
# claimed with POST is the same on every run, so old registrations stay
# visible. GET /access/claim/{email} is the fallback.
key=$(cat "$KEY_FILE" 2>/dev/null || true)
if ! [[ $key =~ ^[a-zA-Z0-9-]{16,64}$ ]]; then
	key=demo-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
resp=$(curl -s -m 10 -H 'Content-Type: application/json' \
	-d "{\"email\":\"$EMAIL\",\"api_key\":\"$key\"}" "$API/access/claim" || true)
case "$(field status <<<"$resp")" in
created | success) ;;
*)
	resp=$(curl -s -m 10 "$API/access/claim/$EMAIL" || true)
	key=$(field api_key <<<"$resp")
	[ -n "$key" ] || die "claiming an API key for $EMAIL failed: $resp"
	;;
esac
echo "$key" >"$KEY_FILE"

# The demo account is the operator's own: its claimed key is approved at
# once (a claimed key is held until then, docs/tenancy.md), so the lab's
# domains it adds raise alerts (docs/alerts.md) and every key of the
# account sees them.
for id in $("$BIN" apikey list --email "$EMAIL" 2>/dev/null | awk '/\(not approved\)/ {print $1}'); do
	"$BIN" apikey approve --email "$EMAIL" --id "$id" >/dev/null 2>&1 || warn "approving the demo's claimed key $id failed"
done

for d in "${DOMAINS[@]}"; do
	resp=$(curl -s -m 10 -H 'Content-Type: application/json' \
		-d "{\"api_key\":\"$key\",\"domain\":\"$d\"}" "$API/servers/add" || true)
	if [ "$(field status <<<"$resp")" = success ]; then
		say "registered $d"
	else
		warn "registering $d failed: $resp"
	fi
done

# Show what the scans found as soon as every domain has results, or after
# a minute with what there is.
expiration() { curl -s -m 10 "$API/servers/expiration/$1?api_key=$key" || true; }
say "waiting for the first scans (up to 60s)..."
for ((i = 0; i < 60; i++)); do
	done_all=1
	for d in "${DOMAINS[@]}"; do
		resp=$(expiration "$d")
		grep -q '"region":"region-a"' <<<"$resp" && grep -q '"region":"region-b"' <<<"$resp" ||
			{ done_all=0; break; }
	done
	[ "$done_all" = 1 ] && break
	kill -0 "$APP_PID" 2>/dev/null || { tail_log "$LOGS/certfleet.log"; die "certfleet exited"; }
	kill -0 "$AGENT_PID" 2>/dev/null || { tail_log "$LOGS/agent.log"; die "the second agent exited"; }
	sleep 1
done
printf '\n%-44s %7s %6s %8s %8s\n' domain results found renewal expired
for d in "${DOMAINS[@]}"; do
	resp=$(expiration "$d")
	# The top-level flags come before "results"; each result has an "ip".
	top=${resp%%\"results\"*}
	printf '%-44s %7s %6s %8s %8s\n' "$d" "$(grep -o '"ip"' <<<"$resp" | wc -l)" \
		"$(field certificate_found <<<"$top")" "$(field renewal_due <<<"$top")" \
		"$(field expired_found <<<"$top")"
done

# The registrations of the lab's domains (RDAP or WHOIS, as the lab serves
# them) as the v1 API shows them: a read-only /api/v1 key of the demo
# account, made once and kept in .data/v1_key.
v1_domains() { curl -s -m 10 -H "Authorization: Bearer $1" "$BASE/api/v1/domains?per_page=100" || true; }
v1key=$(cat "$V1_KEY_FILE" 2>/dev/null || true)
if [ -z "$v1key" ] || ! grep -q '"data"' <<<"$(v1_domains "$v1key")"; then
	v1key=$("$BIN" apikey create --email "$EMAIL" --label task-run --scopes read 2>/dev/null | awk '/^key:/ {print $2}' || true)
	[ -n "$v1key" ] && (umask 077 && echo "$v1key" >"$V1_KEY_FILE")
fi
if [ -n "$v1key" ]; then
	# host:port and whois_days_remaining of each domain in the list.
	whois=$(v1_domains "$v1key" | grep -o '"hostname":"[^"]*","port":[0-9]*,[^{]*"whois_days_remaining":[^,}]*' |
		sed 's/"hostname":"\([^"]*\)","port":\([0-9]*\),.*"whois_days_remaining":\(.*\)/\1:\2 \3/' || true)
	printf '\n%-44s %s\n' domain whois_days_remaining
	for d in "${DOMAINS[@]}"; do
		days=$(awk -v d="$d" '$1 == d {print $2}' <<<"$whois")
		printf '%-44s %s\n' "$d" "${days:--}"
	done
	say "whois_days_remaining is null until a registration lookup of the domain lands"
else
	warn "no /api/v1 key for $EMAIL: the registrations are not shown"
fi

# A managed certificate for a lab name, ordered from the lab's ACME CA
# (Pebble) through DNS-01 with the lab's DNS account: a read-write v1 key
# of the demo account, made once and kept in .data/v1_write_key.
ACME_DOMAIN=${CERTFLEET_LAB_ACME_DOMAIN:-}
if [ -n "${CERTFLEET_ACME_DIRECTORY:-}" ] && [ -n "$ACME_DOMAIN" ]; then
	v1w() { curl -s -m 10 -H "Authorization: Bearer $wkey" -H 'Content-Type: application/json' "$@" || true; }
	wkey=$(cat "$V1_WRITE_KEY_FILE" 2>/dev/null || true)
	if [ -z "$wkey" ] || ! grep -q '"dns_accounts"' <<<"$(v1w "$BASE/api/v1/dns-accounts")"; then
		wkey=$("$BIN" apikey create --email "$EMAIL" --label task-run-write --scopes read,write 2>/dev/null | awk '/^key:/ {print $2}' || true)
		[ -n "$wkey" ] && (umask 077 && echo "$wkey" >"$V1_WRITE_KEY_FILE")
	fi
	# The lab's TSIG secret is new on every run: the account is saved anew.
	v1w -d "{\"provider\":\"rfc2136\",\"account_id\":\"lab\",\"credentials\":{
		\"RFC2136_NAMESERVER\":\"$CERTFLEET_LAB_RFC2136_NAMESERVER\",\"RFC2136_TSIG_KEY\":\"$CERTFLEET_LAB_RFC2136_TSIG_KEY\",
		\"RFC2136_TSIG_SECRET\":\"$CERTFLEET_LAB_RFC2136_TSIG_SECRET\",\"RFC2136_TSIG_ALGORITHM\":\"$CERTFLEET_LAB_RFC2136_TSIG_ALGORITHM\",
		\"RFC2136_SEQUENCE_INTERVAL\":\"1\"}}" "$BASE/api/v1/dns-accounts" >/dev/null
	# Pebble forgets its certificates when it stops: order again each run.
	v1w -X DELETE "$BASE/api/certificates/$ACME_DOMAIN" >/dev/null
	v1w -d "{\"domain\":\"$ACME_DOMAIN\",\"dns_provider\":\"rfc2136\",\"account_id\":\"lab\"}" "$BASE/api/certificates/create" >/dev/null
	say "ordering a certificate for $ACME_DOMAIN from the lab's ACME CA (up to 60s)..."
	status=
	for ((i = 0; i < 60; i++)); do
		status=$(v1w "$BASE/api/certificates/$ACME_DOMAIN" | field status)
		[ "$status" = issued ] || [ "$status" = failed ] && break
		sleep 1
	done
	say "certificate for $ACME_DOMAIN: ${status:-unknown} (GET $BASE/api/certificates/$ACME_DOMAIN)"
fi

cat <<EOF

certfleet is running: API $API
  one domain:  curl -s '$API/servers/expiration/${DOMAINS[0]}?api_key=$key'
  add another: curl -s -H 'Content-Type: application/json' -d '{"api_key":"$key","domain":"example.org"}' $API/servers/add
  dashboard:   $BASE/ (sign in with the API key in $(rel "$V1_WRITE_KEY_FILE"), or the read-only one in $(rel "$V1_KEY_FILE"))
  v1 API:      $BASE/api/v1 (key: .data/bin/certfleet apikey create --email $EMAIL --label me --scopes read,write)
  client CA:   curl -s $BASE/api/ca/certificate   (passphrases in $(rel "$SECRETS"))
  managed:     curl -s -H "Authorization: Bearer \$(cat $(rel "$V1_WRITE_KEY_FILE"))" '$BASE/api/certificates/${ACME_DOMAIN:-shop.lab.certfleet.test}/download?file=fullchain.pem'
  OpenAPI:     $BASE/api/openapi.json
  registries:  RDAP per ${CERTFLEET_RDAP_BOOTSTRAP:-?}, WHOIS ${CERTFLEET_WHOIS_SERVER:-?} (the lab's; lab.log lists each case)
  metrics:     $BASE/metrics${AGENT_METRICS:+  http://$AGENT_METRICS/metrics (region-b agent)}
  api key:     $key (in $(rel "$KEY_FILE"), account $EMAIL)
  logs:        $(rel "$LOGS")/certfleet.log  $(rel "$LOGS")/agent.log  $(rel "$LOGS")/lab.log
               .data/redis/redis.log  .data/clickhouse/clickhouse-server.log
Ctrl-C stops certfleet and the lab ('go tool task run:stop' from elsewhere).
EOF

# Wait until a signal, a child's exit, or the loss of the parent (task was
# killed): the background sleep keeps the traps prompt.
parent=$PPID
while :; do
	sleep 1 &
	TICK=$!
	wait "$TICK" || true
	TICK=
	if ! kill -0 "$APP_PID" 2>/dev/null; then
		wait "$APP_PID" && code=0 || code=$?
		APP_PID=
		tail_log "$LOGS/certfleet.log"
		die "certfleet exited (status $code)"
	fi
	if ! kill -0 "$AGENT_PID" 2>/dev/null; then
		wait "$AGENT_PID" && code=0 || code=$?
		AGENT_PID=
		tail_log "$LOGS/agent.log"
		die "the second agent exited (status $code)"
	fi
	if ! kill -0 "$LAB_PID" 2>/dev/null; then
		wait "$LAB_PID" && code=0 || code=$?
		LAB_PID=
		tail_log "$LOGS/lab.log"
		die "the lab exited (status $code)"
	fi
	kill -0 "$parent" 2>/dev/null || exit 0
done
