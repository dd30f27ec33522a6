#!/usr/bin/env bash
# Where a server's CPU goes under the RPC bench: user and system time per request (from
# /proc/<pid>/stat over 2 s of one run), then syscalls per request (perf's tracepoints over
# 2 s of a second run, since they slow the server a little).
#
# Usage: scripts/rpc-server-cost.sh SYSTEM CONCURRENCY    (SYSTEM: svrkit, tonic, tarpc, floor)
# Needs perf with access to the syscalls tracepoints (root) for the second part.
set -euo pipefail
cd "$(dirname "$0")/.."
system=${1:?system}
concurrency=${2:?concurrency}
cargo bench -q -p svrkit-tests --bench rpc --no-run
out=$(mktemp)
hz=$(getconf CLK_TCK)

# Starts a run in the background; sets $bench and $pid (the server process).
start() {
    cargo bench -q -p svrkit-tests --bench rpc -- --systems "$system" \
        --concurrency "$concurrency" --seconds 5 >"$out" &
    bench=$!
    sleep 2.5
    pid=$(pgrep -f -- "--serve $system" | head -1)
}
qps() { grep -E "^\| $system \| $concurrency \|" "$out" | awk -F'|' '{print $4}' | tr -d ' '; }

start
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
sleep 2
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
wait "$bench"
qps1=$(qps)

start
perf stat -x, -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_writev,syscalls:sys_enter_readv,syscalls:sys_enter_write,syscalls:sys_enter_read' \
    -p "$pid" -- sleep 2 2>"$out.perf" || true
wait "$bench"
qps2=$(qps)

python3 - "$qps1" "$qps2" "$hz" "$u0" "$s0" "$u1" "$s1" "$out.perf" <<'PY'
import sys
qps1, qps2, hz = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
u0, s0, u1, s1 = map(int, sys.argv[4:8])
print(f"QPS {qps1:,.0f}")
print(f"server user   {(u1 - u0) / hz / (qps1 * 2) * 1e6:.2f} µs/request")
print(f"server system {(s1 - s0) / hz / (qps1 * 2) * 1e6:.2f} µs/request")
print(f"QPS {qps2:,.0f} (second run, under perf)")
total = 0
for line in open(sys.argv[8]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit() and int(parts[0]) > 0:
        n = int(parts[0])
        total += n
        print(f"  {parts[2].split(':')[-1]:<24} {n / (qps2 * 2):.3f} per request")
print(f"syscalls      {total / (qps2 * 2):.3f} per request")
PY
rm -f "$out" "$out.perf"
