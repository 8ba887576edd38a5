"""Every figure the suite draws, as PNGs written atomically: the seaborn figures of a
results table (test NLL by model with the published marks, the k-sample bound against
k, training curves, throughput), the kernel speed-ups, and the sample grids and scatters
of trained models."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from genvar_bench.atomic import write_atomic
from genvar_bench.tables import (PUBLISHED, _group_labels, _model_groups, _setting_text, finished,
                                 kernel_speedups)


# One colour per family in every figure (and the results pages): a plug-in takes its
# family's where its name starts with the family's method (iwae-dreg: IWAE), else grey.
FAMILIES = {"vae": "VAE", "iwae": "IWAE", "rws": "RWS", "dae": "DAE", "diffusion": "diffusion",
            "diffusion-gauss": "diffusion", "rbm-cd": "RBM", "rbm-pcd": "RBM"}
FAMILY_COLOURS = {"VAE": "#1f77b4", "IWAE": "#ff7f0e", "RWS": "#2ca02c", "DAE": "#9467bd",
                  "diffusion": "#8c564b", "RBM": "#e377c2", "plug-in": "#7f7f7f"}


def family_of(method: str) -> str:
    """The family of a method name (`FAMILIES`): its own, its longest known prefix's, or
    "plug-in"."""
    if method in FAMILIES:
        return FAMILIES[method]
    prefixes = [name for name in FAMILIES if method.startswith(name + "-")]
    return FAMILIES[max(prefixes, key=len)] if prefixes else "plug-in"


def family_colour(method: str) -> str:
    return FAMILY_COLOURS[family_of(method)]


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight",
                                                        format="png"))


def table_figures(table: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """The figures of one results table, as PNGs under directory/figures/."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    table = finished(table).copy()
    if table.empty:
        return []
    table["_group"] = _model_groups(table)
    table["model"] = table["_group"].map(_group_labels(table))
    written = []

    # Test NLL by model, error bars the sd over seeds, published marks where they match.
    scored = table[table["backend"] == "fused"]
    scored = scored if not scored.empty else table
    order = sorted(scored["model"].unique())
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    sns.barplot(data=scored, y="model", x="test_nll", order=order, errorbar="sd", ax=axes,
                color="tab:blue")
    low = scored["test_nll"].min()
    # Each source numbered at its marks and named in full under the axes: long labels
    # beside the marks would overlap one another.
    notes: list[str] = []
    for name, method, k, layers, value, source, setting in PUBLISHED:
        model = f"{method} k={k}"
        matches = [index for index, entry in enumerate(order) if entry.split(" [")[0] == model
                   and name == dataset and (layers == 1) == (" L=" not in entry)]
        if not matches:
            continue
        notes.append(f"[{len(notes) + 1}] {value:.2f}: {source}; {_setting_text(setting)}")
        for index in matches:
            axes.plot(value, index, marker="D", color="tab:red", markersize=6)
            axes.annotate(f"[{len(notes)}]", (value, index), xytext=(-4, 7 if len(notes) % 2 else -13),
                          textcoords="offset points", fontsize=7, color="tab:red")
            low = min(low, value)
    if notes:
        figure.text(0.01, -0.02 * len(notes), "published, each in its own setting:\n" + "\n".join(notes),
                    fontsize=7, color="tab:red", va="top")
    axes.set_xlim(left=max(0.0, low - 0.1 * abs(low)))
    axes.set_xlabel("test NLL, nats (estimators differ: see results.md)")
    axes.set_title(f"{dataset}: test NLL by model (red: published, each in its own setting)")
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

    written += budget_figure(scored, directory, dataset)
    written += diagnostics_figures(scored, directory, dataset)

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


