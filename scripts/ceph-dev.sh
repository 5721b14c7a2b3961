#!/usr/bin/env bash
# ceph-dev.sh - throwaway single-node Ceph cluster for Hypercore development and tests.
#
# Usage: scripts/ceph-dev.sh up|down|status|purge [--dir DIR] [--memory] [--mgr] [--timeout SEC]
#
# One monitor (mon.a), one OSD (osd.0), optionally one manager (mgr.x), all bound to
# 127.0.0.1 (or $HYPERCORE_CEPH_ADDR), auth "none", every file (conf, data, logs, pidfiles, admin sockets) under DIR.
# No cephadm, no systemd, nothing under /etc/ceph or /var/lib/ceph.
#
#   up      create (first time) or restart the cluster, make sure pool "vm-pool" exists and
#           that an RBD image can really be created and deleted; idempotent. The LAST line on
#           stdout is the path of ceph.conf, so `conf=$(scripts/ceph-dev.sh up | tail -n1)`.
#   down    stop the daemons of DIR (by their pidfiles only). --memory clusters lose their data.
#   status  one line per daemon, then health and pools; exit 0 if usable, 1 otherwise.
#   purge   down, then delete DIR (only if it carries this script's marker file).
#
# Options:
#   --dir DIR      state directory (default: $HYPERCORE_CEPH_DIR, else
#                  ${HYPERCORE_HOME:-$HOME/.hypercore}/ceph)
#   --memory       OSD on memstore (RAM only; data gone after `down`); for tests.
#                  Default: bluestore on a sparse file DIR/osd.0/block (persists across down/up).
#   --mgr          also run ceph-mgr (not needed for RBD; needed for `ceph -s` pool/usage stats).
#   --timeout SEC  how long `up` waits for a working cluster (default 90, or $HYPERCORE_CEPH_TIMEOUT).
#
# Environment:
#   HYPERCORE_CEPH_PORT   monitor port (msgr2) for a NEW cluster (default 3300); give a test
#                         cluster a different one so it can run beside a dev cluster.
#                         An existing DIR keeps the port it was created with.
#   HYPERCORE_CEPH_ADDR   the IPv4 address a NEW cluster's daemons bind to (default
#                         127.0.0.1): another one (a bridge's) lets network namespaces
#                         reach it. An existing DIR keeps the address it was created with.
#
# All messages go to stderr; only `up` prints (the conf path) and `status` prints (its report)
# on stdout.

set -euo pipefail

PROG="ceph-dev"
MARKER_NAME=".hypercore-ceph-dev"
POOL="vm-pool"
POOL_PGS=8
MON_ID="a"
OSD_ID="0"
MGR_ID="x"
DEFAULT_PORT=3300
ADDR="${HYPERCORE_CEPH_ADDR:-127.0.0.1}"
[[ "$ADDR" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || { echo "ceph-dev: error: HYPERCORE_CEPH_ADDR must be an IPv4 address" >&2; exit 2; }
STOP_TIMEOUT="${HYPERCORE_CEPH_STOP_TIMEOUT:-30}"
# Client-side timeouts for every CLI call made by this script (seconds).
CONNECT_TIMEOUT=5
OP_TIMEOUT=10
CLI_TIMEOUT=20

# Do not let the caller's environment redirect our CLI calls to another cluster.
unset CEPH_ARGS CEPH_CONF

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {  # the header comment above
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}
short_usage() {
    echo "usage: $0 up|down|status|purge [--dir DIR] [--memory] [--mgr] [--timeout SEC]  (--help)" >&2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- arguments

CMD=""
DIR=""
MEMORY=0
WITH_MGR=0
UP_TIMEOUT="${HYPERCORE_CEPH_TIMEOUT:-90}"

while [ $# -gt 0 ]; do
    case "$1" in
        up|down|status|purge)
            [ -z "$CMD" ] || die "only one command allowed (got '$CMD' and '$1')"
            CMD="$1" ;;
        --dir) [ $# -ge 2 ] || die "--dir needs an argument"; DIR="$2"; shift ;;
        --dir=*) DIR="${1#--dir=}" ;;
        --memory) MEMORY=1 ;;
        --mgr) WITH_MGR=1 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs an argument"; UP_TIMEOUT="$2"; shift ;;
        --timeout=*) UP_TIMEOUT="${1#--timeout=}" ;;
        -h|--help|help) usage; exit 0 ;;
        *) short_usage; die "unknown argument: $1" ;;
    esac
    shift
