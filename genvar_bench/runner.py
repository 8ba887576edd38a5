"""Trains and scores one configuration, producing one row of the results table."""
from __future__ import annotations

import datetime
import json
import functools
import math
import subprocess
import time
import secrets
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genvar_bench import estimators, figures
from genvar_bench.atomic import write_atomic, write_text_atomic
from genvar_bench.budget import CURVE_COLUMNS, BudgetCurve, curve_csv
from genvar_bench.data import Dataset
from genvar_bench.parallel import world
from genvar_bench.registry import record_of
from genvar_bench.spec import RunSpec
from genvar_bench.train import train


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The checkout's commit, with '+dirty' when the code differs from it; read once
    per process (the `run` command reads it at start), so rows name the code that ran."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "csrc", "genvar_bench"],
                               cwd=root, capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# Sample counts of the importance-weighted test bounds reported beside the NLL:
# the bound of the paper's resampled q_p^k tightens as k grows.
BOUND_SAMPLES = (1, 5, 50, 500, 5000)


def importance_bounds(method, test_x: torch.Tensor, eval_samples: int, nll: torch.Tensor,
                      nll_is_importance: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """({'test_iw_bound_k<k>': mean -log (1/k) sum_i w_i} at the BOUND_SAMPLES the method
    reports (NaN at the others), and the per-example values of those reported). An
    importance-sampled NLL is itself the k = eval_samples entry; larger k are left out."""
    reported = record_of(method).scorer.bound_samples(method, test_x.shape[0], BOUND_SAMPLES)
    columns, per_example = {}, {}
    for num_samples in BOUND_SAMPLES:
        name = f"test_iw_bound_k{num_samples}"
        value = float("nan")
        if nll_is_importance and num_samples == eval_samples:
            value = nll.mean().item()
            per_example[name] = nll.numpy()
        elif num_samples in reported and not (nll_is_importance and num_samples > eval_samples):
            values = estimators.importance_nll(method, test_x, num_samples).double().cpu()
            value = values.mean().item()
            per_example[name] = values.numpy()
        columns[name] = value
    return columns, per_example


def ess_columns(ess: torch.Tensor | None) -> dict:
    """The test estimator's effective sample size over test examples: its mean and its
    1st percentile (the worst 1% of examples have less); NaN without one."""
    if ess is None:
        return {"test_ess_mean": float("nan"), "test_ess_p1": float("nan")}
    ess = ess.double().cpu()
    return {"test_ess_mean": ess.mean().item(),
            "test_ess_p1": torch.quantile(ess, 0.01).item()}


def evaluate(method, data: Dataset, device: torch.device, eval_samples: int,
             show_progress: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """Train and test bounds, the test NLL (the method's estimator), the importance-weighted
    test bounds at BOUND_SAMPLES, the bound's terms and active units of latent models; and
    the per-example test NLLs and bounds ({"test_nll": [N], "test_bound": [N]})."""
    method.eval()
    start = time.perf_counter()
    train_x, test_x = data.train.to(device), data.test.to(device)
    with tqdm(total=test_x.shape[0], desc="test NLL", unit="ex",
              disable=not show_progress, leave=False, dynamic_ncols=True) as bar:
        nll, estimator, terms, ess = record_of(method).scorer.test_nll_and_ess(
            method, test_x, eval_samples, progress=bar.update)
    nll = nll.double().cpu()
    nll_mean = nll.mean().item()
    bounds, bounds_per_example = importance_bounds(method, test_x, eval_samples, nll,
                                                   estimator.startswith("IS"))
    if terms is None:
        terms = estimators.mean_bound_terms(method, test_x)
    else:
        terms = {name: values.double().mean().item() for name, values in terms.items()}
    units = estimators.active_units(method, test_x)
    train_bound = estimators.mean_bound(method, train_x)  # before the test bound: same draws as ever
    test_bound = estimators.per_example_bound(method, test_x).double().cpu()
    gap = test_bound - nll
    row = {
        "train_bound": train_bound,
        "test_bound": test_bound.mean().item(),
        "test_nll": nll_mean,
        # the standard error of mean(test bound - test NLL), paired over test examples
        "test_bound_gap_se": (gap.std().item() / math.sqrt(gap.numel())
                              if gap.numel() > 1 else float("nan")),
        "nll_estimator": estimator,
        **bounds,
        **ess_columns(ess),
        **{f"test_{name}": value for name, value in terms.items()},
        "active_units": sum(units) if units else float("nan"),
        "active_units_per_layer": "+".join(map(str, units)),
    }
    if data.kind == "continuous":
        row["test_bits_per_dim"] = bits_per_dim(nll_mean, data)
    per_example = {"test_nll": nll.numpy(), "test_bound": test_bound.numpy(), **bounds_per_example}
    if ess is not None:
        per_example["test_ess"] = ess.double().cpu().numpy()
    return {**row, "eval_seconds": time.perf_counter() - start}, per_example


def bits_per_dim(nll: float, data: Dataset) -> float:
    """A continuous model's mean NLL in nats as bits per dimension: of the discrete
    data where they were dequantized from levels, of the density otherwise."""
    offset = 0.0 if data.level_log_width is None else -data.level_log_width * data.data_dim
    return (nll + offset) / (data.data_dim * math.log(2))


# Samples drawn from each trained model for the grid saved beside the results.
GRID_SAMPLES = 100


def artifact_name(spec: RunSpec) -> str:
    """The name of one run's files: the spec's file stem and a token of this run, so a
    rerun (--force) writes beside the files of the row it replaces, never over them, and
    the row that is stored always names files of its own run."""
    return f"{spec.file_stem}-r{secrets.token_hex(3)}"


def artifact_paths(directory: Path, artifact: str) -> dict[str, Path]:
    """Where a run's files go under a results folder (dataset/profile): its sample grid,
    training curve, kept model (a .safetensors and a .json) and per-example test
    figures, all named by `artifact`."""
    return {"samples_path": directory / "samples" / f"{artifact}.png",
            "history_path": directory / "histories" / f"{artifact}.csv",
            "curve_path": directory / "curves" / f"{artifact}.csv",
            "model_path": directory / "models" / f"{artifact}.safetensors",
            "per_example_path": directory / "per_example" / f"{artifact}.npz"}


def remove_artifacts(directory: Path, artifact: str) -> None:
    """Removes a run's files (those of a row that another replaced)."""
    paths = artifact_paths(directory, artifact)
    paths["model_json"] = paths["model_path"].with_suffix(".json")
    paths["trajectory"] = paths["samples_path"].with_name(f"{artifact}-trajectory.png")
    paths["legacy_model"] = paths["model_path"].with_suffix(".pt")
    for path in paths.values():
        path.unlink(missing_ok=True)


def checkpoint_path(directory: Path, spec: RunSpec) -> Path:
    """A spec's training checkpoint: one per spec, resumed by any later run of it."""
    return directory / "checkpoints" / f"{spec.file_stem}.pt"


def run_one(spec: RunSpec, data: Dataset, device: str | torch.device | None = None, show_progress: bool = True,
            checkpoint: Path | None = None, checkpoint_seconds: float = 300.0,
            directory: Path | None = None, budget_curve: bool = True,
            tensorboard: str | Path | None = None) -> dict:
    """Trains `spec` on `data` (on `device`, default the spec's device type) and returns
    its results row. With `checkpoint`, training saves its state there every
    `checkpoint_seconds` and at its end, and resumes from it (see `train`). With
    `directory` (a results folder), the run keeps its files there, named by the row's
    `artifact` (`artifact_paths`): the trained model (`saved.save_model`), the per-example
    test NLLs and bounds, the training curve, the budget curve (`budget.BudgetCurve`, unless
    `budget_curve` is False: the row's figures are the same either way) and a sample grid.
    With `tensorboard` (a folder), the run's curves are logged there too
    (`tensorboard_log.TensorBoardLog`; the row is the same either way)."""
    if data.name != spec.dataset or data.binarization != spec.binarization:
        raise ValueError(f"the spec is of {spec.dataset} ({spec.binarization}), "
                         f"the data {data.name} ({data.binarization})")
    profile = spec.profile_settings()
    torch.manual_seed(spec.seed)
    device = torch.device(device or spec.device)
    method = spec.build_method(data.data_dim).to(device)
    train_x = data.train.to(device)
    rank, processes = world()
    check_before_training(method, train_x, record_of(method).recipe.batch_size(method, profile))
    curve = BudgetCurve(method, train_x, data.test.to(device), spec.seed) if budget_curve and rank == 0 else None
    board = None
    if tensorboard is not None and rank == 0:
        from genvar_bench.tensorboard_log import TensorBoardLog

        rates = [settings.get("lr", math.nan)
                 for settings in record_of(method).recipe.epoch_settings(method, profile)]
        board = TensorBoardLog(tensorboard, spec, method, data, rates, spec.seed)
    callbacks = [callback for callback in (curve, board) if callback is not None]

    def on_epoch(stats) -> None:
        for callback in callbacks:  # the curve first: the log shows its new point
            callback(stats)

    stats = train(method, data.training_data.to(device), profile, spec.seed,
                  show_progress and rank == 0, spec.label, checkpoint, checkpoint_seconds,
                  on_epoch=on_epoch if callbacks else None, binarize=data.dynamic)
    if rank != 0:
        return {}  # data-parallel training: process 0 scores and writes the row
    artifact = artifact_name(spec)
    paths = artifact_paths(directory, artifact) if directory is not None else {}
    if "history_path" in paths:
        save_history(stats, paths["history_path"])
    if "curve_path" in paths and curve is not None:
        write_text_atomic(paths["curve_path"], curve_csv(stats.curve, curve.estimator, curve.subset))
    method.eval()
    start = time.perf_counter()
    record_of(method).scorer.prepare(method, train_x, show_progress)  # AIS shows progress
    preparation_seconds = time.perf_counter() - start
    model_digest = ""
    if "model_path" in paths:
        from genvar_bench.saved import save_model
        model_digest = save_model(method, spec, data, paths["model_path"],
                                  commit=git_commit(), artifact=artifact)
    torch.manual_seed(spec.seed + 1)
    scores, per_example = evaluate(method, data, device, spec.eval_samples, show_progress)
    scores["eval_seconds"] += preparation_seconds  # scoring includes its preparation (AIS)
    if "per_example_path" in paths:
        save_per_example(per_example, paths["per_example_path"])
    if "samples_path" in paths:
        save_samples(method, data, paths["samples_path"])
    row = {
        "dataset": data.name, "profile": spec.profile, "status": "ok", "error": "",
        **spec.key_fields(), "spec_hash": spec.hash, **scores,
        "train_examples_per_s": stats.examples_per_second, "train_seconds": stats.seconds,
        "epochs": stats.epochs, "final_train_loss": stats.history[-1][2],
        "parameters": sum(p.numel() for p in method.parameters()),
        "binarization": data.binarization, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "processes": processes,
        "device_name": device_model_name(device), "git_commit": git_commit(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "artifact": artifact if paths else "", "model_sha256": model_digest,
        "budget_curve": json.dumps([dict(zip(CURVE_COLUMNS, point)) for point in stats.curve]),
        "budget_curve_estimator": f"{curve.estimator} on {curve.subset}" if curve is not None else "",
        "budget_curve_seconds": sum(point[3] for point in stats.curve),
    }
    if board is not None:
        board.finish(row)
    return row


def check_before_training(method, train_x: torch.Tensor, batch_size: int) -> None:
    """The method's shapes, finiteness and log-weights checked on one batch before the
    first step (`preflight.check_method`), under its own random generator."""
    from genvar_bench.preflight import check_method

    check_method(method, train_x[:batch_size])


def save_per_example(per_example: dict[str, np.ndarray], path: Path) -> None:
    """The per-example test figures as a compressed .npz (float64 arrays of length N)."""
    write_atomic(path, lambda target: np.savez_compressed(target, allow_pickle=False, **per_example))


def read_per_example(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def save_history(stats, path: Path) -> None:
    """The training curve as CSV (epoch, seconds, loss), written atomically."""
    write_text_atomic(path, "epoch,seconds,loss\n" + "".join(
        f"{epoch},{seconds:.3f},{loss!r}\n" for epoch, seconds, loss in stats.history))


def device_model_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "cpu"


def save_samples(method, data: Dataset, path: Path) -> None:
    """A PNG of GRID_SAMPLES samples at `path` (a grid of images, or a scatter of 2-D
    points over the test set); for models with a reverse chain, also a strip of
    TRAJECTORY_CHAINS chains from the prior to the data, beside it (-trajectory.png)."""
    samples = method.sample(GRID_SAMPLES if data.image_shape else SCATTER_SAMPLES)
    if data.image_shape is None:
        figures.save_scatter(samples, data.test, path)
        return
    figures.save_sample_grid(samples, data.image_shape, path, value_range=data.value_range)
    frames = method.trajectory(TRAJECTORY_CHAINS, TRAJECTORY_FRAMES)  # [frames, n, D] or None
    if frames is not None:
        figures.save_sample_grid(frames.transpose(0, 1).reshape(-1, frames.shape[-1]), data.image_shape,
                         path.with_name(f"{path.stem}-trajectory.png"), columns=frames.shape[0],
                         value_range=data.value_range)


TRAJECTORY_CHAINS, TRAJECTORY_FRAMES, SCATTER_SAMPLES = 4, 11, 2000


