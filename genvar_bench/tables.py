"""The comparison tables of `python -m genvar_bench report` (each results folder's
results.md: a summary per model over seeds with intervals from the per-example files),
and the published figures they are set beside."""
from __future__ import annotations

import json
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from genvar_bench.atomic import write_text_atomic
from genvar_bench.results import read_results, write_views
from genvar_bench.store import STORE_NAME

# Published figures (../shared/REFERENCES.md) with their setting, drawn as labelled marks:
# (dataset, method, k, layers, nats, source, setting). A figure is "same setting" beside a
# model only where the model's spec has the setting's binarization, estimator and epochs.
FIXED_MNIST = "fixed (Larochelle & Murray 2011)"
# (dataset, method, k, layers, test NLL in nats, source, {setting field: value})
PUBLISHED: list[tuple[str, str, int, int, float, str, dict[str, object]]] = [
    ("mnist", "iwae", 1, 1, 88.71, "IWAE paper App. D",
     {"binarization": FIXED_MNIST, "eval_samples": 5000, "epochs": 3280}),
    ("mnist", "iwae", 5, 1, 87.63, "IWAE paper App. D",
     {"binarization": FIXED_MNIST, "eval_samples": 5000, "epochs": 3280}),
    ("mnist", "iwae", 50, 1, 87.10, "IWAE paper App. D",
     {"binarization": FIXED_MNIST, "eval_samples": 5000, "epochs": 3280}),
    ("mnist", "iwae", 50, 1, 86.82, "pythae reproduction",
     {"binarization": FIXED_MNIST, "epochs": 3280}),
    ("mnist", "vae", 1, 1, 88.71, "IWAE paper App. D (k=1: the same objective)",
     {"binarization": FIXED_MNIST, "eval_samples": 5000, "epochs": 3280}),
    ("mnist", "vae", 1, 1, 89.78, "pythae reproduction",
     {"binarization": FIXED_MNIST, "epochs": 3280}),
    ("mnist", "rbm-cd", 25, 1, 86.34, "Salakhutdinov & Murray 2008, CD-25, AIS",
     {"binarization": FIXED_MNIST, "hidden": 500, "epochs": None}),
]


def _setting_text(setting: dict) -> str:
    parts = []
    if "binarization" in setting:
        parts.append("fixed binarization" if setting["binarization"] == FIXED_MNIST
                     else setting["binarization"])
    if "hidden" in setting:
        parts.append(f"{setting['hidden']} hidden")
    if "eval_samples" in setting:
        parts.append(f"IS k={setting['eval_samples']}")
    if "epochs" in setting:
        parts.append("epochs not stated" if setting["epochs"] is None else f"{setting['epochs']} epochs")
    return ", ".join(parts)


def _matches(setting: dict, spec) -> list[str]:
    """The fields of `setting` in which `spec` differs from it (a budget the source does
    not state differs from every budget)."""
    values = {"binarization": spec.binarization, "eval_samples": spec.eval_samples,
              "epochs": spec.epochs, "hidden": dict(spec.options).get("hidden")}
    return [f"{name} here {values[name]}" for name, value in setting.items()
            if value is None or values[name] != value]


def published(dataset: str, method: str, k: int, layers: int, spec=None) -> str:
    """The published figures for a model, each with its own setting and whether it is the
    model's ("same setting": the spec matches it, budget included); "" when none."""
    found = []
    for name, published_method, published_k, published_layers, nats, source, setting in PUBLISHED:
        if (name, published_method, published_k, published_layers) != (dataset, method, k, layers):
            continue
        differing = _matches(setting, spec) if spec is not None else ["setting unknown"]
        verdict = "same setting" if not differing else "another setting: " + ", ".join(differing)
        found.append(f"{nats:.2f} ({source}; {_setting_text(setting)}; {verdict})")
    return "; ".join(found)


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
    return per_example_values(rows, directory, "test_nll")