done
[ -n "$CMD" ] || { short_usage; exit 2; }
[[ "$UP_TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a whole number of seconds"

if [ -z "$DIR" ]; then
    DIR="${HYPERCORE_CEPH_DIR:-${HYPERCORE_HOME:-$HOME/.hypercore}/ceph}"
fi
DIR="$(realpath -m -- "$DIR")"
# ':' separates options in QEMU's rbd: filenames, whitespace/'#'/';'/'=' break ceph.conf values.
case "$DIR" in
    *[[:space:]:\;#=,]*) die "DIR must not contain whitespace or any of : ; # = , ($DIR)" ;;
    /) die "refusing to use / as DIR" ;;
esac

CONF="$DIR/ceph.conf"
MARKER="$DIR/$MARKER_NAME"
RUN="$DIR/run"
LOGDIR="$DIR/log"

for tool in ceph ceph-mon ceph-osd monmaptool rbd timeout flock; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install -y ceph-mon ceph-osd ceph-common coreutils util-linux)"
done

# ---------------------------------------------------------------- helpers

marker_get() {  # marker_get KEY -> value ('' if missing)
    [ -f "$MARKER" ] || return 0
    sed -n "s/^$1=//p" "$MARKER" | tail -n1
}

marker_set() {  # marker_set KEY VALUE
    local tmp="$MARKER.tmp"
    {
        if [ -f "$MARKER" ]; then grep -v "^$1=" "$MARKER" || true; fi
        printf '%s=%s\n' "$1" "$2"
    } >"$tmp"
    mv -f "$tmp" "$MARKER"
}

conf_port() {  # port the existing ceph.conf points at
    sed -n 's/^[[:space:]]*mon_host[[:space:]]*=.*v2:[0-9.]*:\([0-9]*\).*/\1/p' "$CONF" 2>/dev/null | head -n1
}

conf_addr() {  # address the existing ceph.conf's monitor binds to
    sed -n 's/^[[:space:]]*mon_host[[:space:]]*=.*v2:\([0-9.]*\):[0-9]*.*/\1/p' "$CONF" 2>/dev/null | head -n1
}

# Every CLI call: our conf, a connect timeout, op timeouts, and a hard wall-clock limit
# (CLI_TIMEOUT, shortened to what is left of `up`'s overall deadline).
cli_t() {
    local t="$CLI_TIMEOUT" left
    if [ -n "${DEADLINE:-}" ]; then
        left=$((DEADLINE - SECONDS))
        [ "$left" -ge 2 ] || left=2
        [ "$left" -ge "$t" ] || t="$left"
    fi
    echo "$t"
}
ceph_() {
    timeout -k 3 "$(cli_t)" ceph -c "$CONF" --connect-timeout "$CONNECT_TIMEOUT" \
        --rados_mon_op_timeout "$OP_TIMEOUT" --rados_osd_op_timeout "$OP_TIMEOUT" "$@"
}
rbd_() {
    timeout -k 3 "$(cli_t)" rbd -c "$CONF" --client_mount_timeout "$CONNECT_TIMEOUT" \
        --rados_mon_op_timeout "$OP_TIMEOUT" --rados_osd_op_timeout "$OP_TIMEOUT" "$@"
}

pidfile_of() { echo "$RUN/$1.pid"; }

# pid_alive PID: alive and not a zombie (daemonised processes are reparented to PID 1, which
# in containers/VMs may reap late, so `kill -0` alone would report an exited daemon as alive).
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        local stat
        stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
        stat="${stat##*) }"
        [ "${stat%% *}" != Z ] || return 1
    fi
    return 0
}

