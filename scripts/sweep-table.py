#!/usr/bin/env python3
"""Runs the overload tool's operating-point sweep several times and prints medians.

Usage: python3 scripts/sweep-table.py [RUNS] [FILES...]

With no files, runs `cargo run --release -p svrkit-tests --bin overload -- --only sweep` RUNS
times (default 3, about nine minutes each). With files, reads earlier outputs of the tool
instead (a full run's output holds the sweep too). Prints the sweep's table with the median of
each figure per point, then how many CPU points meet both goodput goals (>= 90% over the first
5 s, >= 95% steady) in the medians and in each run. The issue's goals are medians of three.
"""
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| handler | workers | load | deadline |"
CAP = re.compile(r" \(capped: ([\d.]+)x\)")


def runs(n, files):
    if files:
        return [Path(f).read_text() for f in files]
    command = ["cargo", "run", "--release", "-q", "-p", "svrkit-tests", "--bin", "overload",
               "--", "--only", "sweep"]
    return [subprocess.run(command, cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout for _ in range(n)]


def sweep_rows(text):
    """The sweep table's rows: (key, load caps, figures as text)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    except StopIteration:
        return []
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        cap = CAP.search(cells[2])
        cells[2] = CAP.sub("", cells[2])
        rows.append((tuple(cells[:4]), cap.group(1) if cap else None, cells[4:]))
    return rows


def number(cell):
    """The number in a cell such as `18807/s`, `96%` or `49.7 ms`."""
    match = re.match(r"-?[\d.]+", cell)
    return float(match.group()) if match else None


def meets(figures):
    first5, steady = number(figures[2]), number(figures[3])
    return first5 is not None and steady is not None and first5 >= 90 and steady >= 95


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
    files = [a for a in sys.argv[1:] if not a.isdigit()]
    tables = [sweep_rows(text) for text in runs(n, files)]
    tables = [t for t in tables if t]
    if not tables:
        sys.exit("no sweep table in the input")
    points = OrderedDict()
    for table in tables:
        for key, cap, figures in table:
            point = points.setdefault(key, {"caps": [], "figures": []})
            if cap:
                point["caps"].append(float(cap))
            point["figures"].append(figures)
    print(f"Medians of {len(tables)} runs.\n")
    print("| handler | workers | load | deadline | capacity | goodput 1st s | first 5 s | steady "
          "| p99 queue wait | p99 ok latency | recovery | runs meeting both |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    met = 0
    cpu = 0
    for key, point in points.items():
        columns = list(zip(*point["figures"]))
        medians = []
        for column in columns:
            values = [number(c) for c in column]
            values = [v for v in values if v is not None]
            unit = re.sub(r"^-?[\d.]+", "", column[0])
            if not values:
                medians.append(column[0])
            elif unit == "%" or unit == "/s":
                medians.append(f"{median(values):.0f}{unit}")
            else:
                medians.append(f"{median(values):.1f}{unit}" if "." in column[0]
                               else f"{median(values):.0f}{unit}")
        load = key[2]
        if point["caps"]:
            caps = point["caps"]
            load += f" (capped: {min(caps):.1f}-{max(caps):.1f}x)" if min(caps) != max(caps) \
                else f" (capped: {caps[0]:.1f}x)"
        runs_meeting = sum(meets(f) for f in point["figures"])
        print("| " + " | ".join([*key[:2], load, key[3], *medians,
                                  f"{runs_meeting} of {len(point['figures'])}"]) + " |")
        if "CPU" in key[0]:
            cpu += 1
            met += meets(medians)
    print(f"\n{met} of {cpu} CPU points meet both goodput goals in the medians.")
    for i, table in enumerate(tables, 1):
        count = sum(meets(f) for key, _, f in table if "CPU" in key[0])
        total = sum(1 for key, _, _ in table if "CPU" in key[0])
        print(f"Run {i}: {count} of {total}.")


if __name__ == "__main__":
    main()