def per_example_values(rows: pd.DataFrame, directory: Path | None, key: str,
                       minus: str | None = None) -> np.ndarray | None:
    """The per-example array `key` (less the array `minus`) of a model's rows, averaged
    over its seeds' rows; None when any row lacks the file or the array."""
    if directory is None or "artifact" not in rows:
        return None
    arrays = []
    for artifact in rows["artifact"]:
        path = directory / "per_example" / f"{artifact}.npz"
        if not isinstance(artifact, str) or not path.is_file():
            return None
        try:
            with np.load(path) as archive:
                if key not in archive.files or (minus is not None and minus not in archive.files):
                    return None
                values = np.asarray(archive[key], dtype=np.float64)
                if minus is not None:
                    values = values - np.asarray(archive[minus], dtype=np.float64)
                arrays.append(values)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            warnings.warn(f"{path} is damaged ({type(error).__name__}: {error}): "
                          "this model's intervals are left out")
            return None
    if len({array.shape for array in arrays}) != 1:
        return None
    return np.mean(arrays, axis=0)


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """(mean, half-width of its 95% normal interval) over the entries of values."""
    from genvar_bench.diagnostics import mean_interval as interval

    return interval(values, Z95)


def summarize(table: pd.DataFrame, directory: Path | None = None,
              baseline: str | None = None) -> pd.DataFrame:
    """One line per model (method, variant, k, layers): the test NLL's mean, sd and count
    over seeds (fused rows, or reference rows where no fused one exists), the bound, the
    estimator, and training examples/s per device and backend. With the results folder
    `directory` (its per_example/ files): a 95% interval of the test NLL over test
    examples (of the per-example NLL averaged over seeds), and the paired difference to
    the best model on the same examples with its 95% interval; to the model labelled
    `baseline` too (`vs_baseline`), where it is one of them. `summary.attrs["pairs"]` holds
    every paired difference {model: {other: (mean, half-width)}}."""
    table = finished(table)
    if table.empty:
        return pd.DataFrame()
    model = ["method", "variant", "k", "layers"]
    table = table.assign(_group=_model_groups(table))
    labels = _group_labels(table)
    lines, per_example = [], {}
    for group_key, group in table.groupby("_group", sort=True):
        scored = group[group["backend"] == "fused"]
        scored = scored if not scored.empty else group
        # One device's rows per line (the CPU's where there are both): a seed counted once.
        scored = scored[scored["device"] == ("cpu" if (scored["device"] == "cpu").any()
                                             else scored["device"].iloc[0])]
        nll = scored["test_nll"].astype(float)
        first = scored.iloc[0]
        line = {name: first[name] for name in model}
        line["model"] = labels[group_key]
        line.update(test_nll=nll.mean(), test_nll_sd=nll.std(ddof=1) if len(nll) > 1 else math.nan,
                    seeds=int(scored["seed"].nunique()), test_bound=scored["test_bound"].mean(),
                    epochs=int(scored["epochs"].iloc[0]) if "epochs" in scored else math.nan,
                    estimator=scored["nll_estimator"].iloc[0])
        if "dataset" in scored:
            line["published"] = published(str(first["dataset"]), str(first["method"]),
                                          int(first["k"]), int(first["layers"]), _spec_of(first))
        values = per_example_nll(scored, directory)
        if values is not None:
            per_example[line["model"]] = values
            line["test_nll_ci95"] = mean_interval(values)[1]
        line.update(diagnostic_columns(scored, directory))
        for (device, backend), rows in group.groupby(["device", "backend"]):
            line[f"ex/s {device} {backend}"] = rows["train_examples_per_s"].mean()
        fused, reference = line.get("ex/s cpu fused"), line.get("ex/s cpu reference")
        line["cpu fused/reference"] = fused / reference if fused and reference else math.nan
        lines.append(line)
    summary = pd.DataFrame(lines)
    summary = summary.sort_values(["method", "variant", "k", "layers", "model"],
                                  key=lambda column: column.astype(str) if column.name != "k"
                                  else column.astype(int)).reset_index(drop=True)
    if per_example:
        best = min(per_example, key=lambda name: per_example[name].mean())
        differences = {name: mean_interval(values - per_example[best])
                       for name, values in per_example.items()
                       if values.shape == per_example[best].shape}
        summary["best_model"] = best
        summary["vs_best"] = summary["model"].map(lambda name: differences.get(name, (math.nan,))[0])
        summary["vs_best_ci95"] = summary["model"].map(
            lambda name: differences.get(name, (math.nan, math.nan))[1])
        summary.attrs["pairs"] = {
            name: {other: mean_interval(values - per_example[other])
                   for other, others in per_example.items()
                   if other != name and others.shape == values.shape}
            for name, values in per_example.items()}
        if baseline is not None and baseline in per_example:
            against = summary.attrs["pairs"].get
            summary["vs_baseline"] = summary["model"].map(
                lambda name: 0.0 if name == baseline else against(name, {}).get(baseline, (math.nan,))[0])
            summary["vs_baseline_ci95"] = summary["model"].map(
                lambda name: 0.0 if name == baseline
                else against(name, {}).get(baseline, (math.nan, math.nan))[1])
    return summary