# daemon_pid NAME -> prints pid and returns 0 iff the pidfile names a live ceph daemon that
# was started with OUR conf (guards against pid reuse and against other clusters).
daemon_pid() {
    local name="$1" pf pid type="${1%%.*}"
    pf="$(pidfile_of "$name")"
    [ -f "$pf" ] || return 1
    pid="$(tr -dc '0-9' <"$pf" 2>/dev/null || true)"
    [ -n "$pid" ] || return 1
    pid_alive "$pid" || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        local cmd
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        case "$cmd" in
            *ceph-"$type"*"$CONF"*) ;;
            *) return 1 ;;
        esac
    fi
    echo "$pid"
}

is_running() { daemon_pid "$1" >/dev/null; }

any_running() {
    local d
    for d in "mgr.$MGR_ID" "osd.$OSD_ID" "mon.$MON_ID"; do is_running "$d" && return 0; done
    return 1
}

log_tail() {  # last lines of each daemon log (the cluster log ceph.log is left out: noisy)
    local f
    for f in "$LOGDIR/ceph-mon.$MON_ID.log" "$LOGDIR/ceph-osd.$OSD_ID.log" \
             "$LOGDIR/ceph-mgr.$MGR_ID.log" "$LOGDIR/startup.log"; do
        [ -s "$f" ] || continue
        printf -- '----- last lines of %s -----\n' "$f" >&2
        grep -v '^[[:space:]]*$' "$f" | tail -n "${1:-15}" | cut -c1-300 >&2
    done
}

STARTED=""  # daemons started by this invocation, stopped again if `up` fails

fail() {  # fail MESSAGE: error with log tail; stop what this `up` started (logs stay in DIR/log)
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    log_tail 15
    local d
    for d in $STARTED; do stop_daemon "$d" || true; done
    printf '%s: error: %s (logs in %s)\n' "$PROG" "$*" "$LOGDIR" >&2
    exit 1
}

port_in_use() {  # port_in_use PORT -> 0 if something listens on it (any address)
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
    else
        if /usr/bin/python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[2], int(sys.argv[1])))' "$1" "$ADDR" 2>/dev/null; then
            return 1
        fi
        return 0
    fi
}

dir_has_foreign_files() {  # anything in DIR besides our lock file?
    [ -d "$DIR" ] && [ -n "$(find "$DIR" -mindepth 1 -maxdepth 1 ! -name .lock -print -quit 2>/dev/null)" ]
}

lock_dir() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "could not lock $DIR/.lock (another ceph-dev.sh running on this DIR?)"
}

# ---------------------------------------------------------------- ceph.conf

