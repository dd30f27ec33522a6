#!/usr/bin/env bash
# The messaging backend with no single point of failure, on one machine, under kills.
#
#   examples/im/deploy/chaos.sh [--short | --calm] [DIR]
#
# Starts the whole layout in three zones (process groups with their own ports; one machine
# has no real data centres), drives `imctl bench --check` through it, and SIGKILLs in turn:
# a message replica, a gateway, a sequence allocator, a PostgreSQL primary (Patroni and
# PostgreSQL at once), an etcd member, then a whole zone. Each killed part but the zone is
# started again before the next kill. The last line is the bench's report, e.g.
#
#   acked=51234 lost=0 duplicated=0 out_of_order=0 seq_regressions=0 longest_outage_s=13.2
#
# and the exit status says whether it is clean. `--short` (CI) keeps every phase short.
# `--calm` kills nothing and runs the load for CALM_SECONDS (default 20): the layout's
# throughput with replication on, to compare with sets.sh's single database.
#
# Layout (ports from BASE_PORT, default 8800):
#
#   zone z1                     zone z2                     zone z3
#   etcd e1      BASE+0/1       etcd e2      BASE+2/3       etcd e3      BASE+4/5
#   pg set-a a1  BASE+10 (13)   pg set-a a2  BASE+11 (14)   pg set-a a3  BASE+12 (15)
#   pg set-b b1  BASE+20 (23)   pg set-b b2  BASE+21 (24)   pg set-b b3  BASE+22 (25)
#   seq-1        BASE+30        seq-2        BASE+31
#   account-1    BASE+32                                    account-2    BASE+33
#   spam-1       BASE+34                                    spam-2       BASE+35
#   msg-a1 set-a BASE+40        msg-a2 set-a BASE+41
#                               msg-b1 set-b BASE+42        msg-b2 set-b BASE+43
#   gateway-1    BASE+50        gateway-2    BASE+51        gateway-3    BASE+52
#
# - etcd: one 3-member cluster, used for discovery, the allocators' leases and bounds, and
#   Patroni's leader keys.
# - PostgreSQL: two Patroni clusters (set-a, set-b) of three members, one per zone, in
#   strict synchronous mode (docs/scale-out.md). set-a's holds the shared database `im`
#   (accounts, sessions, contacts, groups) and set-a's inboxes (`im_a`); set-b's holds
#   `im_b`. (Ports in parentheses: Patroni's REST API.)
# - Users are homed in set-a or set-b ([app.homes]); gateways serve any user.
#
# Needs: im-server and imctl built with `--features etcd` (IM_SERVER, IMCTL; default
# target/release), etcd, Patroni and PostgreSQL (Debian: etcd-server, patroni,
# postgresql). No `tc netem` delay between zones: this machine's kernel lacks the qdisc, and
# the zones here share 127.0.0.1.
set -euo pipefail

short=0
calm=0
case ${1:-} in
    --short) short=1; shift ;;
    --calm) calm=1; shift ;;
esac
dir=${1:-./im-chaos}
base=${BASE_PORT:-8800}
im_server=${IM_SERVER:-target/release/im-server}
imctl=${IMCTL:-target/release/imctl}

# Each line says how far into the load it is, to match the bench's outages to the kills.
load_start=
say() {
    local at=""
    [ -n "$load_start" ] && at=" +$((SECONDS - load_start)) s"
    echo "[chaos $(date +%T)$at] $*" >&2
}

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

# PostgreSQL (and so Patroni) refuses to run as root: as root, they run as `postgres`.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $2 seconds for the command "${@:3}" to succeed; fails naming $1.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then
            say "$what: not within ${limit} s"
            return 1
        fi
        sleep 0.2
    done
}

etcd_urls() {
    echo "http://127.0.0.1:$base,http://127.0.0.1:$((base + 2)),http://127.0.0.1:$((base + 4))"
}

# --- etcd -----------------------------------------------------------------------------

etcd_start() {
    local i=$1 client=$((base + 2 * (i - 1))) peer=$((base + 2 * (i - 1) + 1))
    local cluster="e1=http://127.0.0.1:$((base + 1)),e2=http://127.0.0.1:$((base + 3)),e3=http://127.0.0.1:$((base + 5))"
    etcd --name "e$i" --data-dir "$dir/etcd-e$i" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "chaos-$base" >>"$dir/e$i.log" 2>&1 &
    echo $! >"$dir/e$i.pid"
    # Not this shell's job any more: its kill is not reported as one.
    disown
}