# Below this 1st percentile of the test estimator's effective sample size a row's NLL is
# flagged: on the worst 1% of test examples a handful of the K weights carry the estimate.
TINY_ESS = 5.0


def diagnostic_columns(rows: pd.DataFrame, directory: Path | None) -> dict:
    """What a model's rows say beyond the NLL (`diagnostics`): the posterior gaps with
    95% intervals paired over test examples (ELBO - NLL, k-sample bound - NLL), the test
    estimator's effective sample size (mean over seeds of its mean; the lowest of the
    seeds' 1st percentiles) and the gradient SNR (mean over seeds), where measured."""
    line: dict = {}
    k = int(rows["k"].iloc[0])
    for name, key in (("elbo_gap", "test_iw_bound_k1"), ("k_gap", f"test_iw_bound_k{k}")):
        # the rows whose per-example files hold the bound (older files have the NLL only)
        having = rows[[per_example_values(rows.iloc[[index]], directory, key) is not None
                       for index in range(len(rows))]]
        values = per_example_values(having, directory, key, minus="test_nll") if len(having) else None
        if values is not None:
            line[name], line[f"{name}_ci95"] = mean_interval(values)
            line["gap_seeds"] = len(having)
    for column, reduce in (("test_ess_mean", "mean"), ("test_ess_p1", "min"),
                           ("grad_snr_q", "mean"), ("grad_snr_p", "mean"),
                           ("grad_snr_q_init", "mean"), ("grad_snr_p_init", "mean")):
        if column in rows and rows[column].notna().any():
            line[column] = getattr(rows[column].astype(float), reduce)()
    return line


# What models of one line share: every spec field but these (fused and reference, cpu
# and cuda rows of a model sit side by side on its line; seeds are averaged).
PER_LINE = ("seed", "device", "backend")


def _spec_of(row):
    from genvar_bench.spec import SpecError, from_json

    text = row.get("spec") if hasattr(row, "get") else None
    if not isinstance(text, str):
        return None
    try:
        return from_json(text)
    except SpecError:
        return None


def _model_groups(table: pd.DataFrame) -> list[str]:
    """Each row's model: its spec less PER_LINE (rows without a spec: method, variant, k,
    layers)."""
    groups = []
    for _, row in table.iterrows():
        spec = _spec_of(row)
        groups.append(repr(spec.without(*PER_LINE)) if spec is not None else
                      repr(tuple(str(row[name]) for name in ("method", "variant", "k", "layers"))))
    return groups