write_conf() {  # write_conf FSID PORT OBJECTSTORE
    local fsid="$1" port="$2" store="$3" store_conf network="$ADDR/32"
    [ "$ADDR" = 127.0.0.1 ] && network=127.0.0.0/8
    if [ "$store" = memstore ]; then
        store_conf="osd_objectstore = memstore
# memstore keeps objects in RAM, allocated only as written; this is the size it reports.
memstore_device_bytes = 4294967296"
    else
        store_conf="osd_objectstore = bluestore
# bluestore on a plain sparse file \$osd_data/block, created at mkfs (20 GiB apparent size).
bluestore_block_create = true
bluestore_block_size = 21474836480"
    fi
    cat >"$CONF.tmp" <<EOF
# Generated by scripts/ceph-dev.sh - throwaway single-node development cluster.
# Loopback only, NO authentication: never expose this cluster.
[global]
fsid = $fsid
mon_host = v2:$ADDR:$port
public_addr = $ADDR
cluster_addr = $ADDR
public_network = $network
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_msgr1 = false
ms_bind_msgr2 = true

auth_cluster_required = none
auth_service_required = none
auth_client_required = none

run_dir = $DIR/run
crash_dir = $DIR/crash

# One OSD: size 1, no host-level failure domain, small PG counts, no autoscaler.
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = $POOL_PGS
osd_pool_default_pgp_num = $POOL_PGS
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# No mgr by default: keep "no active mgr" out of the health status (10 years grace).
mon_mgr_mkfs_grace = 315360000
mgr_initial_modules = iostat
# Dev disks are often fuller than the 30 % free the mon wants by default.
mon_data_avail_warn = 10
mon_data_avail_crit = 2

[mon]
mon_data = $DIR/mon/\$cluster-\$id
# Commit map changes after 0.1 s instead of 1 s: pool create, osd boot, peering ~5x faster.
paxos_propose_interval = 0.1
log_file = $DIR/log/\$cluster-\$name.log
mon_cluster_log_file = $DIR/log/\$cluster.log
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$cluster-\$name.asok

[osd]
osd_data = $DIR/\$name
log_file = $DIR/log/\$cluster-\$name.log
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$cluster-\$name.asok
$store_conf
# Small footprint for a 2-core laptop/CI box.
osd_memory_target = 1073741824
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1

[mgr]
mgr_data = $DIR/\$name
log_file = $DIR/log/\$cluster-\$name.log
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$cluster-\$name.asok

[client]
# Clients (rbd CLI, QEMU, python-rados) need no keyring with auth none, write no log
# file and no admin socket. Fail a connect after 10 s instead of the default 300 s.
client_mount_timeout = 10
rbd_default_clone_format = 2
EOF
    mv -f "$CONF.tmp" "$CONF"
}

# ---------------------------------------------------------------- daemons

start_daemon() {  # start_daemon NAME -> start ceph-<type> -i <id>, daemonised
    local name="$1" type="${1%%.*}" id="${1#*.}" rc=0
    is_running "$name" && return 0
    rm -f "$(pidfile_of "$name")"
    # stdin/stdout closed so callers' pipes (| tail -n1) never wait on the daemons; fd 9 (our
    # lock) must not leak into long-lived daemons.
    timeout -k 5 120 "ceph-$type" -c "$CONF" -i "$id" \
        </dev/null >>"$LOGDIR/startup.log" 2>&1 9>&- || rc=$?
    STARTED="$name $STARTED"
    [ "$rc" = 0 ] || fail "ceph-$type -i $id failed to start (exit $rc)"
    # The parent returns once the daemon is initialised; the pidfile follows right away.
    for _ in $(seq 1 50); do
        is_running "$name" && return 0
        sleep 0.1
    done
    fail "$name started but its pidfile $(pidfile_of "$name") did not appear"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM, wait, SIGKILL after STOP_TIMEOUT
    local name="$1" pf pid t0
    pf="$(pidfile_of "$name")"
    if ! pid="$(daemon_pid "$name")"; then
        [ -f "$pf" ] && { log "$name: removing stale pidfile"; rm -f "$pf"; }
        return 0
    fi
    t0="$(now)"
    kill -TERM "$pid" 2>/dev/null || true
    local ticks=0
    while pid_alive "$pid"; do
        ticks=$((ticks + 1))
        if [ "$ticks" -gt $((STOP_TIMEOUT * 10)) ]; then
            log "$name (pid $pid) did not stop after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$pf"
    log "$name stopped (pid $pid, $(elapsed "$t0") s)"
}

