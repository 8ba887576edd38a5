"""Helpers of scripts/gpu_check.sh, run with the checked Python:

    gpu_check_summary.py merge OUT.json IN.json...   one pytest-benchmark JSON of several runs
    gpu_check_summary.py summary FOLDER               the one-screen summary of a check's folder

The summary reads what the stages left in FOLDER: stages.tsv (stage, status, seconds,
limit), environment.txt, cuda-tests.xml (JUnit), speedups.txt, compare.txt and the run's
results.csv files (CPU and CUDA rows of the same configurations)."""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

# CPU and CUDA rows of a configuration draw different random numbers (each device has its
# own generator), so their test NLLs differ a little; more than this is worth a look.
NLL_TOLERANCE = 0.03


def merge(out: Path, inputs: list[Path]) -> int:
    """Concatenates the benchmarks of pytest-benchmark JSONs (the first's machine info)."""
    merged = None
    for path in inputs:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a run cut short by its time limit leaves no (or half a) file
        if merged is None:
            merged = data
        else:
            merged["benchmarks"].extend(data["benchmarks"])
    if merged is None:
        print("no benchmark results to merge", file=sys.stderr)
        return 1
    out.write_text(json.dumps(merged, indent=1))
    return 0


def stage_lines(folder: Path) -> list[str]:
    path = folder / "stages.tsv"
    if not path.exists():
        return ["  (no stage ran)"]
    lines = []
    for line in path.read_text().splitlines():
        name, status, seconds, limit = (line.split("\t") + ["", "", "", ""])[:4]
        lines.append(f"  {name:<20} {status:<26} {seconds:>5} s (limit {limit} s)")
    return lines


def test_counts(folder: Path) -> str:
    path = folder / "cuda-tests.xml"
    if not path.exists():
        return "no JUnit report (the stage did not finish)"
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return "unreadable JUnit report"
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {key: sum(int(suite.get(key, 0)) for suite in suites)
             for key in ("tests", "failures", "errors", "skipped")}
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    hint = " (a CUDA test that skips on a GPU: see cuda-tests.log)" if count["skipped"] else ""
    return (f"{passed} passed, {count['failures']} failed, {count['errors']} errors, "
            f"{count['skipped']} skipped of {count['tests']}{hint}")


def speedup_lines(folder: Path) -> list[str]:
    path = folder / "speedups.txt"
    if not path.exists():
        return ["  (no speed-ups: the benchmarks did not finish)"]
    ratios = []
    for line in path.read_text().splitlines():
        parts = line.split("x", 1)
        try:
            ratios.append((float(parts[0]), parts[1].strip()))
        except (ValueError, IndexError):
            continue
    lines = []
    for baseline in ("eager", "compiled"):
        chosen = sorted(ratio for ratio, name in ratios if name.endswith(f"vs {baseline}"))
        if chosen:
            lines.append(f"  fused vs {baseline:<8}: {len(chosen)} groups, min {chosen[0]:.2f}x, "
                         f"median {chosen[len(chosen) // 2]:.2f}x, max {chosen[-1]:.2f}x")
    return lines or ["  (no fused/reference pairs)"]


def compare_line(folder: Path) -> str:
    path = folder / "compare.txt"
    if not path.exists():
        return "not run"
    lines = path.read_text().strip().splitlines()
    return lines[-1] if lines else "no output"


def device_rows(folder: Path) -> list[str]:
    """The test NLL and training speed of each configuration on the CPU and on CUDA."""
    import pandas as pd

    # pandas alone (no genvar_bench import): the summary must print when the build failed.
    text = {name: str for name in ("dataset", "method", "variant", "device", "status")}
    frames = [pd.read_csv(path, dtype=text) for path in sorted(folder.glob("run/*/*/results.csv"))]
    if not frames:
        return ["  (no rows: the run did not finish)"]
    table = pd.concat(frames, ignore_index=True)
    table = table[table["status"] == "ok"] if "status" in table else table
    key = ["dataset", "method", "variant", "k"]
    table["variant"] = table["variant"].fillna("")
    lines = [f"  {'configuration':<38} {'NLL cpu':>8} {'NLL cuda':>8} {'ex/s cpu':>9} "
             f"{'ex/s cuda':>9}"]
    for values, group in table.groupby(key, sort=True):
        by_device = {row.device: row for row in group.itertuples()}
        cpu, cuda = by_device.get("cpu"), by_device.get("cuda")
        name = f"{values[0]} {values[1]} k={values[3]}"
        cells = [f"{row.test_nll:8.2f}" if row is not None else f"{'-':>8}" for row in (cpu, cuda)]
        speed = [f"{row.train_examples_per_s:9.0f}" if row is not None else f"{'-':>9}"
                 for row in (cpu, cuda)]
        flag = ""
        if cpu is not None and cuda is not None and (
                abs(cuda.test_nll - cpu.test_nll) > NLL_TOLERANCE * abs(cpu.test_nll)):
            flag = "  CHECK: NLLs differ by more than 3%"
        lines.append(f"  {name:<38} {cells[0]} {cells[1]} {speed[0]} {speed[1]}{flag}")
    return lines


def summary(folder: Path) -> str:
    environment = folder / "environment.txt"
    head = environment.read_text().strip().splitlines()[:3] if environment.exists() else []
    return "\n".join([
        f"gpu_check: {folder}", *[f"  {line}" for line in head],
        "stages:", *stage_lines(folder),
        f"CUDA tests: {test_counts(folder)}",
        "kernel speed-ups on cuda (reference median / fused median, same run):",
        *speedup_lines(folder),
        f"speed-ups against the stored cuda baseline: {compare_line(folder)}",
        "short run, every method on digits, CPU rows against CUDA rows:",
        *device_rows(folder),
    ])


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "merge":
        return merge(Path(argv[1]), [Path(name) for name in argv[2:]])
    if len(argv) == 2 and argv[0] == "summary":
        print(summary(Path(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
