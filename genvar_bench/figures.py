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
                                 kernel_speedups, model_label)


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


def _families(frame: pd.DataFrame) -> pd.DataFrame:
    """frame with a `family` column (`family_of` its method)."""
    return frame.assign(family=frame["method"].astype(str).map(family_of))


def _model_palette(frame: pd.DataFrame) -> dict[str, str]:
    """{model label: its family's colour}."""
    return {model: family_colour(str(method))
            for model, method in frame[["model", "method"]].drop_duplicates().itertuples(index=False)}


def _family_legend(axis, families, **kwargs) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=FAMILY_COLOURS[family], label=family) for family in sorted(set(families))]
    axis.legend(handles=handles, title="family", fontsize=7, title_fontsize=7, **kwargs)


def _line_styles(models: list[str]) -> dict[str, tuple]:
    """A dash pattern per model, told apart within a family (the colour says the family)."""
    patterns = [(None, None), (4, 2), (1, 1.5), (6, 2, 1, 2), (2, 3), (8, 3)]
    return {model: patterns[index % len(patterns)] for index, model in enumerate(models)}


def _family_lines(axis, frame: pd.DataFrame, x: str, y: str, markers: bool = True) -> None:
    """One line per model (mean over its rows, a band of ± sd where several), in its
    family's colour, models of one family told apart by dashes and markers."""
    marker_cycle = "osD^vP*X"
    for family, members in frame.groupby("family", sort=True):
        styles = _line_styles(sorted(members["model"].unique()))
        for index, (model, rows) in enumerate(members.groupby("model", sort=True)):
            stats = rows.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()
            dashes = styles[model]
            line, = axis.plot(stats[x], stats["mean"], color=FAMILY_COLOURS[family],
                              marker=marker_cycle[index % len(marker_cycle)] if markers else None,
                              markersize=4, linewidth=1.3, label=model)
            if dashes[0] is not None:
                line.set_dashes(dashes)
            spread = stats["count"] > 1
            if spread.any():
                axis.fill_between(stats[x][spread], (stats["mean"] - stats["std"])[spread],
                                  (stats["mean"] + stats["std"])[spread],
                                  color=FAMILY_COLOURS[family], alpha=0.15, linewidth=0)


def _kind_legend(axis, solid: str, hatched: str) -> None:
    """A legend of what solid and hatched bars mean (their colour is the family's)."""
    from matplotlib.patches import Patch

    axis.legend(handles=[Patch(facecolor="0.35", label=solid),
                         Patch(facecolor="0.35", alpha=0.45, hatch="///", edgecolor="white", label=hatched)],
                fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


def _legend_outside(axis, **kwargs) -> None:
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, **kwargs)