wait_for_mon() {  # wait_for_mon DEADLINE_SECONDS
    while :; do
        ceph_ mon stat >/dev/null 2>&1 && return 0
        [ "$SECONDS" -lt "$1" ] || fail "monitor did not answer within ${UP_TIMEOUT}s"
        is_running "mon.$MON_ID" || fail "monitor process died"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- commands

wipe_state() {  # remove cluster data but keep DIR, its marker and old logs
    rm -rf "$DIR/mon" "$DIR/osd.$OSD_ID" "$DIR/mgr.$MGR_ID" "$DIR/monmap" "$DIR/crash" "$RUN"
}

create_cluster() {  # create_cluster OBJECTSTORE
    local store="$1" fsid port osd_uuid out
    port="${HYPERCORE_CEPH_PORT:-$DEFAULT_PORT}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "HYPERCORE_CEPH_PORT must be a number"
    if port_in_use "$port"; then
        die "port $ADDR:$port is already in use (another cluster?); set HYPERCORE_CEPH_PORT to a free port"
    fi
    fsid="$(uuidgen 2>/dev/null || /usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')"
    osd_uuid="$(uuidgen 2>/dev/null || /usr/bin/python3 -c 'import uuid; print(uuid.uuid4())')"
    log "creating new $store cluster in $DIR (fsid $fsid, mon $ADDR:$port)"

    wipe_state
    mkdir -p "$RUN" "$LOGDIR" "$DIR/crash" "$DIR/mon" "$DIR/osd.$OSD_ID"
    rm -f "$LOGDIR"/*.log   # logs of a previous (memstore) incarnation would only confuse
    marker_set state creating
    marker_set objectstore "$store"
    marker_set fsid "$fsid"
    marker_set port "$port"
    marker_set created "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    write_conf "$fsid" "$port" "$store"

    monmaptool --create --clobber --enable-all-features --fsid "$fsid" \
        --addv "$MON_ID" "[v2:$ADDR:$port]" "$DIR/monmap" >>"$LOGDIR/mkfs.log" 2>&1 \
        || { tail -n 20 "$LOGDIR/mkfs.log" >&2; die "monmaptool failed"; }
    timeout -k 5 60 ceph-mon -c "$CONF" --mkfs -i "$MON_ID" --monmap "$DIR/monmap" \
        </dev/null >>"$LOGDIR/mkfs.log" 2>&1 9>&- \
        || { tail -n 20 "$LOGDIR/mkfs.log" >&2; fail "ceph-mon --mkfs failed"; }
    start_daemon "mon.$MON_ID"
    wait_for_mon "$DEADLINE"

    out="$(ceph_ osd new "$osd_uuid" "$OSD_ID" 2>&1)" || fail "ceph osd new failed: $out"
    marker_set osd_uuid "$osd_uuid"
    # OSD mkfs (~2 s for bluestore) runs in the background while the mon creates the pool;
    # wait_osd_mkfs collects it.
    timeout -k 5 300 ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$osd_uuid" \
        </dev/null >>"$LOGDIR/mkfs.log" 2>&1 9>&- &
    OSD_MKFS_PID=$!
}

wait_osd_mkfs() {
    [ -n "${OSD_MKFS_PID:-}" ] || return 0
    local rc=0
    wait "$OSD_MKFS_PID" || rc=$?
    OSD_MKFS_PID=""
    if [ "$rc" != 0 ]; then
        tail -n 20 "$LOGDIR/mkfs.log" >&2
        fail "ceph-osd --mkfs failed (exit $rc)"
    fi
}

ensure_pool() {  # mon-only steps, idempotent; sets NEED_POOL_INIT
    local out pools
    out="$(ceph_ osd set-require-min-compat-client mimic --yes-i-really-mean-it 2>&1)" \
        || fail "set-require-min-compat-client mimic failed: $out"
    pools="$(ceph_ osd pool ls 2>/dev/null)" || fail "could not list pools"
    NEED_POOL_INIT=0
    if ! grep -qx "$POOL" <<<"$pools"; then
        out="$(ceph_ osd pool create "$POOL" "$POOL_PGS" "$POOL_PGS" replicated 2>&1)" \
            || fail "pool create $POOL failed: $out"
        out="$(ceph_ osd pool application enable "$POOL" rbd 2>&1)" \
            || fail "pool application enable failed: $out"
        NEED_POOL_INIT=1
    fi
}

rbd_try() {  # rbd_try ARGS...: run rbd_, on failure leave a one-line reason in $ERR
    local rc=0 out
    out="$(rbd_ "$@" 2>&1)" || rc=$?
    [ "$rc" = 0 ] && return 0
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        ERR="'rbd $1' timed out"
    else
        ERR="'rbd $1' exit $rc: $(grep -v '^[[:space:]]*$' <<<"$out" | tail -n1)"
    fi
    return 1
}

probe_rbd() {  # retry "rbd pool init" (once) + create/delete of a tiny image until DEADLINE
    local img="hypercore-probe-$$" attempt=0
    ERR=""
    while :; do
        attempt=$((attempt + 1))
        if [ "$NEED_POOL_INIT" = 1 ]; then
            if rbd_try pool init "$POOL"; then NEED_POOL_INIT=0; fi
        fi
        if [ "$NEED_POOL_INIT" = 0 ] \
            && rbd_try create --size 1M "$POOL/$img" \
            && rbd_try rm --no-progress "$POOL/$img"; then
            return 0
        fi
        rbd_ rm --no-progress "$POOL/$img" >/dev/null 2>&1 || true
        is_running "osd.$OSD_ID" || fail "osd.$OSD_ID died"
        is_running "mon.$MON_ID" || fail "mon.$MON_ID died"
        if [ "$SECONDS" -ge "$DEADLINE" ]; then
            printf '%s: last error (attempt %d): %s\n' "$PROG" "$attempt" "$ERR" >&2
            fail "cluster not usable after ${UP_TIMEOUT}s: could not create+delete an RBD image in $POOL"
        fi
        sleep 0.5
    done
}

print_daemons() {  # one line per daemon
    local d pid
    for d in "mon.$MON_ID" "osd.$OSD_ID" "mgr.$MGR_ID"; do
        if pid="$(daemon_pid "$d")"; then
            echo "$d: running (pid $pid)"
        elif [ "$d" = "mgr.$MGR_ID" ] && [ ! -d "$DIR/mgr.$MGR_ID" ]; then
            echo "$d: not configured (use --mgr)"
        else
            echo "$d: stopped"
        fi
    done
}

cmd_status() {  # prints to stdout; returns 0 if usable
    local ok=0 health pools
    if [ ! -f "$CONF" ]; then
        echo "no cluster in $DIR"
        return 1
    fi
    echo "dir: $DIR ($(marker_get objectstore), mon $(conf_addr):$(conf_port))"
    print_daemons
    is_running "mon.$MON_ID" || ok=1
    is_running "osd.$OSD_ID" || ok=1
    if is_running "mon.$MON_ID"; then
        if health="$(ceph_ health 2>&1)"; then
            echo "health: $health"
            case "$health" in HEALTH_ERR*) ok=1 ;; esac
        else
            echo "health: unavailable ($(tail -n1 <<<"$health"))"
            ok=1
        fi
        if pools="$(ceph_ osd pool ls 2>/dev/null)"; then
            echo "pools: $(tr '\n' ' ' <<<"$pools")"
        fi
        if [ "$ok" = 0 ] && ! rbd_ ls "$POOL" >/dev/null 2>&1; then
            echo "rbd: cannot list $POOL"
            ok=1
        fi
    fi
    echo "conf: $CONF"
    return "$ok"
}

cmd_up() {
    local t0 store fresh=0 state have
    OSD_MKFS_PID=""
    t0="$(now)"
    DEADLINE=$((SECONDS + UP_TIMEOUT))
    if [ "$MEMORY" = 1 ]; then store=memstore; else store=bluestore; fi

    if [ ! -f "$MARKER" ] && dir_has_foreign_files; then
        die "$DIR exists, is not empty and has no $MARKER_NAME marker: not a ceph-dev.sh directory"
    fi
    lock_dir
    have="$(marker_get objectstore)"
    state="$(marker_get state)"

    if [ -n "$have" ] && [ "$have" != "$store" ] && [ -f "$CONF" ]; then
        if [ "$have" = bluestore ]; then
            die "$DIR holds a persistent bluestore cluster; refusing to replace it with --memory (use another --dir or purge)"
        elif any_running; then
            die "$DIR runs a memstore cluster; run 'down' first or use --memory"
        fi
        # stopped memstore cluster: its data is gone anyway, start a fresh bluestore one.
        state=""
    fi

    if [ "$state" = ready ] && is_running "mon.$MON_ID" && is_running "osd.$OSD_ID"; then
        if [ "$WITH_MGR" = 1 ] && ! is_running "mgr.$MGR_ID"; then
            mkdir -p "$DIR/mgr.$MGR_ID"
            start_daemon "mgr.$MGR_ID"
        fi
        log "already running"
        if cmd_status >&2; then
            echo "$CONF"
            return 0
        fi
        log "running but not usable (see above); waiting up to ${UP_TIMEOUT}s"
        ensure_pool
        probe_rbd
        log "usable after $(elapsed "$t0") s"
        echo "$CONF"
        return 0
    fi

    if [ "$state" = ready ] && [ "$store" = bluestore ]; then
        log "restarting existing bluestore cluster in $DIR"
        [ -f "$DIR/osd.$OSD_ID/block" ] \
            || die "$DIR/osd.$OSD_ID/block is missing: the OSD data is gone; run 'purge' and 'up' again"
        local want_port
        want_port="${HYPERCORE_CEPH_PORT:-}"
        if [ -n "$want_port" ] && [ "$want_port" != "$(conf_port)" ]; then
            log "warning: $DIR was created with port $(conf_port); ignoring HYPERCORE_CEPH_PORT=$want_port"
        fi
        mkdir -p "$RUN" "$LOGDIR"
        if ! is_running "mon.$MON_ID" && port_in_use "$(conf_port)"; then
            die "port $(conf_addr):$(conf_port) is in use by something else; cannot start mon.$MON_ID"
        fi
        start_daemon "mon.$MON_ID"
        wait_for_mon "$DEADLINE"
    else
        # Fresh cluster: first run, memstore restart, or an earlier `up` that never finished.
        any_running && cmd_down_daemons
        fresh=1
        create_cluster "$store"
    fi

    ensure_pool
    wait_osd_mkfs
    start_daemon "osd.$OSD_ID"
    if [ "$WITH_MGR" = 1 ]; then
        mkdir -p "$DIR/mgr.$MGR_ID"
        start_daemon "mgr.$MGR_ID"
    fi
    probe_rbd
    marker_set state ready
    log "cluster up in $(elapsed "$t0") s ($store, $([ $fresh = 1 ] && echo created || echo restarted), mon $(conf_addr):$(conf_port), pool $POOL)"
    echo "$CONF"
}

cmd_down_daemons() {
    local d
    for d in "mgr.$MGR_ID" "osd.$OSD_ID" "mon.$MON_ID"; do
        stop_daemon "$d"
    done
}

cmd_down() {
    if [ ! -d "$DIR" ]; then
        log "nothing to stop: $DIR does not exist"
        return 0
    fi
    if [ ! -f "$MARKER" ]; then
        dir_has_foreign_files && die "$DIR has no $MARKER_NAME marker: not a ceph-dev.sh directory"
        log "nothing to stop in $DIR"
        return 0
    fi
    lock_dir
    cmd_down_daemons
    if [ "$(marker_get objectstore)" = memstore ]; then
        # memstore data lived in RAM; drop the on-disk leftovers so the next `up` starts clean.
        wipe_state
        marker_set state stopped
    fi
    log "down ($DIR)"
}

cmd_purge() {
    if [ ! -e "$DIR" ]; then
        log "nothing to purge: $DIR does not exist"
        return 0
    fi
    if [ ! -f "$MARKER" ]; then
        dir_has_foreign_files && die "refusing to delete $DIR: no $MARKER_NAME marker (not created by ceph-dev.sh)"
        rm -rf -- "$DIR"   # only our lock file from an `up` that failed early
        log "purged $DIR"
        return 0
    fi
    case "$DIR" in
        "$HOME"|"$HOME/"|/|/root|/home|/tmp|/var|/usr|/etc) die "refusing to delete $DIR" ;;
    esac
    cmd_down
    rm -rf -- "$DIR"
    log "purged $DIR"
}

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    purge) cmd_purge ;;
esac
