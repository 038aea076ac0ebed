# shellcheck shell=bash
#
# .ci/services.sh — install, start and verify the external services that the
# Stream Relay tests need. Meant to be SOURCED (by .ci/run or by a developer):
#
#     source .ci/services.sh
#     install_packages      # apt: redis-server clickhouse-server clickhouse-client prometheus
#                           #      chromium (headless, for the realtime-browser example's test)
#     start_redis           # 127.0.0.1:6390, no persistence
#     start_clickhouse      # 127.0.0.1:9001 (native), 127.0.0.1:8124 (http), ClickHouse 18.16
#     find_prometheus       # binaries only; tests start their own Prometheus
#     install_go_tools      # staticcheck, benchstat into $(go env GOPATH)/bin, on PATH
#   or simply:  start_all_services   (all five, in that order)
#
# Every function is idempotent (fast when the work is already done), safe under
# `set -euo pipefail`, logs with a timestamp to stderr and returns non-zero with
# an "ERROR:" line when something does not work.
#
# Exported for the tests:
#   RELAY_TEST_REDIS_ADDR            127.0.0.1:6390   shared Redis (no persistence)
#   RELAY_TEST_REDIS_SERVER          path of redis-server, for tests that need their
#                                    own killable Redis: start it with
#                                    --port N --bind 127.0.0.1 --save "" --appendonly no --dir TMP
#   RELAY_TEST_REDIS_CLI             path of redis-cli
#   RELAY_TEST_CLICKHOUSE_ADDR       127.0.0.1:9001   native protocol (clickhouse-go/v2)
#   RELAY_TEST_CLICKHOUSE_HTTP_ADDR  127.0.0.1:8124
#   RELAY_TEST_CLICKHOUSE_SERVER     path of clickhouse-server
#   RELAY_TEST_CLICKHOUSE_CLIENT     path of clickhouse-client
#   RELAY_TEST_CLICKHOUSE_CONFIG     config.xml of the shared server
#   RELAY_TEST_CLICKHOUSE_PIDFILE    its pid file (kill `cat` it to stop it)
#   RELAY_TEST_PROMETHEUS_BIN        path of prometheus (2.42 from Debian)
#   RELAY_TEST_PROMTOOL_BIN          path of promtool
#   PATH                             gets $(go env GOPATH)/bin prepended
#
# Knobs (environment, all optional):
#   RELAY_CI_DIR (/tmp/relay-ci)  state: pid files, logs, ClickHouse data
#   RELAY_CI_REDIS_PORT (6390)
#   RELAY_CI_CH_TCP_PORT (9001)  RELAY_CI_CH_HTTP_PORT (8124)  RELAY_CI_CH_INTERSERVER_PORT (9019)
#   RELAY_CI_STATICCHECK_VERSION (v0.8.2)  RELAY_CI_BENCHSTAT_VERSION (pinned pseudo-version)
#   In CI (CI set to anything but "", "false" or "0", the tests' rule too)
#   and when the shared ClickHouse is not already running, its data
#   directory is wiped before it starts, so CI always begins with empty tables.

: "${RELAY_CI_DIR:=/tmp/relay-ci}"
: "${RELAY_CI_REDIS_PORT:=6390}"
: "${RELAY_CI_CH_TCP_PORT:=9001}"
: "${RELAY_CI_CH_HTTP_PORT:=8124}"
: "${RELAY_CI_CH_INTERSERVER_PORT:=9019}"
: "${RELAY_CI_STATICCHECK_VERSION:=v0.8.2}"
: "${RELAY_CI_BENCHSTAT_VERSION:=v0.0.0-20260908200009-22c9c6c9d4da}"

# chromium: the realtime-browser example's test drives it headless (about
# 35 s to install with --no-install-recommends).
RELAY_CI_APT_PACKAGES=(redis-server clickhouse-server clickhouse-client prometheus chromium)

# ---------------------------------------------------------------- helpers ---

