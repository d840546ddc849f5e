# Helpers shared by scripts/services.sh and scripts/run.sh; sourced, not run.
# The caller sets ROOT (the repository) and NAME (the prefix of messages).

die() { echo "$NAME: $*" >&2; exit 1; }
say() { echo "$NAME: $*"; }
warn() { echo "$NAME: warning: $*" >&2; }

# rel PATH: PATH relative to the repository, for messages.
rel() { echo "${1#"$ROOT"/}"; }

# alive PIDFILE WORD: the pid in PIDFILE is a live process whose command line
# contains WORD, so a pid reused by another program does not count.
alive() {
	local pid
	[ -s "$1" ] || return 1
	pid=$(cat "$1" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# stop_pid NAME PID [SECONDS]: SIGTERM, then SIGKILL if PID has not exited
# after SECONDS (default 30).
stop_pid() {
	local name=$1 pid=$2 secs=${3:-30} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		# A zombie child has exited; the caller's wait reaps it.
		[ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && return 0
		sleep 0.1
	done
	warn "$name (pid $pid) did not stop in ${secs}s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

# listening PORT: something listens on PORT on any local address, which a
# bind to 127.0.0.1:PORT would collide with, or accepts connections there.
listening() {
	if command -v ss >/dev/null 2>&1; then
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
	fi
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# holder PORT: which program listens on PORT, as far as ss can tell.
holder() {
	local who=""
	if command -v ss >/dev/null 2>&1; then
		who=$(ss -Hltnp "sport = :$1" 2>/dev/null |
			sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1)
	fi
	echo "${who:-an unknown program}"
}

# tail_log FILE...: the last lines of each non-empty FILE, to stderr.
tail_log() {
	local f
	for f in "$@"; do
		[ -s "$f" ] || continue
		echo "--- last lines of $(rel "$f"):" >&2
		tail -n 25 "$f" >&2
	done
}
