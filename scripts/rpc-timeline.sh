#!/usr/bin/env bash
# Where a round trip's time goes with one call at a time, from syscall tracepoints: on each
# side (the bench pins the server to core 0 and the client to core 1), the time from the
# wakeup (`epoll_wait` returning) to the `recvfrom` that reads the message, and from that read
# to the `sendto` of the next message (the side's own work on the critical path). Means and
# medians in µs over 1.5 s of each run, then the run's own line from the bench.
#
# Usage: scripts/rpc-timeline.sh [SYSTEM] [RUNS]   (default: svrkit 3; also floor, tarpc)
# Needs perf with access to the syscalls tracepoints (root). The tracepoints slow every
# syscall a little, so the bench's figures printed beside are a little below its own runs.
set -euo pipefail
cd "$(dirname "$0")/.."
system=${1:-svrkit}
runs=${2:-3}
built=$(cargo bench -p svrkit-tests --bench rpc --no-run 2>&1) || {
    echo "$built" | tail -20 >&2
    exit 1
}
bench=$(echo "$built" | sed -n 's/.*(\(.*rpc-[0-9a-f]*\))$/\1/p' | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for _ in $(seq "$runs"); do
    "$bench" --bench --runs 1 --seconds 5 --concurrency 1 --systems "$system" >"$out/bench" 2>&1 &
    sleep 2.5
    perf record -q -a -o "$out/perf.data" \
        -e 'syscalls:sys_exit_epoll_wait,syscalls:sys_exit_recvfrom,syscalls:sys_enter_sendto' \
        -- sleep 1.5 >/dev/null 2>&1
    wait
    perf script -F cpu,time,event --ns -i "$out/perf.data" 2>/dev/null | python3 -c '
import re, statistics, sys
state, wake, work = {}, {0: [], 1: []}, {0: [], 1: []}
for line in sys.stdin:
    m = re.match(r"\s*\[(\d+)\]\s+([\d.]+):\s+syscalls:(\w+)", line)
    if not m or int(m.group(1)) not in wake:
        continue
    cpu, t, event = int(m.group(1)), float(m.group(2)) * 1e6, m.group(3)
    if event == "sys_exit_epoll_wait":
        state[cpu] = ("woke", t)
    elif event == "sys_exit_recvfrom":
        if state.get(cpu, ("",))[0] == "woke":
            wake[cpu].append(t - state[cpu][1])
        state[cpu] = ("read", t)
    elif event == "sys_enter_sendto" and state.get(cpu, ("",))[0] == "read":
        work[cpu].append(t - state.pop(cpu)[1])
def f(v):
    return "%.2f/%.2f" % (statistics.mean(v), statistics.median(v)) if v else "-"
print("server: wake->read %s read->send %s | client: wake->read %s read->send %s (mean/median µs) |"
      % (f(wake[0]), f(work[0]), f(wake[1]), f(work[1])), end=" ")'
    grep -E "^\| $system \| 1 \|" "$out/bench" | tail -1 | cut -d'|' -f2-5
done
