#!/usr/bin/env bash
# The messaging backend as a SET deployment on one machine: processes standing in for
# machines, finding each other through etcd and storing in PostgreSQL.
#
#   examples/im/deploy/sets.sh start [DIR]    # etcd, PostgreSQL, then 7 im-server processes
#   examples/im/deploy/sets.sh status [DIR]
#   examples/im/deploy/sets.sh stop [DIR]     # SIGTERM: each process drains, then exits
#
# Layout (ports from BASE_PORT, default 7800; the README's other demos use 7000-7700):
#
#   etcd                           BASE (clients), BASE+1 (peers)
#   postgres                       BASE+2, and a socket in DIR/pg
#   seq-1      seq-alloc           BASE+10      two allocators sharing the shards of sections
#   seq-2      seq-alloc           BASE+13      under etcd leases, bounds in etcd
#   account    account group       BASE+11
#   spam       spam                BASE+12
#   msg-a      msg        (set-a)  BASE+20      inboxes of set-a's users, in database im_a
#   msg-b      msg        (set-b)  BASE+21      inboxes of set-b's users, in database im_b
#   msg-a2     msg        (set-a)  BASE+22      a second replica of each
#   msg-b2     msg        (set-b)  BASE+23
#   gateway-a  gateway    (set-a)  BASE+30, admin BASE+40
#   gateway-b  gateway    (set-b)  BASE+31, admin BASE+41
#
# Each user is homed in one SET ([app.homes], a consistent hash of the user id), whose
# database keeps the user's inbox: a send to a user of the other SET is appended through that
# SET's message replicas, and a group's fan-out is split by its members' homes. Accounts,
# sessions, contacts and groups stay in the shared database im. (The databases share one
# PostgreSQL server here, standing in for one per SET.)
#
# Every process registers in etcd under /svrkit/<service>/<addr> with its SET, and calls
# the others through etcd discovery (the message replicas reach the allocator that owns a
# user's shard through the routing table under /svrkit/im.seq/); a process prefers the replicas of its own SET while
# one is healthy. Clients map users to SETs by consistent hashing on the user over the
# gateways: `imctl --etcd http://127.0.0.1:7800 bench ...`.
#
# `start` first checks that every port it needs is free, and names the one that is not. If
# anything fails to start (etcd, PostgreSQL or a process), it shows the end of that log
# and stops everything it started.
#
# im-server must be built with etcd discovery: `cargo build --release -p svrkit-im --features etcd`.
#
# Environment: IM_SERVER (default target/release/im-server), BASE_PORT, ACCOUNT_TOML
# (extra lines for [app.account], e.g. cheaper password hashing for tests).
set -euo pipefail

cmd=${1:-}
dir=${2:-./im-sets}
base=${BASE_PORT:-7800}
im_server=${IM_SERVER:-target/release/im-server}
processes=(seq-1 seq-2 account spam msg-a msg-b msg-a2 msg-b2 gateway-a gateway-b)

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ]; then
        bin=$(dirname "$(command -v initdb)")
    fi
    echo "$bin"
}

# PostgreSQL refuses to run as root: as root, its programs run as the package's user.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Whether something listens on 127.0.0.1:$1 (bash's /dev/tcp: no tool needed).
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Fails, naming the port and its role, if a port the deployment needs is taken.
check_ports() {
    local port role taken=0
    while read -r port role; do
        if listening "$port"; then
            echo "port $port ($role) on 127.0.0.1 is taken by another process: stop it, or set BASE_PORT (now $base) to use other ports" >&2
            taken=1
        fi
    done <<PORTS
$base etcd clients
$((base + 1)) etcd peers
$((base + 2)) postgres
$((base + 10)) seq-1
$((base + 13)) seq-2
$((base + 11)) account
$((base + 12)) spam
$((base + 20)) msg-a
$((base + 21)) msg-b
$((base + 22)) msg-a2
$((base + 23)) msg-b2
$((base + 30)) gateway-a
$((base + 31)) gateway-b
$((base + 40)) gateway-a admin
$((base + 41)) gateway-b admin
PORTS
    return $taken
}

# Waits up to 30 s for the command "${@:5}" to succeed while $1 (pid $2) runs; otherwise
# fails with the end of its log $3. $4 says what coming up means, for the message.
wait_up() {
    local name=$1 pid=$2 log=$3 what=$4
    shift 4
    for _ in $(seq 1 300); do
        "$@" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before coming up ($what); the end of $log:" >&2
            tail -5 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name did not come up ($what) within 30 s; the end of $log:" >&2
    tail -5 "$log" >&2
    return 1
}

config() {
    local name=$1 set=$2 listen=$3 admin=$4 calls=$5 db=${6:-im}
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:$listen\""
        [ -n "$admin" ] && echo "admin = \"127.0.0.1:$admin\""
        echo
        echo "[client]"
        echo "caller = \"$name\""
        echo
        echo "[discovery]"
        echo "etcd = [\"http://127.0.0.1:$base\"]"
        echo "set = \"$set\""
        echo
        for service in $calls; do
            echo "[services.\"$service\"]"
            echo "discovery = \"etcd\""
            echo
        done
        echo "[app]"
        echo "data = \"$dir/data-$name\""
        echo
        echo "[app.seq]"
        echo "arbiter = \"etcd\""
        echo
        echo "[app.homes]"
        echo "sets = [\"set-a\", \"set-b\"]"
        echo
        echo "[app.store]"
        echo "kind = \"postgres\""
        echo "url = \"host=$dir/pg port=$((base + 2)) user=postgres dbname=$db\""
        echo
        echo "[app.account]"
        echo "${ACCOUNT_TOML:-}"
    } >"$dir/$name.toml"
}