def _group_labels(table: pd.DataFrame) -> dict[str, str]:
    """A label per model: method, k, options, layers; and, where two models would share
    a label, the settings that tell them apart (epochs, eval samples, ...)."""
    firsts = table.groupby("_group", sort=True).first()
    base = {group: model_label(row) for group, row in firsts.iterrows()}
    labels = dict(base)
    for label in set(base.values()):
        groups = [group for group, text in base.items() if text == label]
        if len(groups) < 2:
            continue
        specs = {group: _spec_of(firsts.loc[group]) for group in groups}
        if any(spec is None for spec in specs.values()):
            continue
        dicts = {group: spec.to_dict() for group, spec in specs.items()}
        differing = [name for name in dicts[groups[0]] if name not in PER_LINE
                     and len({repr(values[name]) for values in dicts.values()}) > 1]
        for group in groups:
            shown = {**dicts[group], **dicts[group].get("scoring", {})}
            parts = [_setting_part(name, shown[name]) for name in differing
                     if name not in ("stages", "scoring")]
            if "scoring" in differing:
                parts += [f"{name}={value}" for name, value in dicts[group]["scoring"].items()]
            labels[group] = f"{label} ({', '.join(parts)})"
    return labels


def _setting_part(name: str, value) -> str:
    """One setting in a label; a binarization by its kind (its full text is in the rows)."""
    if name == "binarization":
        return "dynamic binarization" if str(value).startswith("dynamic") else "fixed binarization"
    return f"{name}={value}"


