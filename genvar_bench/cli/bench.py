"""`python -m genvar_bench bench`: kernel-speed regression checks.

The benchmarks under benchmarks/ time every fused op against its reference, eager and
under torch.compile, in the same run. What is checked is the ratio (reference median
over fused median), never an absolute time: these machines are noisy, ratios much less
so. `bench --compare` fails when a ratio falls more than `tolerance` (20%) below the one
stored in benchmarks/baselines/<device>.json; `bench --update-baseline` stores the ratios
of this run there (an explicit step, to be committed with the change that earns it).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ROOT / "benchmarks" / "baselines"
TOLERANCE = 0.2


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    from genvar_bench.runner import device_model_name
    return device_model_name(torch.device("cpu"))


def baseline_path(device: str) -> Path:
    """benchmarks/baselines/<device>.json, <device> e.g. cpu-amd-epyc-9b14 or cuda-nvidia-h100."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return BASELINES / f"{device}-{slug}.json"


def run_benchmarks(device: str, select: str | None, json_path: Path) -> None:
    """Runs the benchmarks of one device (and `-k select`), raw results to json_path;
    exits with a one-line error when they fail or none of them runs."""
    expression = device if select is None else f"{device} and ({select})"
    command = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
               "-k", expression, f"--benchmark-json={json_path}"]
    print(" ".join(command), flush=True)  # stdout, beside pytest's: stderr is for the verdict
    # pytest's stderr is held back: when nothing ran, it is only pytest-benchmark's
    # "Not saving anything" warning, which the one-line error below replaces.
    result = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    nothing_ran = result.returncode == 5 or (result.returncode == 0 and json_path.stat().st_size == 0)
    if nothing_ran:
        selection = f"-k {select!r}" if select else "the benchmark selection"
        sys.exit(f"error: {selection} runs no {device} benchmark; see which there are with "
                 f"`python -m pytest benchmarks --collect-only -q -k {device}`")
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        sys.exit(f"error: the benchmarks failed (pytest exit {result.returncode}); see its output above")


def speedups(json_path: Path) -> dict[str, float]:
    """{"<group> / vs <baseline>": reference median / fused median} of one run; exits with
    a one-line error when json_path is missing or no pytest-benchmark JSON."""
    from genvar_bench.tables import kernel_speedups

    remedy = "pass the file `pytest --benchmark-json=FILE` wrote, or leave out --json to run the benchmarks"
    if not json_path.is_file():
        sys.exit(f"error: no benchmark results at {json_path} (--json); {remedy}")
    try:
        results = json.loads(json_path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"error: {json_path} is not JSON ({type(error).__name__}: {error}); {remedy}")
    if not isinstance(results, dict) or not isinstance(results.get("benchmarks"), list):
        sys.exit(f"error: {json_path} holds no list of benchmarks: not a pytest-benchmark JSON; {remedy}")
    try:
        table = kernel_speedups(json_path)
    except (KeyError, TypeError, AttributeError, ZeroDivisionError) as error:
        sys.exit(f"error: {json_path} has malformed benchmarks ({type(error).__name__}: {error}); {remedy}")
    return {f"{row.group} / vs {row.baseline}": float(row.speedup) for row in table.itertuples()}


def check_tolerance(tolerance: float) -> None:
    """A tolerance is the fraction a ratio may fall below its baseline: at 1 or more any
    ratio passes, so it must lie in [0, 1)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"--tolerance {tolerance} is not a fraction in [0, 1), e.g. 0.2 to allow "
                         "speed-ups 20% below the baseline")


def compare(current: dict[str, float], stored: dict[str, float],
            tolerance: float = TOLERANCE) -> list[tuple[str, float, float, bool]]:
    """(name, stored, current, ok) for every stored ratio; ok unless the current ratio is
    more than `tolerance` below the stored one, or missing from this run."""
    check_tolerance(tolerance)
    results = []
    for name, expected in sorted(stored.items()):
        now = current.get(name, float("nan"))
        results.append((name, expected, now, now >= (1 - tolerance) * expected))
    return results


def is_speedup(value) -> bool:
    """A ratio a baseline can hold: a positive finite number (a zero, NaN or infinite one
    would pass, or fail, any run)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def load_speedups(path: Path) -> dict[str, float]:
    """The speed-ups of an existing baseline file, each checked; exits with a one-line
    error naming the file (and the entry) when it is not a valid baseline."""
    try:
        stored = json.loads(path.read_text())["speedups"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"error: {path} is not a baseline file ({type(error).__name__}: {error})")
    if not isinstance(stored, dict):
        sys.exit(f"error: {path} is not a baseline file: its speedups are no mapping of name to ratio")
    for name, value in stored.items():
        if not is_speedup(value):
            sys.exit(f"error: the baseline {path} is invalid: entry {name!r} is {value!r}, not a "
                     "positive finite speed-up; delete that entry (`bench --update-baseline` "
                     "then stores it anew)")
    return stored


