#!/usr/bin/env bash
# Instructions per call of one system in the RPC bench, server and client, counted by
# callgrind: repeatable to within a few dozen instructions where timings on a shared machine
# drift by 10-30%, so that a change to the per-call path can be judged on a noisy day.
#
# The bench runs twice under callgrind, for SECONDS and for twice as long; what a call costs
# is the difference in instructions over the difference in calls, so that each process's
# start-up and shutdown drop out. Then the costliest functions of the longer run, inclusive,
# per call (start-up included, which these hot functions barely see). The profiles stay in
# target/profile/callgrind/{short,long} for `callgrind_annotate`.
#
# Usage: scripts/profile-rpc.sh [SYSTEM] [CONCURRENCY] [SECONDS]   (default: svrkit 1 3)
# Needs valgrind. Builds the bench with line tables into target/profile (a second build).
# Calls are counted by the server's dispatches (`Router::dispatch`), one per request, so the
# system must be one of svrkit's.
set -euo pipefail
cd "$(dirname "$0")/.."
system=${1:-svrkit}
concurrency=${2:-1}
seconds=${3:-3}
out=target/profile/callgrind
export CARGO_TARGET_DIR=target/profile CARGO_PROFILE_BENCH_DEBUG=line-tables-only
built=$(cargo bench -p svrkit-tests --bench rpc --no-run 2>&1) || {
    echo "$built" | tail -20 >&2
    exit 1
}
bench=$(echo "$built" | sed -n 's/.*(\(.*rpc-[0-9a-f]*\))$/\1/p' | tail -1)
for run in short long; do
    secs=$seconds
    [ "$run" = long ] && secs=$((2 * seconds))
    rm -rf "${out:?}/$run"
    mkdir -p "$out/$run"
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/$run/cg.%p" \
        "$bench" --bench --runs 1 --seconds "$secs" --concurrency "$concurrency" \
        --systems "$system" 2>/dev/null | grep -E "^\| $system " || true
done

python3 - "$out" <<'PY'
import glob, re, subprocess, sys

def profiles(run):
    found = {}
    for path in glob.glob(f"{sys.argv[1]}/{run}/cg.*"):
        text = open(path, errors="replace").read()
        found["server" if re.search(r"^cmd:.*--serve", text, re.M) else "client"] = path
    return found

def total(path):
    for line in open(path, errors="replace"):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")

def calls(path):
    # Requests the server dispatched, summed over the profile's call records (`cfn=` then
    # `calls=`).
    names, count, callee = {}, 0, None
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            callee = names.get(m.group(1), "") if line.startswith("cfn=") else None
        elif line.startswith("calls=") and callee and "Router::dispatch" in callee:
            count += int(line.split()[0][6:])
    return count

short, long = profiles("short"), profiles("long")
calls_short, calls_long = calls(short["server"]), calls(long["server"])
if calls_long <= calls_short:
    raise SystemExit(f"the longer run made no more calls ({calls_short}, {calls_long})")
for role in ("server", "client"):
    per_call = (total(long[role]) - total(short[role])) / (calls_long - calls_short)
    print(f"{role}: {per_call:,.0f} instructions per call "
          f"({calls_short:,} and {calls_long:,} calls)")
    # A function inlined in several places is listed once per source file: its largest.
    rows = {}
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", long[role]],
                               capture_output=True, text=True).stdout
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(\S.*?)(?: \[.*)?$", line)
        if m and "svrkit" in m.group(3) and not m.group(3).endswith("{{closure}}"):
            cost = int(m.group(1).replace(",", ""))
            rows[m.group(3)] = max(cost, rows.get(m.group(3), 0))
    for name, cost in sorted(rows.items(), key=lambda r: -r[1])[:20]:
        print(f"  {cost / calls_long:8,.0f}  {name[:110]}")
PY