def _cell(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_markdown(table: pd.DataFrame, title: str, directory: Path | None = None,
                     baseline: str | None = None) -> str:
    summary = summarize(table, directory, baseline)
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
    has_baseline = "vs_baseline" in summary
    if has_baseline:
        lines += ["", f"vs {baseline}: the paired mean difference to {baseline} on the same test "
                      "examples, ± its 95% interval (`report --baseline`)."]
    has_published = "published" in summary and (summary["published"].fillna("") != "").any()
    interval_headers = ("95% CI | vs best | " if has_intervals else "") + (
        f"vs {baseline} | " if has_baseline else "")
    lines += ["", "| model | test NLL | seeds | " + interval_headers + "bound | estimator | epochs | "
              + " | ".join(throughput) + " | CPU fused / reference |"
              + (" published (its own setting; same setting only where this model's matches) |"
                 if has_published else ""),
              "|---" * (7 + len(throughput) + (2 if has_intervals else 0) + has_baseline
                        + has_published) + "|"]
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
        if has_baseline:
            vs = line.get("vs_baseline")
            intervals += ("-" if vs is None or pd.isna(vs) else
                          f"{_cell(vs, signed=True)} ± {_cell(line['vs_baseline_ci95'])}") + " | "
        cited = f" {line.get('published') or '-'} |" if has_published else ""
        estimator = line["estimator"]
        if line.get("test_ess_p1", math.inf) < TINY_ESS:
            estimator += f" (tiny ESS: {line['test_ess_p1']:.1f} on the worst 1%)"
        lines.append(f"| {line['model']} | {line['test_nll']:.2f}{sd} | {line['seeds']} | "
                     f"{intervals}{line['test_bound']:.2f} | {estimator} | "
                     f"{_cell(line.get('epochs'), digits=0)} | {speeds} | {ratio} |"
                     + cited)
    lines += diagnostics_markdown(summary)
    failed = table[table["status"].isin(["failed", "invalid"])] if "status" in table else table.iloc[:0]
    if not failed.empty:
        lines += ["", "Failed or invalid:", ""] + [f"- {model_label(row)} seed {row['seed']} "
                                                    f"({row['device']}, {row['backend']}): {row['error']}"
                                                    for _, row in failed.iterrows()]
    return "\n".join(lines) + "\n"


def diagnostics_markdown(summary: pd.DataFrame) -> list[str]:
    """The table of what the KL view measures, for the models where it was measured."""
    columns = ("elbo_gap", "k_gap", "test_ess_mean", "grad_snr_q")
    if not any(column in summary and summary[column].notna().any() for column in columns):
        return []
    lines = ["", "## The posterior gap, the estimator's effective sample size, the gradient SNR", "",
             "ELBO - NLL: the one-sample bound minus the test NLL, E_x KL(q(tau|x) || p(tau|x)); "
             "k-bound - NLL: the k-sample bound at the model's own k minus the NLL (the gap of "
             "the resampled q_p^k); both ± a 95% interval paired over test examples, of "
             "per-example values averaged over seeds. The RBM's q is its own posterior (no gap) "
             "and diffusion's NLL is its bound: neither has a row here. ESS: the test "
             "estimator's effective sample size (sum w)^2 / sum w^2 of its K weights, mean over "
             "test examples and the 1st percentile (the worst 1%). seeds: those whose per-example "
             "files hold the bounds (older files hold the NLL only). SNR: |E g| / sd g per "
             "parameter averaged over q's and over p's parameters, trained (at initialisation), "
             "from `python -m genvar_bench diagnose`.", "",
             "| model | ELBO - NLL | k-bound - NLL | seeds | ESS mean | ESS worst 1% | SNR q trained (init) "
             "| SNR p trained (init) |", "|---" * 8 + "|"]

    def gap(line, name):
        value = line.get(name)
        return "-" if value is None or pd.isna(value) else f"{value:.2f} ± {_cell(line.get(name + '_ci95'))}"

    def snr(line, part):
        value = line.get(f"grad_snr_{part}")
        if value is None or pd.isna(value):
            return "-"
        return f"{value:.3f} ({_cell(line.get(f'grad_snr_{part}_init'), digits=3)})"

    for _, line in summary.iterrows():
        cells = [gap(line, "elbo_gap"), gap(line, "k_gap"), _cell(line.get("gap_seeds"), 0),
                 _cell(line.get("test_ess_mean"), 1),
                 _cell(line.get("test_ess_p1"), 1), snr(line, "q"), snr(line, "p")]
        if set(cells) != {"-"}:
            lines.append(f"| {line['model']} | " + " | ".join(cells) + " |")
    return lines


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


def results_markdown(table: pd.DataFrame, title: str, directory: Path | None = None,
                     baseline: str | None = None) -> str:
    """results.md: the summary per model (mean ± sd over seeds, intervals over test
    examples from the per-example files under `directory`, throughput per device), then
    every row."""
    if "status" in table:
        rows = table[table["status"].fillna("ok") == "ok"]
    else:
        rows = table
    details = to_markdown(rows, "All rows").replace("# All rows", "## All rows", 1)
    return summary_markdown(table, title, directory, baseline) + "\n" + details


def write_results_markdown(table: pd.DataFrame, directory: Path, baseline: str | None = None) -> Path:
    """Writes directory/results.md for the table of a results folder <dataset>/<profile>."""
    directory = Path(directory)
    title = f"{directory.parent.name}, profile {directory.name}"
    return write_text_atomic(directory / "results.md",
                             results_markdown(table, title, directory, baseline))


def results_folders(out_dir: str | Path) -> list[Path]:
    """Every results folder under out_dir (a folder with a results store or results.csv),
    at any depth (results/<dataset>/<profile>/, results/sweeps/<name>/<dataset>/<profile>/)."""
    out_dir = Path(out_dir)
    found = {path.parent for name in (STORE_NAME, "results.csv") for path in out_dir.rglob(name)}
    return sorted(found)


def write_tables(out_dir: str | Path, baseline: str | None = None) -> list[Path]:
    """Rewrites every results folder's views (results.csv, results.md) from its store,
    with paired differences to the model labelled `baseline` where a folder has it;
    returns the files written."""
    written = []
    for folder in results_folders(out_dir):
        table = read_results(folder)
        write_views(table, folder)
        written += [folder / "results.csv", write_results_markdown(table, folder, baseline)]
    return written


def model_labels(out_dir: str | Path) -> dict[Path, list[str]]:
    """{results folder: the labels of its models} under out_dir (`report --baseline`)."""
    labels = {}
    for folder in results_folders(out_dir):
        table = finished(read_results(folder))
        if not table.empty:
            table = table.assign(_group=_model_groups(table))
            labels[folder] = sorted(_group_labels(table).values())
    return labels
