#!/usr/bin/env bash
# Runs the Redis and ClickHouse that `task run` uses, as daemons of this
# repository: data, logs and pid files under .data/redis and .data/clickhouse.
#
#   scripts/services.sh start|stop|status
#
# Ports: CERTFLEET_REDIS_PORT (default 6379) and CERTFLEET_CLICKHOUSE_PORT
# (ClickHouse native protocol, default 9000). When a default port is held by
# another program (a system Redis, say), start warns and takes the next free
# port; a port given in the environment is used or start fails. The URLs of
# the running servers are written to .data/services.env, which
# scripts/run.sh reads. Starting what already runs is a no-op.
#
# The tests do not use these servers: internal/testenv starts its own.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$ROOT/.data
ENV_FILE=$DATA/services.env

NAME=services
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

bin() {
	local name=$1 d
	if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
	for d in /usr/sbin /usr/local/sbin /sbin; do
		if [ -x "$d/$name" ]; then echo "$d/$name"; return; fi
	done
	die "$name not found: run 'go tool task deps' first"
}

# pick_port NAME ENVVAR DEFAULT: the port to start NAME on.
pick_port() {
	local name=$1 var=$2 def=$3 p
	if [ -n "${!var:-}" ]; then
		p=${!var}
		[[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "$var=$p is not a port"
		listening "$p" && die "$name: port $p ($var) is taken by $(holder "$p"); choose another $var"
		echo "$p"
		return
	fi
	for ((p = def; p < def + 20; p++)); do
		if ! listening "$p"; then
			[ "$p" -ne "$def" ] &&
				warn "$name port $def is taken by $(holder "$def") (a system $name?); using $p. Set $var to choose."
			echo "$p"
			return
		fi
	done
	die "$name: ports $def-$((def + 19)) are all taken; set $var to a free port"
}

# check_port NAME ENVVAR RUNNING_PORT: a server of ours already runs; refuse
# when the environment asks for a different port.
check_port() {
	local name=$1 var=$2 running=$3
	if [ -n "${!var:-}" ] && [ "${!var}" != "$running" ]; then
		die "$name already runs on port $running, but $var=${!var}: run 'go tool task services:stop' first"
	fi
}

# ---- Redis

R_DIR=$DATA/redis
R_PID=$R_DIR/redis.pid
R_LOG=$R_DIR/redis.log

# running NAME PIDFILE WORD VAR PING: true when NAME runs from an earlier
# start (on the port it was started on, which must still be the one VAR
# asks for, and answering PING); false, with a stale pid file gone, when not.
running() {
	local name=$1 pidfile=$2 word=$3 var=$4 ping=$5 port
	if ! alive "$pidfile" "$word"; then
		rm -f "$pidfile"
		return 1
	fi
	port=$(cat "$(dirname "$pidfile")/port")
	check_port "$name" "$var" "$port"
	"$ping" "$port" || die "$word (pid $(cat "$pidfile")) runs but does not answer on port $port"
	say "$word already running on 127.0.0.1:$port"
}

# await NAME PIDFILE WORD PING PORT SECONDS LOG...: wait until PING answers on
# PORT; stop with the LOGs' tails when the server exits or SECONDS pass.
await() {
	local name=$1 pidfile=$2 word=$3 ping=$4 port=$5 secs=$6 i
	shift 6
	for ((i = 0; i < secs * 10; i++)); do
		"$ping" "$port" && return 0
		# redis-server --daemonize writes its pid file a moment after start.
		if [ "$i" -gt 5 ] && ! alive "$pidfile" "$word"; then
			tail_log "$@"
			die "$name exited during start"
		fi
		sleep 0.1
	done
	tail_log "$@"
	die "$name does not answer on port $port after ${secs}s"
}

redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

redis_start() {
	local port server
	running Redis "$R_PID" redis-server CERTFLEET_REDIS_PORT redis_ping && return
	server=$(bin redis-server)
	bin redis-cli >/dev/null
	port=$(pick_port Redis CERTFLEET_REDIS_PORT 6379)
	mkdir -p "$R_DIR"
	echo "$port" >"$R_DIR/port"
	# Append-only persistence keeps registered domains across restarts;
	# the C locale, as Lua's string order must be the bytes'
	# (docs/operations.md, "Redis settings").
	LC_ALL=C "$server" --port "$port" --bind 127.0.0.1 --dir "$R_DIR" \
		--daemonize yes --pidfile "$R_PID" --logfile "$R_LOG" \
		--appendonly yes --save "" >/dev/null ||
		{ tail_log "$R_LOG"; die "redis-server did not start"; }
	await redis-server "$R_PID" redis-server redis_ping "$port" 10 "$R_LOG"
	say "redis started on 127.0.0.1:$port (pid $(cat "$R_PID"), log $(rel "$R_LOG"))"
}

# ---- ClickHouse

C_DIR=$DATA/clickhouse
C_PID=$C_DIR/clickhouse-server.pid
C_LOG=$C_DIR/clickhouse-server.log
C_ERR=$C_DIR/clickhouse-server.err.log

ch_ping() { clickhouse-client --host 127.0.0.1 --port "$1" -q 'SELECT 1' >/dev/null 2>&1; }

ch_start() {
	local port server f esc
	running ClickHouse "$C_PID" clickhouse CERTFLEET_CLICKHOUSE_PORT ch_ping && return
	server=$(bin clickhouse-server)
	bin clickhouse-client >/dev/null
	port=$(pick_port ClickHouse CERTFLEET_CLICKHOUSE_PORT 9000)
	mkdir -p "$C_DIR"
	echo "$port" >"$C_DIR/port"
	esc=$(printf '%s' "$C_DIR" | sed 's/[\\|&]/\\&/g')
	for f in config.xml users.xml; do
		sed -e "s|@DIR@|$esc|g" -e "s|@PORT@|$port|g" "$ROOT/scripts/clickhouse/$f" >"$C_DIR/$f"
	done
	# Only this run's messages, so a failure shows its own cause.
	: >"$C_ERR"
	# Not --daemon: a daemonized 18.16 loses the messages of a failed start,
	# so it runs in its own session with its output in stdout.log.
	# (18.16 writes --pid-file only with --daemon, so the pid file is ours.)
	setsid "$server" --config-file="$C_DIR/config.xml" \
		</dev/null >"$C_DIR/stdout.log" 2>&1 &
	echo "$!" >"$C_PID"
	await clickhouse-server "$C_PID" clickhouse ch_ping "$port" 60 "$C_DIR/stdout.log" "$C_ERR"
	say "clickhouse started on 127.0.0.1:$port (pid $(cat "$C_PID"), log $(rel "$C_LOG"))"
}

# ---- stop and status

# stop_one NAME PIDFILE WORD: TERM, up to 30s for a clean shutdown, then KILL.
stop_one() {
	local name=$1 pidfile=$2 word=$3
	if ! alive "$pidfile" "$word"; then
		rm -f "$pidfile"
		say "$name not running"
		return
	fi
	stop_pid "$name" "$(cat "$pidfile")" 30
	rm -f "$pidfile"
	say "$name stopped"
}

status_one() {
	local name=$1 pidfile=$2 word=$3 dir=$4
	if alive "$pidfile" "$word"; then
		say "$name running on 127.0.0.1:$(cat "$dir/port") (pid $(cat "$pidfile"))"
		return 0
	fi
	say "$name stopped"
	return 1
}

write_env() {
	mkdir -p "$DATA"
	cat >"$ENV_FILE.tmp" <<EOF
CERTFLEET_REDIS_URL=redis://127.0.0.1:$(cat "$R_DIR/port")/0
CERTFLEET_CLICKHOUSE_DSN=clickhouse://127.0.0.1:$(cat "$C_DIR/port")/certfleet
EOF
	mv "$ENV_FILE.tmp" "$ENV_FILE"
}

case "${1:-}" in
start)
	redis_start
	ch_start
	write_env
	;;
stop)
	stop_one clickhouse "$C_PID" clickhouse
	stop_one redis "$R_PID" redis-server
	rm -f "$ENV_FILE"
	;;
status)
	rc=0
	status_one redis "$R_PID" redis-server "$R_DIR" || rc=3
	status_one clickhouse "$C_PID" clickhouse "$C_DIR" || rc=3
	exit "$rc"
	;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