# Whether the member serving clients on port $1 says it is healthy (it is part of a quorum).
etcd_member_healthy() {
    local answer
    answer=$(exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) || return 1
    [[ $answer == *'"health":"true"'* ]]
}

# --- Patroni --------------------------------------------------------------------------

# member NAME SCOPE PG_PORT API_PORT
patroni_config() {
    local name=$1 scope=$2 port=$3 api=$4
    cat >"$dir/$name.yml" <<YML
scope: $scope
name: $name
namespace: /chaos-pg/
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
etcd3:
  hosts: 127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))
bootstrap:
  dcs:
    ttl: 8
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    # A primary that loses etcd (an election among the members, a saturated machine) but
    # still reaches every other member keeps running instead of demoting itself.
    failsafe_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 200
  initdb:
    - encoding: UTF8
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$port
  connect_address: 127.0.0.1:$port
  data_dir: $dir/$name
  bin_dir: $(pg_bin)
  pgpass: $dir/$name.pgpass
  authentication:
    superuser: {username: postgres, password: pw}
    replication: {username: replicator, password: pw}
  parameters:
    unix_socket_directories: $dir
YML
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/$name.yml"
    return 0
}

patroni_start() {
    local name=$1
    as_pg patroni "$dir/$name.yml" >>"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    disown
}

