"""`python -m genvar_bench report`: the comparison tables (results.md), made from the CSVs
under results/ (each results/<dataset>/<profile>/results.csv and its per_example/ files),
and the seaborn figures of `genvar_bench.figures`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from genvar_bench.atomic import write_text_atomic
from genvar_bench.results import read_results

# Published figures that share a setting with our rows (../shared/REFERENCES.md), drawn
# as labelled marks: (dataset, method, k, layers, nats, label).
PUBLISHED = [
    ("mnist", "iwae", 1, 1, 88.71, "IWAE paper App. D, fixed binarization, IS k=5000, 3280 epochs"),
    ("mnist", "iwae", 5, 1, 87.63, "IWAE paper App. D, fixed binarization, IS k=5000, 3280 epochs"),
    ("mnist", "iwae", 50, 1, 87.10, "IWAE paper App. D, fixed binarization, IS k=5000, 3280 epochs"),
    ("mnist", "iwae", 50, 1, 86.82, "pythae reproduction, fixed binarization, 3280 epochs"),
    ("mnist", "vae", 1, 1, 88.71, "IWAE paper App. D (k=1: the same objective), 3280 epochs"),
    ("mnist", "vae", 1, 1, 89.78, "pythae reproduction, fixed binarization, 3280 epochs"),
    ("mnist", "rbm-cd", 25, 1, 86.34, "Salakhutdinov & Murray 2008, CD-25, 500 hidden, AIS"),
]


def published(dataset: str, method: str, k: int, layers: int) -> str:
    """The published figures for a model's setting, as "nats (source)"; "" when none."""
    return "; ".join(f"{nats:.2f} ({label})" for name, published_method, published_k, published_layers,
                     nats, label in PUBLISHED
                     if (name, published_method, published_k, published_layers) == (dataset, method, k, layers))


def model_label(row) -> str:
    variant = row["variant"] if isinstance(row["variant"], str) and row["variant"] else ""
    return f"{row['method']} k={row['k']}" + (f" [{variant}]" if variant else "") + (
        f" L={row['layers']}" if row["layers"] != 1 else "")


def finished(table: pd.DataFrame) -> pd.DataFrame:
    if "status" in table:
        table = table[table["status"].fillna("ok") == "ok"]
    return table


# z of a two-sided 95% normal interval.
Z95 = 1.959963984540054


