#!/usr/bin/env bash
# Instructions per call of one system in the RPC bench, server and client, counted by
# callgrind: exact and repeatable where timings on a shared machine are not, so that a change
# to the per-call path can be judged on a noisy day. Prints the instructions per call of each
# process and its costliest functions (inclusive), and leaves the profiles in $out for
# `callgrind_annotate`.
#
# Usage: scripts/profile-rpc.sh [SYSTEM] [CONCURRENCY] [SECONDS]   (default: svrkit 1 4)
# Needs valgrind. Builds the bench with line tables into target/profile (a second build).
# Calls are counted by the server's dispatches (`Router::dispatch`), one per request.
set -euo pipefail
cd "$(dirname "$0")/.."
system=${1:-svrkit}
concurrency=${2:-1}
seconds=${3:-4}
out=${OUT:-target/profile/callgrind}
export CARGO_TARGET_DIR=target/profile CARGO_PROFILE_BENCH_DEBUG=line-tables-only
bench=$(cargo bench -p svrkit-tests --bench rpc --no-run 2>&1 |
    sed -n 's/.*(\(.*rpc-[0-9a-f]*\))$/\1/p' | tail -1)
mkdir -p "$out"
rm -f "$out"/cg.*
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/cg.%p" \
    "$bench" --bench --runs 1 --seconds "$seconds" --concurrency "$concurrency" \
    --systems "$system" 2>/dev/null | grep -E "^\| $system " || true

python3 - "$out" <<'PY'
import glob, re, subprocess, sys

profiles = {}
for path in glob.glob(sys.argv[1] + "/cg.*"):
    text = open(path, errors="replace").read()
    role = "server" if re.search(r"^cmd:.*--serve", text, re.M) else "client"
    profiles[role] = path

def annotate(path, *args):
    return subprocess.run(["callgrind_annotate", *args, path], capture_output=True,
                          text=True).stdout

def calls(path):
    # Requests the server dispatched, summed over the profile's call records (`cfn=` then
    # `calls=`).
    names, total, callee = {}, 0, None
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            callee = names.get(m.group(1), "") if line.startswith("cfn=") else None
        elif line.startswith("calls=") and callee and "Router::dispatch" in callee:
            total += int(line.split()[0][6:])
    return total or None

TOP = 25
n = calls(profiles["server"]) if "server" in profiles else None
for role in ("server", "client"):
    if role not in profiles or not n:
        continue
    flat = annotate(profiles[role])
    total = int(re.search(r"([\d,]+) \S*\s+PROGRAM TOTALS", flat).group(1).replace(",", ""))
    print(f"{role}: {total / n:,.0f} instructions per call ({n:,} calls, {profiles[role]})")
    # A function inlined in several places is listed once per source file: its largest.
    rows = {}
    for line in annotate(profiles[role], "--inclusive=yes").splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(\S.*?)(?: \[.*)?$", line)
        if m and "svrkit" in m.group(3) and not m.group(3).endswith("{{closure}}"):
            cost = int(m.group(1).replace(",", ""))
            rows[m.group(3)] = max(cost, rows.get(m.group(3), 0))
    for name, cost in sorted(rows.items(), key=lambda r: -r[1])[:TOP]:
        print(f"  {cost / n:8,.0f}  {name[:110]}")
PY
