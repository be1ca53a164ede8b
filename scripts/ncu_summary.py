#!/usr/bin/env python3
"""Sums Nsight Compute's kernel times by kernel and grid into a short table.

Input: the CSV of `ncu --metrics gpu__time_duration.sum --csv --page raw --log-file FILE <command>`
(one row per launch; scripts/gpu-check.sh makes it). Output: one line per (kernel, grid), the most
time first: launches, total and mean time, the grid and its blocks, and each line's share of the
kernel time; then the total. Standard library only.
"""
import csv
import sys
from collections import defaultdict

SCALE = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}


def rows(path):
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's own messages are not quoted
    reader = csv.reader(lines)
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    units = None
    for r in reader:
        if not r[col["ID"]].strip():
            units = r  # the units row follows the header
            continue
        yield r, col, units


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: ncu_summary.py NCU.csv [LINES]")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    metric = "gpu__time_duration.sum"
    agg = defaultdict(lambda: [0, 0.0])
    for r, col, units in rows(sys.argv[1]):
        unit = units[col[metric]] if units else "nsecond"
        us = float(r[col[metric]].replace(",", "")) * SCALE.get(unit, 1e-3)
        grid = r[col["Grid Size"]].strip()
        key = (r[col["Kernel Name"]].split("(")[0].strip(), grid)
        agg[key][0] += 1
        agg[key][1] += us
    total = sum(v[1] for v in agg.values())
    launches = sum(v[0] for v in agg.values())
    print(f"{'kernel':<34} {'grid':<16} {'blocks':>7} {'launches':>8} {'total ms':>9} {'mean us':>9} {'share':>6}")
    for (name, grid), (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:top]:
        dims = [int(x) for x in grid.strip("()").split(",") if x.strip()]
        blocks = 1
        for d in dims:
            blocks *= d
        print(f"{name[:34]:<34} {grid:<16} {blocks:>7} {n:>8} {us / 1e3:>9.2f} {us / n:>9.1f} {us / total:>6.1%}")
    print(f"{'all kernels':<34} {'':<16} {'':>7} {launches:>8} {total / 1e3:>9.2f}")


if __name__ == "__main__":
    main()