def per_example_nll(rows: pd.DataFrame, directory: Path | None) -> np.ndarray | None:
    """The per-example test NLLs of a model, averaged over its seeds' rows (from each
    row's per_example/<artifact>.npz); None when any row lacks the file."""
    if directory is None or "artifact" not in rows:
        return None
    arrays = []
    for artifact in rows["artifact"]:
        path = directory / "per_example" / f"{artifact}.npz"
        if not isinstance(artifact, str) or not path.is_file():
            return None
        with np.load(path) as archive:
            arrays.append(archive["test_nll"])
    if len({array.shape for array in arrays}) != 1:
        return None
    return np.mean(arrays, axis=0)


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of its 95% normal interval) over the entries of values."""
    if values.size < 2:
        return float(values.mean()), math.nan
    return float(values.mean()), Z95 * float(values.std(ddof=1)) / math.sqrt(values.size)


def summarize(table: pd.DataFrame, directory: Path | None = None) -> pd.DataFrame:
    """One line per model (method, variant, k, layers): the test NLL's mean, sd and count
    over seeds (fused rows, or reference rows where no fused one exists), the bound, the
    estimator, and training examples/s per device and backend. With the results folder
    `directory` (its per_example/ files): a 95% interval of the test NLL over test
    examples (of the per-example NLL averaged over seeds), and the paired difference to
    the best model on the same examples with its 95% interval."""
    table = finished(table)
    if table.empty:
        return pd.DataFrame()
    model = ["method", "variant", "k", "layers"]
    lines, per_example = [], {}
    for key, group in table.groupby(model, sort=True, dropna=False):
        scored = group[group["backend"] == "fused"]
        scored = scored if not scored.empty else group
        nll = scored["test_nll"].astype(float)
        line = dict(zip(model, key))
        line["model"] = model_label(line)
        line.update(test_nll=nll.mean(), test_nll_sd=nll.std(ddof=1) if len(nll) > 1 else math.nan,
                    seeds=int(scored["seed"].nunique()), test_bound=scored["test_bound"].mean(),
                    estimator=scored["nll_estimator"].iloc[0])
        if "dataset" in scored:
            line["published"] = published(str(scored["dataset"].iloc[0]), key[0], int(key[2]), int(key[3]))
        values = per_example_nll(scored, directory)
        if values is not None:
            per_example[line["model"]] = values
            line["test_nll_ci95"] = mean_interval(values)[1]
        for (device, backend), rows in group.groupby(["device", "backend"]):
            line[f"ex/s {device} {backend}"] = rows["train_examples_per_s"].mean()
        fused, reference = line.get("ex/s cpu fused"), line.get("ex/s cpu reference")
        line["cpu fused/reference"] = fused / reference if fused and reference else math.nan
        lines.append(line)
    summary = pd.DataFrame(lines)
    if per_example:
        best = min(per_example, key=lambda name: per_example[name].mean())
        differences = {name: mean_interval(values - per_example[best])
                       for name, values in per_example.items()
                       if values.shape == per_example[best].shape}
        summary["best_model"] = best
        summary["vs_best"] = summary["model"].map(lambda name: differences.get(name, (math.nan,))[0])
        summary["vs_best_ci95"] = summary["model"].map(
            lambda name: differences.get(name, (math.nan, math.nan))[1])
    return summary


def _cell(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_markdown(table: pd.DataFrame, title: str, directory: Path | None = None) -> str:
    summary = summarize(table, directory)
    if summary.empty:
        return f"# {title}\n\nNo finished rows.\n"
    throughput = [column for column in summary.columns if column.startswith("ex/s")]
    has_intervals = "vs_best" in summary
    lines = [f"# {title}", "",
             "Test NLL in nats: mean ± sd over seeds (n). The estimator differs by method: "
             "IS (importance sampling, an upper bound in expectation), a bound, or AIS "
             "(a stochastic lower bound for RBMs); compare across estimators with care. "
             "Throughput: training examples per second."]
    if has_intervals:
        lines += ["", "95% CI: a normal interval of the mean test NLL over the test examples "
                      "(per-example NLLs averaged over seeds). vs best: the paired mean difference "
                      "to the best model among those with per-example files "
                      f"({summary['best_model'].iloc[0]}) on the same test "
                      "examples, ± its 95% interval; an interval that excludes 0 is a real gap "
                      "on this test set (for the estimators as they stand)."]
    has_published = "published" in summary and (summary["published"].fillna("") != "").any()
    interval_headers = "95% CI | vs best | " if has_intervals else ""
    lines += ["", "| model | test NLL | seeds | " + interval_headers + "bound | estimator | "
              + " | ".join(throughput) + " | CPU fused / reference |"
              + (" published (same binarization and estimator) |" if has_published else ""),
              "|---" * (6 + len(throughput) + (2 if has_intervals else 0) + has_published) + "|"]
    for _, line in summary.iterrows():
        sd = "" if math.isnan(line["test_nll_sd"]) else f" ± {line['test_nll_sd']:.2f}"
        speeds = " | ".join("-" if pd.isna(line[column]) else f"{line[column]:.0f}"
                            for column in throughput)
        ratio = "-" if math.isnan(line["cpu fused/reference"]) else f"{line['cpu fused/reference']:.2f}x"
        intervals = ""
        if has_intervals:
            ci = line.get("test_nll_ci95")
            vs = line.get("vs_best")
            intervals = ("-" if ci is None or pd.isna(ci) else f"± {ci:.2f}") + " | " + (
                "-" if vs is None or pd.isna(vs) else
                f"{_cell(vs, signed=True)} ± {_cell(line['vs_best_ci95'])}") + " | "
        cited = f" {line.get('published') or '-'} |" if has_published else ""
        lines.append(f"| {line['model']} | {line['test_nll']:.2f}{sd} | {line['seeds']} | "
                     f"{intervals}{line['test_bound']:.2f} | {line['estimator']} | {speeds} | {ratio} |"
                     + cited)
    failed = table[table["status"].isin(["failed", "invalid"])] if "status" in table else table.iloc[:0]
    if not failed.empty:
        lines += ["", "Failed or invalid:", ""] + [f"- {model_label(row)} seed {row['seed']} "
                                                    f"({row['device']}, {row['backend']}): {row['error']}"
                                                    for _, row in failed.iterrows()]
    return "\n".join(lines) + "\n"


def kernel_speedups(path: Path) -> pd.DataFrame:
    """(group, baseline, speed-up) from a pytest-benchmark JSON: the baseline's median
    over the fused op's, per benchmark group."""
    benchmarks = json.loads(path.read_text())["benchmarks"]
    medians: dict[str, dict[str, float]] = {}
    for bench in benchmarks:
        implementation = bench.get("extra_info", {}).get("implementation")
        if implementation:
            medians.setdefault(bench["group"], {})[implementation] = bench["stats"]["median"]
    rows = [{"group": group, "baseline": name, "speedup": by_name[name] / by_name["fused"]}
            for group, by_name in medians.items() if "fused" in by_name
            for name in by_name if name != "fused"]
    return pd.DataFrame(rows)


