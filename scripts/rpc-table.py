#!/usr/bin/env python3
"""Runs the RPC benchmark several times and prints a Markdown table of medians.

Usage: python3 scripts/rpc-table.py [RUNS] [FILES...]

With no files, builds and runs `cargo bench -p svrkit-tests --bench rpc` RUNS times (default
3). With files, reads earlier outputs of the bench instead. Prints, for every system and
concurrency, the median QPS, p50, p99 and server CPU per request, and svrkit's ratios to tonic,
tarpc and the bare TCP floor.
"""
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
# The bench's rows; the client CPU column (newer benches) is left out of the table here.
ROW = re.compile(r"^\| ([\w-]+) \| (\d+) \| (\d+) \| (\d+) µs \| (\d+) µs \| ([\d.]+) µs \|(?: [\d.]+ µs \|)?$")


ORDER = ["svrkit", "svrkit-nomon", "svrkit-nopolicy", "tonic", "tarpc", "floor"]


def runs(n, files):
    if files:
        return [Path(f).read_text() for f in files]
    out = []
    for _ in range(n):
        out.append(subprocess.run(["cargo", "bench", "-q", "-p", "svrkit-tests", "--bench", "rpc"],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    texts = runs(n, sys.argv[2:])
    rows = defaultdict(list)
    for text in texts:
        for line in text.splitlines():
            m = ROW.match(line.strip())
            if m:
                system, c = m.group(1), int(m.group(2))
                rows[(system, c)].append(tuple(float(x) for x in m.groups()[2:6]))
    med = {k: tuple(median(v[i] for v in vals) for i in range(4)) for k, vals in rows.items()}
    print("| system | concurrency | QPS | p50 | p99 | server CPU / request |")
    print("|---|---|---|---|---|---|")
    for (system, c), (qps, p50, p99, cpu) in sorted(med.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
        print(f"| {system} | {c} | {qps:,.0f} | {p50:.0f} µs | {p99:.0f} µs | {cpu:.1f} µs |")
    print()
    print("| concurrency | QPS vs tonic | QPS vs tarpc | server CPU vs floor | monitoring off: CPU vs floor | monitoring's CPU cost | policies' CPU cost | policies' QPS cost |")
    print("|---|---|---|---|---|---|---|---|")
    pct = lambda a, b: f"{(a / b - 1) * 100:+.0f}%"
    for c in sorted({c for (_, c) in med}):
        s, n, p = med.get(("svrkit", c)), med.get(("svrkit-nomon", c)), med.get(("svrkit-nopolicy", c))
        t, r, f = med.get(("tonic", c)), med.get(("tarpc", c)), med.get(("floor", c))
        if s:
            ratio = lambda other, i: f"{s[i] / other[i]:.2f}x" if other else "-"
            off = f"{n[3] / f[3]:.2f}x" if n and f else "-"
            cost = pct(s[3], n[3]) if n else "-"
            pcpu = pct(s[3], p[3]) if p else "-"
            pqps = pct(s[0], p[0]) if p else "-"
            print(f"| {c} | {ratio(t, 0)} | {ratio(r, 0)} | {ratio(f, 3)} | {off} | {cost} | {pcpu} | {pqps} |")
    print(f"\nmedian of {len(texts)} runs")


if __name__ == "__main__":
    main()