def budget_figure(scored: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """Test NLL on the curve's subset against training passes (log axis), mean ± sd over
    seeds, one panel per family (method), the published figures marked at their budget."""
    import json

    import matplotlib.pyplot as plt
    import seaborn as sns

    if "budget_curve" not in scored:
        return []
    points = [{"model": row["model"], "method": row["method"], "seed": row["seed"], **point}
              for _, row in scored.iterrows() if isinstance(row["budget_curve"], str)
              for point in json.loads(row["budget_curve"])]
    if not points:
        return []
    long = pd.DataFrame(points)
    methods = sorted(long["method"].unique())
    figure, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods) + 1, 3.6),
                                squeeze=False, sharey=True)
    for axis, method in zip(axes[0], methods):
        sns.lineplot(data=long[long["method"] == method], x="epochs", y="test_nll", hue="model",
                     errorbar="sd", marker="o", ax=axis)
        for name, published_method, k, layers, value, source, setting in PUBLISHED:
            if name == dataset and published_method == method and setting.get("epochs"):
                axis.plot(setting["epochs"], value, marker="D", color="tab:red")
        axis.set_xscale("log")
        axis.set_title(method)
        axis.set_xlabel("training passes")
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel("test NLL on the curve's subset, nats")
    figure.suptitle(f"{dataset}: test NLL against the training budget "
                    "(red: published, at its budget)")
    path = directory / "figures" / "budget.png"
    _save(figure, path)
    plt.close(figure)
    return [path]


def diagnostics_figures(scored: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """The paper's decomposition and the estimators, where measured: the posterior gaps
    (ELBO - NLL and k-bound - NLL, one pair of bars per model with its 95% interval over
    test examples), the test estimator's effective sample size, and the gradient SNR of
    q's and p's parameters against k per method (trained solid, at initialisation dashed)."""
    import matplotlib.pyplot as plt

    from genvar_bench.tables import summarize

    summary = summarize(scored, directory)
    written: list[Path] = []
    if summary.empty:
        return written
    if "elbo_gap" in summary and summary["elbo_gap"].notna().any():
        gaps = summary[summary["elbo_gap"].notna()].reset_index(drop=True)
        figure, axes = plt.subplots(figsize=(7, 0.45 * len(gaps) + 1.6))
        rows = range(len(gaps))
        for offset, name, label, colour in ((-0.2, "elbo_gap", "ELBO - NLL: E KL(q(tau|x) || p(tau|x))", "tab:blue"),
                                            (0.2, "k_gap", "k-sample bound - NLL (its own k)", "tab:orange")):
            values = gaps[name] if name in gaps else pd.Series([math.nan] * len(gaps))
            errors = gaps[f"{name}_ci95"] if f"{name}_ci95" in gaps else None
            axes.barh([row + offset for row in rows], values, height=0.38, xerr=errors,
                      color=colour, label=label, capsize=2)
        axes.set_yticks(list(rows), gaps["model"])
        axes.invert_yaxis()
        axes.set_xlabel("nats per test example (95% interval over test examples)")
        axes.set_title(f"{dataset}: the posterior gap of each model's q "
                       "(RBM: zero by construction; diffusion: its NLL is its bound)", fontsize=8)
        axes.legend(fontsize=7, loc="lower right")
        written.append(directory / "figures" / "posterior_gap.png")
        _save(figure, written[-1])
        plt.close(figure)
    if "test_ess_mean" in summary and summary["test_ess_mean"].notna().any():
        ess = summary[summary["test_ess_mean"].notna()].reset_index(drop=True)
        figure, axes = plt.subplots(figsize=(7, 0.45 * len(ess) + 1.6))
        rows = range(len(ess))
        axes.barh([row - 0.2 for row in rows], ess["test_ess_mean"], height=0.38,
                  color="tab:blue", label="mean over test examples")
        axes.barh([row + 0.2 for row in rows], ess["test_ess_p1"], height=0.38,
                  color="tab:red", label="the worst 1% (1st percentile)")
        axes.set_yticks(list(rows), [f"{model} ({estimator})" for model, estimator
                                     in zip(ess["model"], ess["estimator"])])
        axes.invert_yaxis()
        axes.set_xscale("log")
        axes.set_xlabel("effective sample size (sum w)^2 / sum w^2 of the test estimator's K weights")
        axes.set_title(f"{dataset}: how many of the test NLL's importance samples count")
        axes.legend(fontsize=7, loc="lower right")
        written.append(directory / "figures" / "ess.png")
        _save(figure, written[-1])
        plt.close(figure)
    if "grad_snr_q" in summary and summary["grad_snr_q"].notna().any():
        snr = summary[summary["grad_snr_q"].notna()]
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for axis, part, title in ((axes[0], "q", "q's parameters (inference)"),
                                  (axes[1], "p", "p's parameters (generation)")):
            for colour, (label, lines) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"],
                                              snr.groupby(snr["model"].str.replace(r" ?k=\d+", "", regex=True))):
                lines = lines.sort_values("k")
                axis.plot(lines["k"], lines[f"grad_snr_{part}"], marker="o", color=colour,
                          label=f"{label} trained")
                axis.plot(lines["k"], lines[f"grad_snr_{part}_init"], marker="x", linestyle="--",
                          color=colour, label=f"{label} at initialisation")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("k (samples per gradient)")
            axis.set_title(title)
        axes[0].set_ylabel("SNR: mean over parameters of |E g| / sd g")
        axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
        figure.suptitle(f"{dataset}: gradient signal-to-noise ratio against k "
                        "(Rainforth et al. 2018: IWAE's q falls as 1/sqrt(k), p's rises)")
        written.append(directory / "figures" / "gradient_snr.png")
        _save(figure, written[-1])
        plt.close(figure)
    return written


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


