"""A fingerprint of every method's results: trains every configuration of `run --all` on
digits briefly (1 epoch, IS k=50), on both backends, and the plug-in `iwae-dreg`, then prints,
per row, every numeric figure (exactly, as repr), a hash of each per-example array and of
each tensor of the kept model's state. Two checkouts whose fingerprints are equal give the
same rows bit for bit:

    python scripts/fingerprint.py > before.txt   # on one commit
    python scripts/fingerprint.py > after.txt    # on another
    diff before.txt after.txt

Figures that measure the machine (times, throughput) and provenance (commit, dates, file
names) are left out.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Columns that measure the machine or say where a row came from, not what it computed.
UNMEASURED = {"train_examples_per_s", "train_seconds", "eval_seconds", "threads", "processes",
              "budget_curve_seconds"}
RUNS = (["--all", "--backends", "fused,reference"],
        ["--plugin", str(ROOT / "examples" / "iwae_dreg.py"), "--method", "iwae-dreg", "--k", "5"])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def row_lines(row, folder: Path) -> list[str]:
    from genvar_bench.results import TEXT_COLUMNS

    key = (f"{row['method']} [{row['variant']}] k={row['k']} L={row['layers']} "
           f"seed={row['seed']} {row['backend']}")
    lines = [f"{key} status {row['status']}"]
    for name, value in sorted(row.items()):
        if name in TEXT_COLUMNS or name in UNMEASURED or name in ("spec",):
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        lines.append(f"{key} {name} {float(value)!r}")
    artifact = row["artifact"]
    with np.load(folder / "per_example" / f"{artifact}.npz") as archive:
        for name in sorted(archive.files):
            lines.append(f"{key} per_example {name} {digest(np.ascontiguousarray(archive[name]).tobytes())}")
    from safetensors.numpy import load_file

    for name, tensor in sorted(load_file(str(folder / "models" / f"{artifact}.safetensors")).items()):
        lines.append(f"{key} state {name} {tensor.dtype} {tuple(tensor.shape)} "
                     f"{digest(np.ascontiguousarray(tensor).tobytes())}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="results folder to train into (default: a temporary one)")
    args = parser.parse_args()
    from genvar_bench import cli
    from genvar_bench.results import read_results

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        for extra in RUNS:
            code = cli.main(["run", "--dataset", "digits", "--epochs", "1", "--eval-samples", "50",
                             "--no-progress", "--out", str(out), *extra])
            if code != 0:
                print(f"error: the run {' '.join(extra)} exited {code}", file=sys.stderr)
                return 1
        folder = out / "digits" / "quick"
        table = read_results(folder)
        for _, row in table.sort_values(["method", "variant", "k", "layers", "seed", "backend"]).iterrows():
            print("\n".join(row_lines(row.to_dict(), folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