_svc_log() { printf '%s [services] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
_svc_err() { _svc_log "ERROR: $*"; }

# Microseconds since the epoch (bash 5 EPOCHREALTIME, locale-proof).
_svc_now_us() { local t=${EPOCHREALTIME//[.,]/}; printf '%s' "$((10#$t))"; }
# Seconds (with ms) since a _svc_now_us value.
_svc_since() {
	local d=$(($(_svc_now_us) - $1))
	printf '%d.%03ds' "$((d / 1000000))" "$(((d % 1000000) / 1000))"
}

# _svc_bin NAME [FALLBACK...]: absolute path of a program (also looks in /usr/sbin).
_svc_bin() {
	local name=$1 p
	p=$(command -v "$name" 2>/dev/null) && { printf '%s' "$p"; return 0; }
	for p in "/usr/sbin/$name" "/usr/bin/$name" "/usr/local/bin/$name"; do
		[[ -x $p ]] && { printf '%s' "$p"; return 0; }
	done
	return 1
}

# _svc_proc_alive PID: true for a live process. A killed daemon can stay a
# zombie for a while here (init does not reap at once) and kill -0 still
# succeeds on a zombie, so look at its state too.
_svc_proc_alive() {
	local state
	[[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 1
	state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]]
}

# _svc_pid_alive PIDFILE: true when the pid file names a live process.
_svc_pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(tr -dc '0-9' <"$1")
	_svc_proc_alive "$pid"
}

# _svc_http_ok HOST PORT PATH: true when GET answers 200 (bash /dev/tcp, no curl needed).
_svc_http_ok() {
	(
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
		IFS= read -r -t 3 line <&3 || exit 1
		[[ $line == HTTP/*" 200"* ]]
	) 2>/dev/null
}

# _svc_port_open HOST PORT: true when something accepts TCP connections there.
_svc_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ------------------------------------------------------------ install_packages

_svc_packages_installed() {
	local pkg status
	for pkg in "${RELAY_CI_APT_PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || return 1
		[[ $status == "install ok installed" ]] || return 1
	done
	local b
	for b in redis-server redis-cli clickhouse-server clickhouse-client prometheus promtool chromium; do
		_svc_bin "$b" >/dev/null || return 1
	done
}

install_packages() {
	local t0 updated=0
	t0=$(_svc_now_us)
	if _svc_packages_installed; then
		_svc_log "install_packages: ${RELAY_CI_APT_PACKAGES[*]} already installed"
		return 0
	fi
	if [[ $(id -u) != 0 ]]; then
		_svc_err "install_packages: need root for apt-get (packages missing: ${RELAY_CI_APT_PACKAGES[*]})"
		return 1
	fi
	local -a apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
	# Refresh the lists only when apt does not know the packages (fresh machine).
	local pkg cand need_update=0
	for pkg in "${RELAY_CI_APT_PACKAGES[@]}"; do
		cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
		if [[ -z $cand || $cand == "(none)" ]]; then need_update=1; fi
	done
	if ((need_update)); then
		_svc_log "install_packages: apt-get update"
		apt-get "${apt_opts[@]}" update >&2 || { _svc_err "install_packages: apt-get update failed"; return 1; }
		updated=1
	fi
	_svc_log "install_packages: apt-get install ${RELAY_CI_APT_PACKAGES[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends \
		"${RELAY_CI_APT_PACKAGES[@]}" >&2; then
		# Stale lists give 404s for superseded versions: refresh once and retry.
		if ((updated)); then
			_svc_err "install_packages: apt-get install failed"
			return 1
		fi
		_svc_log "install_packages: install failed; apt-get update and retry"
		apt-get "${apt_opts[@]}" update >&2 || { _svc_err "install_packages: apt-get update failed"; return 1; }
		DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends \
			"${RELAY_CI_APT_PACKAGES[@]}" >&2 || { _svc_err "install_packages: apt-get install failed"; return 1; }
	fi
	if ! _svc_packages_installed; then
		_svc_err "install_packages: packages report installed but a binary is missing"
		return 1
	fi
	_svc_log "install_packages: done in $(_svc_since "$t0")"
}

# ----------------------------------------------------------------- redis ---

_svc_redis_ping() {
	[[ $(timeout 2 "$1" -h 127.0.0.1 -p "$2" ping 2>/dev/null) == PONG ]]
}

start_redis() {
	local t0 server cli dir port=$RELAY_CI_REDIS_PORT i
	t0=$(_svc_now_us)
	server=$(_svc_bin redis-server) || { _svc_err "start_redis: redis-server not found (run install_packages)"; return 1; }
	cli=$(_svc_bin redis-cli) || { _svc_err "start_redis: redis-cli not found (run install_packages)"; return 1; }
	dir=$RELAY_CI_DIR/redis
	export RELAY_TEST_REDIS_ADDR=127.0.0.1:$port
	export RELAY_TEST_REDIS_SERVER=$server
	export RELAY_TEST_REDIS_CLI=$cli

	if _svc_redis_ping "$cli" "$port"; then
		if _svc_pid_alive "$dir/redis.pid"; then
			_svc_log "start_redis: already running on 127.0.0.1:$port (pid $(cat "$dir/redis.pid"))"
		else
			_svc_log "start_redis: WARNING: a Redis not started by this script answers on 127.0.0.1:$port; using it"
		fi
		return 0
	fi
	if _svc_port_open 127.0.0.1 "$port"; then
		_svc_err "start_redis: port $port is taken by something that does not answer PING"
		return 1
	fi
	mkdir -p "$dir" || { _svc_err "start_redis: cannot create $dir"; return 1; }
	rm -f "$dir/redis.pid"
	_svc_log "start_redis: starting $server on 127.0.0.1:$port"
	"$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
		--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
		>&2 || { _svc_err "start_redis: redis-server failed to start (log: $dir/redis.log)"; tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true; return 1; }
	for ((i = 0; i < 100; i++)); do
		if _svc_redis_ping "$cli" "$port"; then
			_svc_log "start_redis: PONG from 127.0.0.1:$port after $(_svc_since "$t0")"
			return 0
		fi
		sleep 0.1
	done
	_svc_err "start_redis: no PONG from 127.0.0.1:$port within 10s (log: $dir/redis.log)"
	tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
	return 1
}

stop_redis() {
	local pidfile=$RELAY_CI_DIR/redis/redis.pid
	_svc_pid_alive "$pidfile" || return 0
	_svc_log "stop_redis: stopping pid $(cat "$pidfile")"
	_svc_stop_pid "$pidfile"
}

# ------------------------------------------------------------ clickhouse ---

# Write the override that moves paths and ports of the stock Debian config.
_svc_clickhouse_override() {
	local dir=$1
	cat <<EOF
<?xml version="1.0"?>
<!-- Generated by .ci/services.sh: moves the Debian config's paths and ports. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$RELAY_CI_CH_TCP_PORT</tcp_port>
    <http_port>$RELAY_CI_CH_HTTP_PORT</http_port>
    <interserver_http_port>$RELAY_CI_CH_INTERSERVER_PORT</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/data/tmp/</tmp_path>
    <user_files_path>$dir/data/user_files/</user_files_path>
    <format_schema_path>$dir/data/format_schemas/</format_schema_path>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
EOF
}

_svc_clickhouse_ok() {
	timeout 5 "$1" --host 127.0.0.1 --port "$2" --connect_timeout=2 --receive_timeout=3 --send_timeout=3 \
		--query "SELECT 1" >/dev/null 2>&1
}

start_clickhouse() {
	local t0 server client dir cfg pidfile i port=$RELAY_CI_CH_TCP_PORT
	t0=$(_svc_now_us)
	server=$(_svc_bin clickhouse-server) || { _svc_err "start_clickhouse: clickhouse-server not found (run install_packages)"; return 1; }
	client=$(_svc_bin clickhouse-client) || { _svc_err "start_clickhouse: clickhouse-client not found (run install_packages)"; return 1; }
	dir=$RELAY_CI_DIR/clickhouse
	cfg=$dir/etc/config.xml
	pidfile=$dir/clickhouse-server.pid
	export RELAY_TEST_CLICKHOUSE_ADDR=127.0.0.1:$port
	export RELAY_TEST_CLICKHOUSE_HTTP_ADDR=127.0.0.1:$RELAY_CI_CH_HTTP_PORT
	export RELAY_TEST_CLICKHOUSE_SERVER=$server
	export RELAY_TEST_CLICKHOUSE_CLIENT=$client
	export RELAY_TEST_CLICKHOUSE_CONFIG=$cfg
	export RELAY_TEST_CLICKHOUSE_PIDFILE=$pidfile

	if _svc_clickhouse_ok "$client" "$port"; then
		if _svc_pid_alive "$pidfile"; then
			_svc_log "start_clickhouse: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
		else
			_svc_log "start_clickhouse: WARNING: a ClickHouse not started by this script answers on 127.0.0.1:$port; using it"
		fi
		return 0
	fi
	if _svc_pid_alive "$pidfile"; then
		# Started but not answering yet (or hung): give it the normal wait below.
		_svc_log "start_clickhouse: pid $(cat "$pidfile") exists but does not answer yet; waiting"
	else
		local p
		for p in "$port" "$RELAY_CI_CH_HTTP_PORT" "$RELAY_CI_CH_INTERSERVER_PORT"; do
			if _svc_port_open 127.0.0.1 "$p"; then
				_svc_err "start_clickhouse: port $p is already taken by another process"
				return 1
			fi
		done
		[[ -f /etc/clickhouse-server/config.xml && -f /etc/clickhouse-server/users.xml ]] ||
			{ _svc_err "start_clickhouse: /etc/clickhouse-server/{config,users}.xml missing"; return 1; }
		if [[ ${CI:-false} != false && ${CI:-false} != 0 && -d $dir/data ]]; then
			_svc_log "start_clickhouse: CI=$CI: wiping old data dir $dir/data"
			rm -rf "$dir/data"
		fi
		mkdir -p "$dir/etc/config.d" "$dir/data" "$dir/log" ||
			{ _svc_err "start_clickhouse: cannot create $dir"; return 1; }
		cp /etc/clickhouse-server/config.xml /etc/clickhouse-server/users.xml "$dir/etc/" ||
			{ _svc_err "start_clickhouse: cannot copy the Debian config"; return 1; }
		# The Debian config points at /var/lib/clickhouse and /var/log/clickhouse-server;
		# rewrite those in the copy too (belt and braces: config.d overrides them as well).
		sed -i -e "s#/var/lib/clickhouse/#$dir/data/#g" \
			-e "s#/var/log/clickhouse-server/#$dir/log/#g" "$cfg" ||
			{ _svc_err "start_clickhouse: cannot rewrite $cfg"; return 1; }
		_svc_clickhouse_override "$dir" >"$dir/etc/config.d/relay-ci.xml" ||
			{ _svc_err "start_clickhouse: cannot write config override"; return 1; }
		rm -f "$pidfile"
		_svc_log "start_clickhouse: starting $server --config-file=$cfg on 127.0.0.1:$port"
		# Runs fine as root; --daemon forks and the parent returns at once.
		(cd "$dir" && exec "$server" --config-file="$cfg" --pid-file="$pidfile" --daemon) >>"$dir/log/stdout.log" 2>&1 ||
			{ _svc_err "start_clickhouse: clickhouse-server --daemon failed"; tail -n 20 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true; return 1; }
	fi
	for ((i = 0; i < 300; i++)); do
		if _svc_clickhouse_ok "$client" "$port"; then
			_svc_log "start_clickhouse: SELECT 1 ok on 127.0.0.1:$port ($(timeout 5 "$client" --host 127.0.0.1 --port "$port" --query 'SELECT version()' 2>/dev/null || true)) after $(_svc_since "$t0")"
			return 0
		fi
		# pid file is written right after the fork; once it exists, a dead pid means a failed start.
		if ((i >= 20)) && ! _svc_pid_alive "$pidfile"; then
			break
		fi
		sleep 0.1
	done
	_svc_err "start_clickhouse: server on 127.0.0.1:$port did not answer SELECT 1 (logs: $dir/log)"
	tail -n 30 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
	return 1
}

stop_clickhouse() {
	local pidfile=$RELAY_CI_DIR/clickhouse/clickhouse-server.pid
	_svc_pid_alive "$pidfile" || return 0
	_svc_log "stop_clickhouse: stopping pid $(cat "$pidfile")"
	_svc_stop_pid "$pidfile"
}

# _svc_stop_pid PIDFILE: SIGTERM, wait up to 15s, then SIGKILL.
_svc_stop_pid() {
	local pid i
	pid=$(tr -dc '0-9' <"$1")
	[[ -n $pid ]] || return 0
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		_svc_proc_alive "$pid" || { rm -f "$1"; return 0; }
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$1"
}

# ------------------------------------------------------------ prometheus ---

find_prometheus() {
	local t0 prom promtool dir marker port p
	t0=$(_svc_now_us)
	prom=$(_svc_bin prometheus) || { _svc_err "find_prometheus: prometheus not found (run install_packages)"; return 1; }
	promtool=$(_svc_bin promtool) || { _svc_err "find_prometheus: promtool not found (run install_packages)"; return 1; }
	local pv tv
	pv=$("$prom" --version 2>&1) || { _svc_err "find_prometheus: '$prom --version' failed: $pv"; return 1; }
	tv=$("$promtool" --version 2>&1) || { _svc_err "find_prometheus: '$promtool --version' failed: $tv"; return 1; }
	pv=${pv%%$'\n'*} tv=${tv%%$'\n'*}
	export RELAY_TEST_PROMETHEUS_BIN=$prom
	export RELAY_TEST_PROMTOOL_BIN=$promtool

	# Once per installed version: prove a test can start it as root on its own port.
	mkdir -p "$RELAY_CI_DIR" || { _svc_err "find_prometheus: cannot create $RELAY_CI_DIR"; return 1; }
	marker=$RELAY_CI_DIR/prometheus.verified
	if [[ -f $marker && $(cat "$marker") == "$pv" ]]; then
		_svc_log "find_prometheus: $pv (start check already passed)"
		return 0
	fi
	dir=$(mktemp -d "$RELAY_CI_DIR/prom-check.XXXXXX") || { _svc_err "find_prometheus: mktemp failed"; return 1; }
	printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$dir/prometheus.yml"
	"$promtool" check config "$dir/prometheus.yml" >/dev/null 2>&1 ||
		{ _svc_err "find_prometheus: promtool check config failed"; "$promtool" check config "$dir/prometheus.yml" >&2; return 1; }
	port=
	for ((p = 19090; p < 19190; p++)); do
		_svc_port_open 127.0.0.1 "$p" || { port=$p; break; }
	done
	[[ -n $port ]] || { _svc_err "find_prometheus: no free port in 19090-19189"; return 1; }
	"$prom" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
	local ppid=$! ok=0 i
	for ((i = 0; i < 100; i++)); do
		if _svc_http_ok 127.0.0.1 "$port" /-/ready; then ok=1; break; fi
		kill -0 "$ppid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$ppid" 2>/dev/null || true
	wait "$ppid" 2>/dev/null || true
	if ((!ok)); then
		_svc_err "find_prometheus: test Prometheus on 127.0.0.1:$port never answered /-/ready"
		tail -n 20 "$dir/prometheus.log" >&2 || true
		return 1
	fi
	rm -rf "$dir"
	printf '%s' "$pv" >"$marker"
	_svc_log "find_prometheus: $pv; $tv; start check passed in $(_svc_since "$t0")"
}

# --------------------------------------------------------------- go tools ---

# _svc_go_tool_has BIN MODULE VERSION: true when BIN was built from MODULE@VERSION.
_svc_go_tool_has() {
	[[ -x $1 ]] || return 1
	go version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '$1 == "mod" && $2 == m && $3 == v {f = 1} END {exit !f}'
}

install_go_tools() {
	local t0 gobin
	t0=$(_svc_now_us)
	command -v go >/dev/null 2>&1 || { [[ -x /usr/local/go/bin/go ]] && export PATH=/usr/local/go/bin:$PATH; }
	command -v go >/dev/null 2>&1 || { _svc_err "install_go_tools: go not found"; return 1; }
	gobin=$(go env GOBIN) || { _svc_err "install_go_tools: go env failed"; return 1; }
	if [[ -z $gobin ]]; then
		gobin=$(go env GOPATH) || { _svc_err "install_go_tools: go env GOPATH failed"; return 1; }
		gobin=${gobin%%:*}/bin
	fi
	case ":$PATH:" in *":$gobin:"*) ;; *) export PATH=$gobin:$PATH ;; esac

	local -a tools=(
		"staticcheck honnef.co/go/tools cmd/staticcheck $RELAY_CI_STATICCHECK_VERSION"
		"benchstat golang.org/x/perf cmd/benchstat $RELAY_CI_BENCHSTAT_VERSION"
	)
	local entry name mod sub ver
	for entry in "${tools[@]}"; do
		read -r name mod sub ver <<<"$entry"
		if _svc_go_tool_has "$gobin/$name" "$mod" "$ver"; then
			_svc_log "install_go_tools: $name $ver already in $gobin"
			continue
		fi
		_svc_log "install_go_tools: go install $mod/$sub@$ver"
		(cd / && go install "$mod/$sub@$ver") >&2 ||
			{ _svc_err "install_go_tools: go install $mod/$sub@$ver failed"; return 1; }
		_svc_go_tool_has "$gobin/$name" "$mod" "$ver" ||
			{ _svc_err "install_go_tools: $gobin/$name is not $mod@$ver after install"; return 1; }
	done
	local v
	v=$("$gobin/staticcheck" -version 2>&1) || { _svc_err "install_go_tools: staticcheck -version failed: $v"; return 1; }
	"$gobin/benchstat" -h >/dev/null 2>&1 || { _svc_err "install_go_tools: benchstat does not run"; return 1; }
	_svc_log "install_go_tools: $v; benchstat $RELAY_CI_BENCHSTAT_VERSION; $gobin on PATH ($(_svc_since "$t0"))"
}

# ---------------------------------------------------------------- all ---

start_all_services() {
	install_packages || return 1
	start_redis || return 1
	start_clickhouse || return 1
	find_prometheus || return 1
	install_go_tools || return 1
}

stop_services() {
	stop_redis || true
	stop_clickhouse || true
}