def save_sample_grid(images: torch.Tensor, image_shape: tuple[int, int], path: Path,
                     columns: int | None = None, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Tiles [n, H*W] images into a grid (square unless `columns` is given), written as a
    greyscale PNG, value_range[1] black and value_range[0] white; written to a
    temporary name, then renamed."""
    import matplotlib.image

    count = images.shape[0]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = image_shape
    scale = max(1, 28 // height)  # small images (8 x 8 digits) are enlarged, pixels kept square
    low, high = value_range
    images = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    images = images.reshape(count, height, width)
    images = images.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    height, width = height * scale, width * scale
    canvas = torch.ones(rows * (height + 1) + 1, columns * (width + 1) + 1)
    for index, image in enumerate(images):
        top, left = 1 + (index // columns) * (height + 1), 1 + (index % columns) * (width + 1)
        canvas[top:top + height, left:left + width] = 1 - image
    write_atomic(path, lambda target: matplotlib.image.imsave(
        target, canvas.numpy(), cmap="gray", vmin=0, vmax=1, format="png"))


def save_scatter(samples: torch.Tensor, data: torch.Tensor, path: Path) -> None:
    """2-D samples over the data they model, side by side, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for axis, points, title in zip(axes, (data, samples), ("test data", "model samples")):
        points = points.detach().float().cpu()
        axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
        axis.set_title(title)
        axis.set_aspect("equal")
    figure.tight_layout()
    write_atomic(path, lambda target: figure.savefig(target, dpi=100, format="png"))
    plt.close(figure)


def draw_all(out_dir: str | Path) -> list[Path]:
    """Draws the figures of every results table under out_dir and of every kernel
    benchmark JSON under out_dir/benchmarks; returns the files written."""
    from genvar_bench.tables import results_folders
    from genvar_bench.results import read_results

    out_dir = Path(out_dir)
    written = []
    for folder in results_folders(out_dir):
        written += table_figures(read_results(folder), folder, folder.parent.name)
    for json_path in sorted((out_dir / "benchmarks").glob("*.json")):
        figure = speedup_figure(json_path, json_path.with_name(f"{json_path.stem}-speedups.png"))
        if figure is not None:
            written.append(figure)
    return written