def read_baseline(path: Path) -> dict[str, float]:
    """The stored speed-ups of a baseline file; exits with a one-line error when there is
    none, it is not a valid baseline, or it holds no speed-ups."""
    if not path.is_file():
        sys.exit(f"error: no baseline at {path}; make one with `python -m genvar_bench bench "
                 "--update-baseline`")
    stored = load_speedups(path)
    if not stored:
        sys.exit(f"error: the baseline {path} holds no speed-ups: nothing to compare against")
    return stored


def command_bench(args) -> int:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda asked for, but torch sees no CUDA device")
    try:
        check_tolerance(args.tolerance)
    except ValueError as error:
        sys.exit(f"error: {error}")
    path = Path(args.baseline) if args.baseline else baseline_path(device)
    # Checked before any benchmark runs.
    if args.compare:
        stored = read_baseline(path)
    else:
        stored = load_speedups(path) if args.update_baseline and path.exists() else {}
    if args.json:
        json_path = Path(args.json)
    else:
        handle, name = tempfile.mkstemp(suffix=".json")
        os.close(handle)
        json_path = Path(name)
        run_benchmarks(device, args.select, json_path)
    current = speedups(json_path)
    if not current:
        sys.exit(f"error: no fused-vs-reference pairs in {json_path}: nothing to measure; "
                 "select benchmarks with a fused op and its reference (-k)")
    if args.update_baseline:
        for name, ratio in current.items():
            if not is_speedup(ratio):
                sys.exit(f"error: this run's speed-up {name!r} is {ratio!r}, which no baseline can "
                         "hold; check its benchmarks' medians, then rerun")
        stored.update(current)  # a partial run (-k) updates only what it measured
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "speedups": dict(sorted(stored.items()))}, indent=1) + "\n")
        print(f"baseline of {len(current)} ratios written to {path}", file=sys.stderr)
        return 0
    if not args.compare:
        for name, ratio in sorted(current.items()):
            print(f"{ratio:8.2f}x  {name}")
        return 0
    if args.select:  # compare only what this run measured
        stored = {name: value for name, value in stored.items() if name in current}
    if not set(stored) & set(current):
        sys.exit(f"error: compared nothing: none of the {len(current)} speed-ups of this run "
                 f"is in the baseline {path}")
    results = compare(current, stored, args.tolerance)
    failures = [result for result in results if not result[3]]
    for name, expected, now, ok in results:
        print(f"{'ok  ' if ok else 'SLOW'} {now:8.2f}x (baseline {expected:.2f}x)  {name}")
    print(f"{len(results) - len(failures)} of {len(results)} ratios within "
          f"{args.tolerance:.0%} of {path.name}", file=sys.stderr)
    return 1 if failures else 0


def add_parser(commands) -> None:
    bench = commands.add_parser(
        "bench", help="kernel speed-ups over the references; --compare checks them against "
                      "benchmarks/baselines/<device>.json")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--compare", action="store_true",
                       help="fail (exit 1) when a speed-up is more than --tolerance below the baseline")
    bench.add_argument("--update-baseline", action="store_true",
                       help="store this run's speed-ups as the device's baseline")
    bench.add_argument("--tolerance", type=float, default=TOLERANCE,
                       help="allowed relative drop of a speed-up (default 0.2)")
    bench.add_argument("-k", dest="select", default=None,
                       help="pytest -k expression: benchmark only these (e.g. rbm_gibbs)")
    bench.add_argument("--json", default=None,
                       help="use this pytest-benchmark JSON instead of running the benchmarks")
    bench.add_argument("--baseline", default=None,
                       help="baseline file (default benchmarks/baselines/<device>-<name>.json)")
    bench.set_defaults(handler=command_bench)