# Columns of the Markdown summary, in order.
SUMMARY_COLUMNS = ["method", "variant", "k", "layers", "seed", "device", "backend", "train_bound",
                   "test_bound", "test_reconstruction", "test_kl", "test_nll", "nll_estimator", "test_bits_per_dim",
                   "test_cd_objective",
                   "active_units",
                   "train_examples_per_s", "eval_seconds", "epochs", "parameters"]

def to_markdown(table: pd.DataFrame, title: str) -> str:
    columns = [column for column in SUMMARY_COLUMNS if column in table.columns]
    shown = table[columns].copy()
    for column in ("train_bound", "test_bound", "test_reconstruction", "test_kl", "test_nll",
                   "test_cd_objective"):
        if column in shown:
            shown[column] = shown[column].map(lambda value: "-" if pd.isna(value) else f"{value:.2f}")
    if "test_bits_per_dim" in shown:
        shown["test_bits_per_dim"] = shown["test_bits_per_dim"].map(
            lambda value: "-" if pd.isna(value) else f"{value:.3f}")
    if "active_units" in shown:  # NaN for models without latent units
        shown["active_units"] = shown["active_units"].map(
            lambda value: "-" if pd.isna(value) else str(int(value)))
    for column in ("train_examples_per_s", "eval_seconds"):
        if column in shown:
            shown[column] = shown[column].map(lambda value: f"{value:.1f}")
    note = ("Bounds and NLL in nats (lower is better); train/test bound is each method's own "
            "bound at its k; test NLL by the estimator named.")
    return f"# {title}\n\n{note}\n\n{shown.to_markdown(index=False)}\n"


def results_markdown(table: pd.DataFrame, title: str, directory: Path | None = None) -> str:
    """results.md: the summary per model (mean ± sd over seeds, intervals over test
    examples from the per-example files under `directory`, throughput per device), then
    every row."""
    if "status" in table:
        rows = table[table["status"].fillna("ok") == "ok"]
    else:
        rows = table
    details = to_markdown(rows, "All rows").replace("# All rows", "## All rows", 1)
    return summary_markdown(table, title, directory) + "\n" + details


def write_results_markdown(table: pd.DataFrame, directory: Path) -> Path:
    """Writes directory/results.md for the table of a results folder <dataset>/<profile>."""
    directory = Path(directory)
    title = f"{directory.parent.name}, profile {directory.name}"
    return write_text_atomic(directory / "results.md", results_markdown(table, title, directory))


def write_tables(out_dir: str | Path) -> list[Path]:
    """Rewrites every results.md under out_dir (<dataset>/<profile>/results.csv); returns
    the files written."""
    return [write_results_markdown(read_results(csv_path), csv_path.parent)
            for csv_path in sorted(Path(out_dir).glob("*/*/results.csv"))]
