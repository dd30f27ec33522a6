#!/usr/bin/env bash
# Runs the monitoring demo for a while so the dashboards have history to show: an ossagent,
# two hello-server instances reporting to it, and a client whose load and error rate change
# from minute to minute, with an error burst in minute 12 (alarms need 10 minutes of history
# with the default thresholds, so a burst before minute 11 would not fire).
#
#   scripts/monitoring-demo.sh [MINUTES]     # default 15; dashboards on :7001, :7011, :7401
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-15}
cargo build -q -p svrkit-examples --bins
bin=target/debug
trap 'kill $(jobs -p) 2>/dev/null' EXIT
$bin/ossagent --listen 127.0.0.1:7400 --admin 127.0.0.1:7401 &
sleep 0.5
$bin/hello-server --listen 127.0.0.1:7000 --admin 127.0.0.1:7001 --agent 127.0.0.1:7400 --report-interval-ms 2000 &
$bin/hello-server --listen 127.0.0.1:7010 --admin 127.0.0.1:7011 --agent 127.0.0.1:7400 --report-interval-ms 2000 &
sleep 0.5
end=$((SECONDS + minutes * 60))
while [ $SECONDS -lt $end ]; do
    minute=$(( (SECONDS / 60) + 1 ))
    fail=50; [ $minute -eq 12 ] && fail=3
    calls=$(( 2000 + (minute % 4) * 700 ))
    for addr in 127.0.0.1:7000 127.0.0.1:7010; do
        $bin/hello-client --addr $addr --calls $calls --fail-every $fail --concurrency 8 >/dev/null &
    done
    $bin/hello-client --addr 127.0.0.1:7000 --calls 200 --relay --delay-ms $(( minute % 3 )) >/dev/null &
    wait $(jobs -p | tail -3) 2>/dev/null || true
    sleep 5
done
