#!/usr/bin/env python3
"""Runs the codec benchmark several times and prints a Markdown table of medians.

Usage: python3 scripts/bench-table.py [RUNS]   (default 3)

Each run executes `cargo bench -p svrkit-tests --bench codec` pinned to one core, then reads
criterion's median estimate for every benchmark; the table shows the median over the runs and
svrkit's throughput relative to prost (higher is better).
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
IMPLS = ["svrkit", "prost", "prost_default"]
WORKLOADS = [("small", "chat request, 128 B content"), ("1k", "chat request, 1 KiB content"),
             ("list", "1,000 chat requests")]


def run_once():
    pin = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []
    subprocess.run(pin + ["cargo", "bench", "-q", "-p", "svrkit-tests", "--bench", "codec"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    for op in ["encode", "decode"]:
        for w, _ in WORKLOADS:
            for impl in IMPLS:
                est = CRITERION / f"{op}_{w}" / impl / "new" / "estimates.json"
                out[(op, w, impl)] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


def fmt(ns):
    return f"{ns / 1000:.1f} µs" if ns >= 10_000 else f"{ns:.0f} ns"


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = [run_once() for _ in range(runs)]
    med = {k: median(r[k] for r in results) for k in results[0]}
    print(f"| workload | op | svrkit | prost (Bytes) | prost (default) | svrkit vs prost (Bytes) | svrkit vs prost (default) |")
    print("|---|---|---|---|---|---|---|")
    for w, desc in WORKLOADS:
        for op in ["encode", "decode"]:
            s, p, d = (med[(op, w, i)] for i in IMPLS)
            print(f"| {desc} | {op} | {fmt(s)} | {fmt(p)} | {fmt(d)} | {p / s:.2f}x | {d / s:.2f}x |")
    print(f"\nmedian of {runs} runs, each value criterion's median time per operation")


if __name__ == "__main__":
    main()