def table_figures(table: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """The figures of one results table, as PNGs under directory/figures/; every figure
    gives a family one colour (`FAMILY_COLOURS`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[:0]
    table = finished(table).copy()
    if table.empty:
        return []
    table["_group"] = _model_groups(table)
    table["model"] = table["_group"].map(_group_labels(table))
    table = _families(table)
    written = []

    # Test NLL by model, error bars the sd over seeds, published marks where they match.
    scored = table[table["backend"] == "fused"]
    scored = scored if not scored.empty else table
    order = sorted(scored["model"].unique())
    figure, axes = plt.subplots(figsize=(7.5, 0.35 * len(order) + 1.6))
    sns.barplot(data=scored, y="model", x="test_nll", order=order, errorbar="sd", ax=axes,
                hue="model", palette=_model_palette(scored), legend=False)
    low = scored["test_nll"].min()
    # Each source numbered at its marks and named in full under the axes: long labels
    # beside the marks would overlap one another.
    notes: list[str] = []
    for name, method, k, layers, value, source, setting in PUBLISHED:
        model = f"{method} k={k}"
        matches = [index for index, entry in enumerate(order) if entry.split(" [")[0].split(" (")[0] == model
                   and name == dataset and (layers == 1) == (" L=" not in entry)]
        if not matches:
            continue
        notes.append(f"[{len(notes) + 1}] {value:.2f}: {source}; {_setting_text(setting)}")
        for index in matches:
            axes.plot(value, index, marker="D", color="black", markersize=5)
            axes.annotate(f"[{len(notes)}]", (value, index), xytext=(-4, 7 if len(notes) % 2 else -13),
                          textcoords="offset points", fontsize=7, color="black")
            low = min(low, value)
    axes.set_xlim(left=max(0.0, low - 0.1 * abs(low)))
    axes.set_xlabel("test NLL, nats (estimators differ: see results.md)")
    axes.set_ylabel("")
    axes.set_title(f"{dataset}: test NLL by model" + (" (black: published, each in its own setting)"
                                                      if notes else ""))
    _family_legend(axes, scored["family"], loc="lower right")
    if notes:
        axes.text(0.0, -0.09 - 0.3 / max(1, len(order)) * 3, "published, each in its own setting:\n"
                  + "\n".join(notes), transform=axes.transAxes, fontsize=7, va="top")
    written.append(directory / "figures" / "test_nll.png")
    _save(figure, written[-1])
    plt.close(figure)

    # Importance-weighted bound against k, per latent-variable model.
    columns = sorted((column for column in scored.columns if column.startswith("test_iw_bound_k")),
                     key=lambda column: int(column.rsplit("k", 1)[1]))
    if columns:
        long = scored.melt(id_vars=["model", "method", "family"], value_vars=columns, var_name="samples",
                           value_name="bound").dropna()
        if not long.empty:
            long["samples"] = long["samples"].str.rsplit("k", n=1).str[1].astype(int)
            figure, axes = plt.subplots(figsize=(7, 4))
            _family_lines(axes, long, "samples", "bound")
            axes.set_xscale("log")
            axes.set_xlabel("k (samples of q, resampled)")
            axes.set_ylabel("-log (1/k) sum_i w_i, nats")
            axes.set_title(f"{dataset}: the k-sample bound tightens with k")
            _legend_outside(axes)
            written.append(directory / "figures" / "bound_vs_k.png")
            _save(figure, written[-1])
            plt.close(figure)

    # Training curves against passes, from the histories the runs wrote: the bounds in nats
    # in one panel, the surrogates (DAE reconstruction, RBM CD objective) in another.
    curves = []
    for _, row in scored.iterrows():
        artifact = row.get("artifact")
        path = directory / "histories" / f"{artifact}.csv"
        if isinstance(artifact, str) and artifact and path.is_file():
            history = pd.read_csv(path)
            curves.append(history.assign(model=row["model"], method=row["method"], family=row["family"]))
    if curves:
        curves = pd.concat(curves, ignore_index=True)
        surrogate = curves["family"].isin(["DAE", "RBM"])
        panels = [(curves[~surrogate], "training bound, nats (its own k)"),
                  (curves[surrogate], "surrogate (DAE: reconstruction, RBM: CD)")]
        panels = [(frame, label) for frame, label in panels if not frame.empty]
        figure, grid = plt.subplots(len(panels), 1, figsize=(10, 3.8 * len(panels)), squeeze=False)
        for axis, (frame, label) in zip(grid[:, 0], panels):
            _family_lines(axis, frame, "epoch", "loss", markers=False)
            axis.set_xlabel("training passes")
            axis.set_ylabel(label)
            _legend_outside(axis)
        figure.suptitle(f"{dataset}: training curves (mean over seeds, band ± sd)")
        figure.tight_layout()
        written.append(directory / "figures" / "training_curves.png")
        _save(figure, written[-1])
        plt.close(figure)

    written += budget_figure(scored, directory, dataset)
    written += diagnostics_figures(scored, directory, dataset, failed)

    # Throughput per model, one panel per device and backend.
    table["device, backend"] = table["device"] + ", " + table["backend"]
    kinds = sorted(table["device, backend"].unique())
    figure, grid = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds) + 3, 0.35 * len(order) + 1.6),
                                squeeze=False, sharey=True)
    for axis, kind in zip(grid[0], kinds):
        rows = table[table["device, backend"] == kind]
        sns.barplot(data=rows, y="model", x="train_examples_per_s", order=order, errorbar=None, ax=axis,
                    hue="model", palette=_model_palette(table), legend=False)
        axis.set_xscale("log")
        axis.set_xlabel("training examples per second")
        axis.set_ylabel("")
        axis.set_title(kind)
    _family_legend(grid[0][-1], table["family"], loc="lower right")
    figure.suptitle(f"{dataset}: throughput")
    written.append(directory / "figures" / "throughput.png")
    _save(figure, written[-1])
    plt.close(figure)
    return written


def budget_figure(scored: pd.DataFrame, directory: Path, dataset: str) -> list[Path]:
    """Test NLL on the curve's subset against training passes (log axis), mean ± sd over
    seeds, one panel per family, the published figures marked at their budget."""
    import json

    import matplotlib.pyplot as plt

    if "budget_curve" not in scored:
        return []
    points = [{"model": row["model"], "method": row["method"], "family": family_of(str(row["method"])),
               "seed": row["seed"], "subset": str(row.get("budget_curve_estimator", "")), **point}
              for _, row in scored.iterrows() if isinstance(row["budget_curve"], str)
              for point in json.loads(row["budget_curve"])]
    if not points:
        return []
    long = pd.DataFrame(points)
    families = sorted(long["family"].unique())
    figure, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families) + 2.5, 4.8),
                                squeeze=False, sharey=True)
    for axis, family in zip(axes[0], families):
        members = long[long["family"] == family]
        _family_lines(axis, members, "epochs", "test_nll")
        shown = {label.split(" [")[0].split(" (")[0] for label in members["model"]}
        for index, (name, published_method, k, layers, value, source, setting) in enumerate(PUBLISHED):
            if (name == dataset and f"{published_method} k={k}" in shown and layers == 1
                    and setting.get("epochs")):
                axis.plot(setting["epochs"], value, marker="DsP^v*"[index % 6], color="black",
                          markersize=5, linestyle="none",
                          label=f"published {published_method} k={k}: {value:.2f} ({source})")
        axis.set_xscale("log")
        axis.set_title(family)
        axis.set_xlabel("training passes")
        axis.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    estimators_used = sorted(set(long["subset"]) - {""})
    axes[0][0].set_ylabel("test NLL, nats")
    figure.suptitle(f"{dataset}: test NLL against the training budget (black: published, at its budget)\n"
                    + "; ".join(estimators_used), fontsize=8)
    figure.subplots_adjust(top=0.84, bottom=0.32)
    path = directory / "figures" / "budget.png"
    _save(figure, path)
    plt.close(figure)
    return [path]


# Estimators that are another's at k = 1, bit for bit: IWAE's bound with one sample is the
# VAE's ELBO (digits: the same trained model, seeds 0-2), so its k = 1 SNR is the VAE's.
SAME_AT_K1 = {"iwae": "vae"}


def snr_lines(summary: pd.DataFrame, failed: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The gradient SNR against k of each estimator (a model label less its k), rows sorted
    by k, from a summary with `grad_snr_q`; an estimator of SAME_AT_K1 without a k = 1 row
    takes that of its twin (the same layers and options), flagged in `shared_k1`. A model
    whose runs failed (diverged) and has no finished row gives its SNR at initialisation,
    the mean over its failed rows in `failed` (rows of the store), flagged in `failed`."""
    snr = summary[summary["grad_snr_q"].notna()].copy()
    snr["failed"] = False
    if failed is not None and "grad_snr_q_init" in failed:
        lost = failed[failed["grad_snr_q_init"].notna()]
        lost = lost.assign(model=[model_label(row) for _, row in lost.iterrows()])
        lost = lost[~lost["model"].isin(summary["model"])]
        if not lost.empty:
            lost = lost.groupby("model", as_index=False).agg(
                method=("method", "first"), k=("k", "first"),
                grad_snr_q_init=("grad_snr_q_init", "mean"),
                grad_snr_p_init=("grad_snr_p_init", "mean"))
            snr = pd.concat([snr, lost.assign(grad_snr_q=math.nan, grad_snr_p=math.nan,
                                              failed=True)], ignore_index=True)
    snr["estimator_name"] = snr["model"].str.replace(r" ?k=\d+", "", regex=True)
    snr["shared_k1"] = False
    lines = {name: rows for name, rows in snr.groupby("estimator_name", sort=True)}
    for name, rows in list(lines.items()):
        method = str(rows["method"].iloc[0])
        twin = SAME_AT_K1.get(method)
        if twin is None or (rows["k"] == 1).any():
            continue
        twin_name = twin + name[len(method):] if name.startswith(method) else None
        donor = lines.get(twin_name) if twin_name else None
        if donor is not None and (donor["k"] == 1).any():
            borrowed = donor[donor["k"] == 1].assign(shared_k1=True, estimator_name=name,
                                                     method=method)  # drawn in its borrower's colour
            lines[name] = pd.concat([borrowed, rows])
    return {name: rows.sort_values("k") for name, rows in lines.items()}


def diagnostics_figures(scored: pd.DataFrame, directory: Path, dataset: str,
                        failed: pd.DataFrame | None = None) -> list[Path]:
    """The paper's decomposition and the estimators, where measured: the posterior gaps
    (ELBO - NLL and k-bound - NLL, one pair of bars per model with its 95% interval over
    test examples), the test estimator's effective sample size, and the gradient SNR of
    q's and p's parameters against k per method (trained solid, at initialisation dashed)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator

    from genvar_bench.tables import summarize

    summary = summarize(scored, directory)
    written: list[Path] = []
    if summary.empty:
        return written
    if "elbo_gap" in summary and summary["elbo_gap"].notna().any():
        gaps = summary[summary["elbo_gap"].notna()].reset_index(drop=True)
        colours = [family_colour(str(method)) for method in gaps["method"]]
        figure, axes = plt.subplots(figsize=(7.5, 0.5 * len(gaps) + 1.8))
        rows = range(len(gaps))
        for offset, name, label, hatch in ((-0.2, "elbo_gap", "ELBO - NLL: E KL(q(tau|x) || p(tau|x))", ""),
                                           (0.2, "k_gap", "k-sample bound - NLL (its own k)", "///")):
            values = gaps[name] if name in gaps else pd.Series([math.nan] * len(gaps))
            errors = gaps[f"{name}_ci95"] if f"{name}_ci95" in gaps else None
            axes.barh([row + offset for row in rows], values, height=0.38, xerr=errors, color=colours,
                      alpha=1.0 if not hatch else 0.45, hatch=hatch, edgecolor="white", capsize=2,
                      label=label)
        axes.set_yticks(list(rows), gaps["model"])
        axes.invert_yaxis()
        axes.set_xlabel("nats per test example (95% interval over test examples)")
        axes.set_title(f"{dataset}: the posterior gap of each model's q\n"
                       "(RBM: zero by construction; diffusion: its NLL is its bound)", fontsize=9)
        _kind_legend(axes, "ELBO - NLL: E KL(q(tau|x) || p(tau|x))", "k-sample bound - NLL (its own k)")
        written.append(directory / "figures" / "posterior_gap.png")
        _save(figure, written[-1])
        plt.close(figure)
    if "test_ess_mean" in summary and summary["test_ess_mean"].notna().any():
        ess = summary[summary["test_ess_mean"].notna()].reset_index(drop=True)
        colours = [family_colour(str(method)) for method in ess["method"]]
        figure, axes = plt.subplots(figsize=(7.5, 0.5 * len(ess) + 1.8))
        rows = range(len(ess))
        axes.barh([row - 0.2 for row in rows], ess["test_ess_mean"], height=0.38, color=colours,
                  label="mean over test examples")
        axes.barh([row + 0.2 for row in rows], ess["test_ess_p1"], height=0.38, color=colours,
                  alpha=0.45, hatch="///", edgecolor="white", label="the worst 1% (1st percentile)")
        axes.set_yticks(list(rows), [f"{model} ({estimator})" for model, estimator
                                     in zip(ess["model"], ess["estimator"])])
        axes.invert_yaxis()
        axes.set_xscale("log")
        axes.set_xlabel("effective sample size (sum w)^2 / sum w^2 of the test estimator's K weights")
        axes.set_title(f"{dataset}: how many of the test NLL's importance samples count")
        _kind_legend(axes, "mean over test examples", "the worst 1% (1st percentile)")
        written.append(directory / "figures" / "ess.png")
        _save(figure, written[-1])
        plt.close(figure)
    if "grad_snr_q" in summary and summary["grad_snr_q"].notna().any():
        snr = snr_lines(summary, failed)
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        markers = "osD^vP"
        for axis, part, title in ((axes[0], "q", "q's parameters (inference)"),
                                  (axes[1], "p", "p's parameters (generation)")):
            for index, (label, lines) in enumerate(snr.items()):
                colour = family_colour(str(lines["method"].iloc[0]))
                axis.plot(lines["k"], lines[f"grad_snr_{part}"], marker=markers[index % len(markers)],
                          color=colour, label=f"{label}, trained")
                axis.plot(lines["k"], lines[f"grad_snr_{part}_init"], marker=markers[index % len(markers)],
                          linestyle="--", color=colour, alpha=0.6, label=f"{label}, at initialisation")
            axis.set_xscale("log")
            axis.set_yscale("log")
            ticks = sorted({int(k) for lines in snr.values() for k in lines["k"]})
            axis.set_xticks(ticks, [str(k) for k in ticks])
            axis.xaxis.set_minor_locator(NullLocator())
            axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            axis.yaxis.set_minor_locator(NullLocator())
            axis.set_xlabel("k (samples per gradient)")
            axis.set_title(title)
        axes[0].set_ylabel("SNR: mean over parameters of |E g| / sd g")
        _legend_outside(axes[1])
        figure.suptitle(f"{dataset}: gradient signal-to-noise ratio against k "
                        "(Rainforth et al. 2018: IWAE's q falls as 1/sqrt(k), p's rises)")
        notes = []
        shared = [name for name, lines in snr.items() if lines["shared_k1"].any()]
        if shared:
            notes.append(f"{', '.join(shared)} at k=1: the VAE's k=1 row (the same loss and "
                         "gradient, bit for bit)")
        notes += [f"{name} at k={', '.join(str(k) for k in lines.loc[lines['failed'], 'k'])}: "
                  "diverged, at initialisation only" for name, lines in snr.items()
                  if lines["failed"].any()]
        if notes:
            figure.text(0.5, -0.02, "; ".join(notes), ha="center", va="top", fontsize=9)
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
