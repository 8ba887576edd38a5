"""Trains and scores one configuration, producing one row of the results table."""
from __future__ import annotations

import datetime
import functools
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genvar_bench import estimators
from genvar_bench.core import build_method
from genvar_bench.data import Dataset
from genvar_bench.profiles import Profile
from genvar_bench.train import train


@dataclass(frozen=True)
class RunConfig:
    method: str
    num_samples: int
    layers: int
    seed: int
    device: str
    backend: str
    # The method's options as sorted (name, value) pairs, defaults included.
    options: tuple[tuple[str, object], ...] = ()

    @property
    def variant(self) -> str:
        """The options as text, e.g. "latent=binary,q_update=wake"; "" when none."""
        return ",".join(f"{name}={value}" for name, value in self.options)

    @property
    def label(self) -> str:
        variant = f" [{self.variant}]" if self.options else ""
        return f"{self.method}{variant} k={self.num_samples} L={self.layers}"

    @property
    def file_stem(self) -> str:
        variant = "".join(f"-{value}" for _, value in self.options)
        return (f"{self.method}{variant}-k{self.num_samples}-L{self.layers}-s{self.seed}"
                f"-{self.device.replace(':', '')}-{self.backend}")


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
# the bound of the seed's resampled q_p^k tightens as k grows.
BOUND_SAMPLES = (1, 5, 50, 500, 5000)


def importance_bounds(method, test_x: torch.Tensor, eval_samples: int, nll_mean: float) -> dict:
    """{'test_iw_bound_k<k>': mean -log (1/k) sum_i w_i} for k up to eval_samples; the
    k = eval_samples entry is the NLL estimate itself, larger k are left out (NaN)."""
    columns = {}
    for num_samples in BOUND_SAMPLES:
        if num_samples < eval_samples:
            value = estimators.importance_nll(method, test_x, num_samples).double().mean().item()
        else:
            value = nll_mean if num_samples == eval_samples else float("nan")
        columns[f"test_iw_bound_k{num_samples}"] = value
    return columns


def evaluate(method, data: Dataset, device: torch.device, eval_samples: int,
             show_progress: bool) -> dict:
    """Train and test bounds, the importance-sampled test NLL, the importance-weighted
    test bounds at BOUND_SAMPLES and active units."""
    method.eval()
    start = time.perf_counter()
    train_x, test_x = data.train.to(device), data.test.to(device)
    with tqdm(total=test_x.shape[0], desc=f"test NLL (k={eval_samples})", unit="ex",
              disable=not show_progress, leave=False, dynamic_ncols=True) as bar:
        nll = estimators.importance_nll(method, test_x, eval_samples, progress=bar.update)
    nll_mean = nll.double().mean().item()
    bounds = importance_bounds(method, test_x, eval_samples, nll_mean)
    units = estimators.active_units(method, test_x)
    terms = estimators.mean_bound_terms(method, test_x)
    return {
        "train_bound": estimators.mean_bound(method, train_x),
        "test_bound": estimators.mean_bound(method, test_x),
        "test_nll": nll_mean,
        "nll_estimator": f"IS k={eval_samples}",
        **bounds,
        **{f"test_{name}": value for name, value in terms.items()},
        "active_units": sum(units),
        "active_units_per_layer": "+".join(map(str, units)),
        "eval_seconds": time.perf_counter() - start,
    }


# Samples drawn from each trained model for the grid saved beside the results.
GRID_SAMPLES = 100


def run_one(config: RunConfig, data: Dataset, profile: Profile, show_progress: bool = True,
            samples_path: Path | None = None) -> dict:
    """Trains `config` on `data` under `profile` and returns its results row; with
    `samples_path`, saves a PNG grid of samples from the trained model there."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    method = build_method(config.method, data_dim=data.data_dim, layers=config.layers,
                          num_samples=config.num_samples, backend=config.backend,
                          **dict(config.options)).to(device)
    train_x = data.train.to(device)
    stats = train(method, train_x, profile, config.seed, show_progress, config.label)
    method.eval()
    method.prepare_scoring(train_x)
    torch.manual_seed(config.seed + 1)
    scores = evaluate(method, data, device, profile.eval_samples, show_progress)
    if samples_path is not None:
        save_sample_grid(method.sample(GRID_SAMPLES), data.image_shape, samples_path)
    return {
        "dataset": data.name, "profile": profile.name, "method": config.method,
        "variant": config.variant,
        "k": config.num_samples, "layers": config.layers, "seed": config.seed,
        "device": device.type, "backend": config.backend, **scores,
        "train_examples_per_s": stats.examples_per_second, "train_seconds": stats.seconds,
        "epochs": stats.epochs, "final_train_loss": stats.history[-1][2],
        "parameters": sum(p.numel() for p in method.parameters()),
        "binarization": data.binarization, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device_name": _device_name(device), "git_commit": git_commit(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _device_name(device: torch.device) -> str:
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


def save_sample_grid(images: torch.Tensor, image_shape: tuple[int, int], path: Path) -> None:
    """Tiles [n, H*W] Bernoulli means in [0, 1] into a square grid, written as a
    greyscale PNG (black = 1); written to a temporary name, then renamed."""
    import os

    import matplotlib.image

    count = images.shape[0]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = image_shape
    scale = max(1, 28 // height)  # small images (8 x 8 digits) are enlarged, pixels kept square
    images = images.detach().float().cpu().reshape(count, height, width)
    images = images.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    height, width = height * scale, width * scale
    canvas = torch.ones(rows * (height + 1) + 1, columns * (width + 1) + 1)
    for index, image in enumerate(images):
        top, left = 1 + (index // columns) * (height + 1), 1 + (index % columns) * (width + 1)
        canvas[top:top + height, left:left + width] = 1 - image
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    matplotlib.image.imsave(temporary, canvas.numpy(), cmap="gray", vmin=0, vmax=1)
    os.replace(temporary, path)