# The port of the member of cluster $1 (a or b) that is primary now, if any.
primary_port() {
    local first=$2 port
    for port in $first $((first + 1)) $((first + 2)); do
        if [ "$(psql -h 127.0.0.1 -p "$port" -U postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# Whether the cluster whose first port is $1 has a primary with a synchronous standby.
replicated() {
    local port
    port=$(primary_port x "$1") || return 1
    [ "$(psql -h 127.0.0.1 -p "$port" -U postgres -Atc \
        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'" 2>/dev/null)" -ge 1 ]
}

pg_url() {
    local first=$1 db=$2
    echo "host=127.0.0.1,127.0.0.1,127.0.0.1 port=$first,$((first + 1)),$((first + 2)) user=postgres dbname=$db target_session_attrs=read-write connect_timeout=2"
}

# Kills a Patroni member as a machine dies: Patroni and its PostgreSQL at once.
patroni_kill() {
    local name=$1 pm
    pm=$(head -1 "$dir/$name/postmaster.pid" 2>/dev/null || true)
    kill -KILL "$(cat "$dir/$name.pid")" 2>/dev/null || true
    pkill -KILL -f "patroni $dir/$name.yml" 2>/dev/null || true
    if [ -n "$pm" ]; then
        kill -STOP "$pm" 2>/dev/null || true
        pkill -KILL -P "$pm" 2>/dev/null || true
        kill -KILL "$pm" 2>/dev/null || true
    fi
}

# --- im-server ------------------------------------------------------------------------

# config NAME ZONE SET LISTEN ADMIN DB_URL
im_config() {
    local name=$1 zone=$2 set=$3 listen=$4 admin=$5 url=$6
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:$listen\""
        [ -n "$admin" ] && echo "admin = \"127.0.0.1:$admin\""
        echo
        echo "[client]"
        echo "caller = \"$name\""
        echo
        echo "[discovery]"
        echo "etcd = [\"http://127.0.0.1:$base\", \"http://127.0.0.1:$((base + 2))\", \"http://127.0.0.1:$((base + 4))\"]"
        echo "set = \"$set\""
        echo "zone = \"$zone\""
        echo
        for service in im.account.AccountSvr im.msg.MsgSvr im.spam.SpamSvr im.group.GroupSvr; do
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
        echo "url = \"$url\""
        echo
        echo "[app.account]"
        echo "${ACCOUNT_TOML:-}"
    } >"$dir/$name.toml"
}

declare -A roles zones
im_start() {
    local name=$1 log=$dir/$1.log
    # A fresh log each start (the last one kept beside it), so that the wait below sees
    # this start's line, not the one before the kill.
    if [ -f "$log" ]; then
        cat "$log" >>"$log.before"
        : >"$log"
    fi
    # shellcheck disable=SC2086
    "$im_server" ${roles[$name]} --config "$dir/$name.toml" >>"$log" 2>&1 &
    echo $! >"$dir/$name.pid"
    disown
    # Serving means registered in etcd too: im-server prints the line after registering.
    wait_for "$name serving" 30 grep -q "im-server serving" "$log"
}

im_kill() {
    kill -KILL "$(cat "$dir/$1.pid")" 2>/dev/null || true
}

stop_all() {
    local f
    # Patroni first (as root its pid file holds runuser's pid), so that it cannot start a
    # PostgreSQL again; then the postmasters, which take their backends with them; then the
    # rest, the bench included.
    pkill -KILL -f "patroni $dir/" 2>/dev/null || true
    for f in "$dir"/[ab][123]/postmaster.pid; do
        [ -f "$f" ] && kill -QUIT "$(head -1 "$f")" 2>/dev/null || true
    done
    for f in "$dir"/*.pid; do
        [ -f "$f" ] || continue
        kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
}

# --- the run --------------------------------------------------------------------------

[ -x "$im_server" ] && "$im_server" --version | grep -q "(etcd)" ||
    { say "need $im_server built with --features etcd"; exit 1; }
[ -x "$imctl" ] || { say "need $imctl"; exit 1; }
command -v patroni >/dev/null || { say "need patroni (apt-get install patroni)"; exit 1; }
command -v etcd >/dev/null || { say "need etcd (apt-get install etcd-server)"; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
trap stop_all EXIT

for port in $(seq "$base" $((base + 5))) $(seq $((base + 10)) $((base + 15))) \
    $(seq $((base + 20)) $((base + 25))) $(seq $((base + 30)) $((base + 35))) \
    $(seq $((base + 40)) $((base + 43))) $(seq $((base + 50)) $((base + 52))); do
    if listening "$port"; then
        say "port $port is taken: stop what uses it, or set BASE_PORT (now $base)"
        exit 1
    fi
done

say "etcd: three members"
for i in 1 2 3; do etcd_start "$i"; done
wait_for "etcd" 30 listening "$base"

say "PostgreSQL: two Patroni clusters of three members, strict synchronous"
patroni_config a1 set-a $((base + 10)) $((base + 13))
patroni_config a2 set-a $((base + 11)) $((base + 14))
patroni_config a3 set-a $((base + 12)) $((base + 15))
patroni_config b1 set-b $((base + 20)) $((base + 23))
patroni_config b2 set-b $((base + 21)) $((base + 24))
patroni_config b3 set-b $((base + 22)) $((base + 25))
patroni_start a1
patroni_start b1
wait_for "set-a's first member" 60 primary_port x $((base + 10))
wait_for "set-b's first member" 60 primary_port x $((base + 20))
for m in a2 a3 b2 b3; do patroni_start $m; done
wait_for "set-a replicated" 90 replicated $((base + 10))
wait_for "set-b replicated" 90 replicated $((base + 20))
psql -h 127.0.0.1 -p "$(primary_port x $((base + 10)))" -U postgres -qc "CREATE DATABASE im" -c "CREATE DATABASE im_a"
psql -h 127.0.0.1 -p "$(primary_port x $((base + 20)))" -U postgres -qc "CREATE DATABASE im_b"

shared=$(pg_url $((base + 10)) im)
url_a=$(pg_url $((base + 10)) im_a)
url_b=$(pg_url $((base + 20)) im_b)
# name zone set listen roles url
while read -r name zone set listen role url; do
    im_config "$name" "$zone" "$set" "$listen" "" "$url"
    roles[$name]=$role
    zones[$name]=$zone
done <<LAYOUT
seq-1 z1 - $((base + 30)) seq-alloc $shared
seq-2 z2 - $((base + 31)) seq-alloc $shared
account-1 z1 - $((base + 32)) account,group $shared
account-2 z3 - $((base + 33)) account,group $shared
spam-1 z1 - $((base + 34)) spam $shared
spam-2 z3 - $((base + 35)) spam $shared
msg-a1 z1 set-a $((base + 40)) msg $url_a
msg-a2 z2 set-a $((base + 41)) msg $url_a
msg-b1 z2 set-b $((base + 42)) msg $url_b
msg-b2 z3 set-b $((base + 43)) msg $url_b
gateway-1 z1 set-a $((base + 50)) gateway $shared
gateway-2 z2 set-b $((base + 51)) gateway $shared
gateway-3 z3 set-a $((base + 52)) gateway $shared
LAYOUT
for name in "${!roles[@]}"; do
    roles[$name]=${roles[$name]//,/ }
    # The shared processes belong to no SET.
    sed -i 's/^set = "-"$/set = ""/' "$dir/$name.toml"
done
say "services: 13 im-server processes"
for name in seq-1 seq-2 account-1 account-2 spam-1 spam-2 msg-a1 msg-a2 msg-b1 msg-b2 gateway-1 gateway-2 gateway-3; do
    im_start "$name"
done

if [ $calm -eq 1 ]; then
    seconds=${CALM_SECONDS:-20}
    say "load, nothing killed: imctl bench --check for $seconds s"
    "$imctl" --etcd "$(etcd_urls)" bench --users 100 -c 128 -d "${seconds}s" --check
    exit
fi

if [ $short -eq 1 ]; then phase=8; pg_phase=20; else phase=20; pg_phase=40; fi
# The zone's loss comes last and needs a database failover (about 13 s) and the bench's
# final deliveries after it: the run ends well after.
total=$((5 * phase + 2 * pg_phase + 40))
say "load: imctl bench --check for $total s"
"$imctl" --etcd "$(etcd_urls)" bench --users 40 -c 16 -d "${total}s" --check \
    >"$dir/bench.out" 2>"$dir/bench.err" &
bench=$!
echo $bench >"$dir/bench.pid"
load_start=$SECONDS
bench_end=$((SECONDS + total))
sleep "$phase"

# What was killed when (seconds into the load), to match the bench's outages to the kills.
kills=()
killed() {
    kills+=("$((SECONDS - load_start)) $1")
}

kill_and_restart() {
    local name=$1 wait=$2 what=$3
    killed "$what"
    say "kill -9 $name"
    im_kill "$name"
    sleep "$wait"
    say "restart $name"
    im_start "$name"
}

kill_and_restart msg-a1 "$phase" msg_replica
kill_and_restart gateway-1 "$phase" gateway
kill_and_restart seq-1 "$phase" allocator

port=$(primary_port x $((base + 20)))
member=b$((port - base - 20 + 1))
killed pg_primary
say "kill -9 the PostgreSQL primary of set-b: $member (Patroni and PostgreSQL)"
patroni_kill "$member"
sleep "$pg_phase"
say "restart $member"
patroni_start "$member"

killed etcd_member
say "kill -9 etcd member e3"
kill -KILL "$(cat "$dir/e3.pid")"
sleep "$phase"
say "restart e3"
etcd_start 3
# Losing z1 next leaves two members of three: e3 must be back first, or etcd loses quorum.
wait_for "etcd member e3 healthy" 30 etcd_member_healthy $((base + 4))
wait_for "set-b replicated again" 90 replicated $((base + 20))

left=$((bench_end - SECONDS))
[ $left -lt 25 ] && say "only $left s of load left after the zone's loss: the run is too short to judge it"
killed zone
say "lose zone z1: etcd e1, PostgreSQL a1 and b1, and every service process there"
kill -KILL "$(cat "$dir/e1.pid")"
patroni_kill a1
patroni_kill b1
for name in "${!zones[@]}"; do
    [ "${zones[$name]}" = z1 ] && im_kill "$name"
done
wait "$bench" && clean=0 || clean=1
cat "$dir/bench.out" >&2

# Each outage (the bench's "L s at T s") counts against the last kill before it began.
declare -A worst
for k in "${kills[@]}"; do worst[${k#* }]=0.0; done
outages=$(sed -n 's/^outages ([^)]*): //p' "$dir/bench.out" | tr ',' '\n')
while read -r length _ _ at _; do
    [ -n "$length" ] && [ "$length" != none ] || continue
    owner=
    for k in "${kills[@]}"; do
        # A second of slack: a kill and the first failed send it causes are logged apart.
        awk -v t="${k%% *}" -v at="$at" 'BEGIN { exit !(t <= at + 1) }' && owner=${k#* }
    done
    [ -n "$owner" ] || continue
    worst[$owner]=$(awk -v a="${worst[$owner]}" -v b="$length" 'BEGIN { print (b > a ? b : a) }')
done <<<"$outages"
line="outage_by_kill:"
for k in "${kills[@]}"; do line+=" ${k#* }=${worst[${k#* }]}s"; done
echo "$line" >&2
tail -1 "$dir/bench.out"
exit $clean
