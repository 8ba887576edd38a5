"""The training-step table of docs/speed.md from one or more pytest-benchmark JSONs of
benchmarks/test_training_step.py: per case, each ratio taken within a run (medians of
that run), then the median of the ratios over the runs.

    python -m benchmarks.training_step_table run1.json run2.json run3.json
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def ratios_of_run(path):
    """{case: {column: value}} of one run."""
    medians: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for bench in json.load(open(path))["benchmarks"]:
        if bench["group"].startswith("step "):
            medians[bench["group"].removesuffix(" | cpu")][bench["extra_info"]["implementation"]] = \
                bench["stats"]["median"]
    table = {}
    for case, by_name in medians.items():
        fused = by_name["fused"]
        table[case] = {
            "fused steps/s": 1 / fused,
            "vs reference": by_name["reference"] / fused,
            "vs eager": by_name["eager"] / fused,
            "vs compiled": by_name["compiled"] / fused,
            "vs faster plain": min(by_name["eager"], by_name["compiled"]) / fused,
            "GEMM-bound fraction": by_name["gemm"] / fused,
            "plain's GEMM-bound fraction": by_name["gemm"] / min(by_name["eager"], by_name["compiled"]),
        }
    return table


def main(paths):
    runs = [ratios_of_run(path) for path in paths]
    columns = list(next(iter(runs[0].values())))
    print("| case | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for case in sorted(runs[0], key=lambda name: (name.split()[-1], name)):
        values = [statistics.median(run[case][column] for run in runs if case in run)
                  for column in columns]
        cells = [f"{values[0]:.0f}"] + [f"{value:.2f}" for value in values[1:]]
        print(f"| {case.removeprefix('step ')} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