# Whether the process of pid file $1 runs.
running() {
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
    [ -x "$im_server" ] || { echo "no im-server at $im_server (cargo build --release -p svrkit-im --features etcd)" >&2; exit 1; }
    # Before anything starts: a build without etcd discovery would fail after etcd and
    # PostgreSQL were up.
    if ! "$im_server" --version | grep -q "(etcd)"; then
        echo "$im_server was built without etcd discovery: cargo build --release -p svrkit-im --features etcd" >&2
        exit 1
    fi
    check_ports || exit 1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local file
    for file in "$dir"/*.pid "$dir/pg/data/postmaster.pid"; do
        if [ -f "$file" ] && running <(head -1 "$file"); then
            echo "already running in $dir ($(basename "$file" .pid)); stop it first" >&2
            exit 1
        fi
    done

    # From here on, a failure stops whatever was started before it.
    trap 'echo "sets.sh: start failed; stopping what it started" >&2; stop' EXIT

    echo "etcd on 127.0.0.1:$base"
    etcd --name sets --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$base" --advertise-client-urls "http://127.0.0.1:$base" \
        --listen-peer-urls "http://127.0.0.1:$((base + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((base + 1))" \
        --initial-cluster "sets=http://127.0.0.1:$((base + 1))" >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    wait_up etcd "$(cat "$dir/etcd.pid")" "$dir/etcd.log" "listening on 127.0.0.1:$base" \
        listening "$base"

    local bin
    bin=$(pg_bin)
    echo "postgres on 127.0.0.1:$((base + 2)) ($bin)"
    mkdir -p "$dir/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pg"
    if [ ! -d "$dir/pg/data" ]; then
        as_pg "$bin/initdb" -D "$dir/pg/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1
    fi
    as_pg "$bin/postgres" -D "$dir/pg/data" -k "$dir/pg" -p $((base + 2)) \
        -c listen_addresses=127.0.0.1 -c max_connections=200 >"$dir/postgres.log" 2>&1 &
    wait_up postgres $! "$dir/postgres.log" "accepting connections on 127.0.0.1:$((base + 2))" \
        "$bin/pg_isready" -q -h "$dir/pg" -p $((base + 2))
    local db
    for db in im im_a im_b; do
        "$bin/psql" -q -h "$dir/pg" -p $((base + 2)) -U postgres -tc \
            "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
            "$bin/createdb" -h "$dir/pg" -p $((base + 2)) -U postgres "$db"
    done

    config seq-1 "" $((base + 10)) "" ""
    config seq-2 "" $((base + 13)) "" ""
    config account "" $((base + 11)) "" "im.msg.MsgSvr"
    config spam "" $((base + 12)) "" ""
    config msg-a set-a $((base + 20)) "" "" im_a
    config msg-b set-b $((base + 21)) "" "" im_b
    config msg-a2 set-a $((base + 22)) "" "" im_a
    config msg-b2 set-b $((base + 23)) "" "" im_b
    local downstream="im.account.AccountSvr im.msg.MsgSvr im.spam.SpamSvr im.group.GroupSvr"
    config gateway-a set-a $((base + 30)) $((base + 40)) "$downstream"
    config gateway-b set-b $((base + 31)) $((base + 41)) "$downstream"

    local name roles pid
    for name in "${processes[@]}"; do
        case $name in
            seq-*) roles="seq-alloc" ;;
            account) roles="account group" ;;
            spam) roles="spam" ;;
            msg-*) roles="msg" ;;
            gateway-*) roles="gateway" ;;
        esac
        # shellcheck disable=SC2086
        "$im_server" $roles --config "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
        pid=$!
        echo $pid >"$dir/$name.pid"
        wait_up "$name" "$pid" "$dir/$name.log" serving grep -q "im-server serving" "$dir/$name.log"
        echo "$name: $(grep -m1 'im-server serving' "$dir/$name.log")"
    done
    trap - EXIT
    echo "gateways: 127.0.0.1:$((base + 30)),127.0.0.1:$((base + 31)); etcd http://127.0.0.1:$base"
}

stop_pid() {
    local file=$1 signal=${2:-TERM}
    [ -f "$file" ] || return 0
    local pid
    pid=$(cat "$file")
    if kill -"$signal" "$pid" 2>/dev/null; then
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    [ -d "$dir" ] || return 0
    local i stoppers=()
    # Gateways first, so that nothing new comes in; then the rest, each draining at once.
    # (Waiting for the stoppers by pid: after a failed start, this shell's other children
    # are the very processes being stopped.)
    stop_pid "$dir/gateway-a.pid" &
    stoppers+=($!)
    stop_pid "$dir/gateway-b.pid" &
    stoppers+=($!)
    wait "${stoppers[@]}"
    stoppers=()
    for ((i = ${#processes[@]} - 3; i >= 0; i--)); do
        stop_pid "$dir/${processes[$i]}.pid" &
        stoppers+=($!)
    done
    wait "${stoppers[@]}"
    if [ -f "$dir/pg/data/postmaster.pid" ]; then
        # SIGINT: PostgreSQL's fast shutdown.
        echo "$(head -1 "$dir/pg/data/postmaster.pid")" >"$dir/postgres.pid"
        stop_pid "$dir/postgres.pid" INT
    fi
    stop_pid "$dir/etcd.pid"
}

status() {
    local name
    for name in etcd postgres "${processes[@]}"; do
        local file="$dir/$name.pid"
        [ "$name" = postgres ] && file="$dir/pg/data/postmaster.pid"
        if [ -f "$file" ] && running <(head -1 "$file"); then
            echo "$name: running (pid $(head -1 "$file"))"
        else
            echo "$name: stopped"
        fi
    done
    if command -v etcdctl >/dev/null; then
        ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$base" get --prefix /svrkit/ 2>/dev/null |
            paste - - || true
    fi
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
