"""`python -m genvar_bench report`: the comparison tables and seaborn figures, made from
the CSVs under results/ (each results/<dataset>/<profile>/results.csv, its histories/,
and results/benchmarks/*.json)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

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
                      f"to the best model ({summary['best_model'].iloc[0]}) on the same test "
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


def _save(figure, path: Path) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    os.replace(temporary, path)


def figures(table: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """The figures of one results table, as PNGs under directory/figures/."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    table = finished(table).copy()
    if table.empty:
        return []
    table["model"] = table.apply(model_label, axis=1)
    written = []

    # Test NLL by model, error bars the sd over seeds, published marks where they match.
    scored = table[table["backend"] == "fused"]
    scored = scored if not scored.empty else table
    order = sorted(scored["model"].unique())
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    sns.barplot(data=scored, y="model", x="test_nll", order=order, errorbar="sd", ax=axes,
                color="tab:blue")
    low = scored["test_nll"].min()
    for name, method, k, layers, value, label in PUBLISHED:
        model = f"{method} k={k}"
        matches = [index for index, entry in enumerate(order) if entry.split(" [")[0] == model
                   and name == dataset and (layers == 1) == (" L=" not in entry)]
        for index in matches:
            axes.plot(value, index, marker="D", color="tab:red", markersize=6)
            axes.annotate(label, (value, index), xytext=(4, -9), textcoords="offset points",
                          fontsize=6, color="tab:red")
            low = min(low, value)
    axes.set_xlim(left=max(0.0, low - 0.1 * abs(low)))
    axes.set_xlabel("test NLL, nats (estimators differ: see results.md)")
    axes.set_title(f"{dataset}: test NLL by model (red: published, where the setting matches)")
    written.append(directory / "figures" / "test_nll.png")
    _save(figure, written[-1])
    plt.close(figure)

    # Importance-weighted bound against k, per latent-variable model.
    columns = sorted((column for column in scored.columns if column.startswith("test_iw_bound_k")),
                     key=lambda column: int(column.rsplit("k", 1)[1]))
    if columns:
        long = scored.melt(id_vars=["model"], value_vars=columns, var_name="samples",
                           value_name="bound").dropna()
        if not long.empty:
            long["samples"] = long["samples"].str.rsplit("k", n=1).str[1].astype(int)
            figure, axes = plt.subplots(figsize=(7, 4))
            sns.lineplot(data=long, x="samples", y="bound", hue="model", marker="o", ax=axes)
            axes.set_xscale("log")
            axes.set_xlabel("k (samples of q, resampled)")
            axes.set_ylabel("-log (1/k) sum_i w_i, nats")
            axes.set_title(f"{dataset}: the k-sample bound tightens with k")
            axes.legend(fontsize=6)
            written.append(directory / "figures" / "bound_vs_k.png")
            _save(figure, written[-1])
            plt.close(figure)

    # Training curves, from the histories the runs wrote.
    curves = []
    for path in sorted((directory / "histories").glob("*.csv")):
        history = pd.read_csv(path)
        history["run"] = path.stem
        curves.append(history)
    if curves:
        curves = pd.concat(curves, ignore_index=True)
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for axis, x in zip(axes, ("seconds", "epoch")):
            sns.lineplot(data=curves, x=x, y="loss", hue="run", ax=axis, legend=axis is axes[1])
            axis.set_ylabel("training loss: the bound (DAE: reconstruction; RBM: CD surrogate)")
        axes[1].legend(fontsize=5)
        axes[0].set_xlabel("wall-clock seconds")
        figure.suptitle(f"{dataset}: training curves")
        written.append(directory / "figures" / "training_curves.png")
        _save(figure, written[-1])
        plt.close(figure)

    # Throughput per method, device and backend.
    table["device, backend"] = table["device"] + ", " + table["backend"]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    sns.barplot(data=table, y="model", x="train_examples_per_s", hue="device, backend",
                order=order, errorbar=None, ax=axes)
    axes.set_xscale("log")
    axes.set_xlabel("training examples per second")
    axes.set_title(f"{dataset}: throughput")
    written.append(directory / "figures" / "throughput.png")
    _save(figure, written[-1])
    plt.close(figure)
    return written


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


def speedup_figure(path: Path, out: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    speedups = kernel_speedups(path)
    if speedups.empty:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.3 * speedups["group"].nunique() + 1.5))
    sns.barplot(data=speedups, y="group", x="speedup", hue="baseline", ax=axes)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("fused op speed-up (baseline median / fused median, same run)")
    axes.set_ylabel("")
    axes.set_title(f"kernel speed-ups: {path.stem}")
    _save(figure, out)
    plt.close(figure)
    return out


def report(out_dir: str | Path) -> list[Path]:
    """Rewrites every results.md under out_dir as the summary table and draws the figures;
    returns the files written."""
    from genvar_bench.results import _atomic_write_text, read_results, results_markdown

    out_dir = Path(out_dir)
    written = []
    for csv_path in sorted(out_dir.glob("*/*/results.csv")):
        table = read_results(csv_path)
        dataset, profile = csv_path.parent.parent.name, csv_path.parent.name
        markdown = csv_path.parent / "results.md"
        _atomic_write_text(markdown, results_markdown(table, f"{dataset}, profile {profile}",
                                                      csv_path.parent))
        written += [markdown, *figures(table, csv_path.parent, dataset)]
    for json_path in sorted((out_dir / "benchmarks").glob("*.json")):
        figure = speedup_figure(json_path, json_path.with_name(f"{json_path.stem}-speedups.png"))
        if figure is not None:
            written.append(figure)
    return written
