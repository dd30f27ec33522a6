#!/usr/bin/env bash
# Runs the monitoring demo for a while so the dashboards have history to show: an ossagent,
# two hello-server instances reporting to it, and a client whose load and error rate change
# from minute to minute, with an error burst in minute 12 (alarms need 10 minutes of history
# with the default thresholds, so a burst before minute 11 would not fire). Every fifth call
# of one client asks for a name that is not there and some calls are given up on: caller
# errors and cancellations, which are counted apart and fire no alarm.
#
# Its ports (7440-7461) are its own, so it runs beside the README's other demos. When the
# load ends the processes keep running, so the dashboards stay up: Ctrl-C stops them.
# Minutes count from when the servers are up (the build before does not count).
#
#   scripts/monitoring-demo.sh [MINUTES]     # default 15; dashboards on :7451, :7461, :7441
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-15}
cargo build -q -p svrkit-examples -p svrkit-ossagent --bins
bin=${CARGO_TARGET_DIR:-target}/debug
trap 'kill $(jobs -p) 2>/dev/null' EXIT
logs=$(mktemp -d)

# Starts a server in the background and waits for its "listening" line; a server that
# cannot start ends the demo with its error, instead of load going to a dead port.
served=0
serve() {
    local name=$1
    shift
    served=$((served + 1))
    local out="$logs/$served-$name.out"
    "$bin/$name" "$@" >"$out" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        grep -q "listening on" "$out" 2>/dev/null && return 0
        if ! kill -0 $pid 2>/dev/null; then
            echo "monitoring-demo: $name did not start:" >&2
            cat "$out" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "monitoring-demo: $name did not start within 10 s" >&2
    exit 1
}
serve ossagent --listen 127.0.0.1:7440 --admin 127.0.0.1:7441
serve hello-server --listen 127.0.0.1:7450 --admin 127.0.0.1:7451 --agent 127.0.0.1:7440 --report-interval-ms 2000
serve hello-server --listen 127.0.0.1:7460 --admin 127.0.0.1:7461 --agent 127.0.0.1:7440 --report-interval-ms 2000
servers=(127.0.0.1:7450 127.0.0.1:7460)
echo "dashboards: http://127.0.0.1:7451/ http://127.0.0.1:7461/ http://127.0.0.1:7441/ (the whole system)"
started=$SECONDS
end=$((started + minutes * 60))
while [ $SECONDS -lt $end ]; do
    minute=$(( (SECONDS - started) / 60 + 1 ))
    fail=50; [ $minute -eq 12 ] && fail=3
    calls=$(( 2000 + (minute % 4) * 700 ))
    for addr in "${servers[@]}"; do
        $bin/hello-client --addr "$addr" --calls $calls --fail-every $fail --concurrency 8 >/dev/null &
    done
    $bin/hello-client --addr 127.0.0.1:7450 --calls 200 --fail-every 5 --fail-code 4 >/dev/null &
    $bin/hello-client --addr 127.0.0.1:7460 --calls 20 --delay-ms 500 --give-up-ms 50 >/dev/null &
    $bin/hello-client --addr 127.0.0.1:7450 --calls 200 --relay --delay-ms $(( minute % 3 )) >/dev/null &
    wait $(jobs -p | tail -5) 2>/dev/null || true
    sleep 5
done
echo "load done after $minutes min; dashboards stay up: http://127.0.0.1:7451/ http://127.0.0.1:7461/ http://127.0.0.1:7441/ (Ctrl-C stops)"
wait
