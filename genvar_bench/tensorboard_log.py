"""A run's curves in TensorBoard (`run --tensorboard DIR`): one TensorBoard run per row,
named by its specification's file stem (readable settings and the spec's hash), with per
epoch the training loss (the method's bound, or its surrogate), the test bound on a fixed
subset of the test set, the learning rate and the training throughput; at each stage end
of the budget curve its test NLL and a grid of samples; at the end the row's figures.

Everything it evaluates runs on a copy of the model under a random generator of its own,
so the row is bit for bit what it is without the log. Needs the `tensorboard` package
(`pip install -e ".[tensorboard]"`).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from genvar_bench import estimators
from genvar_bench.budget import curve_subset

# Test examples of the per-epoch test bound (spread over the test set) and samples per grid.
BOUND_EXAMPLES = 1000
GRID_SAMPLES = 64


def available() -> str | None:
    """None where TensorBoard logs can be written; else why not, as one line."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs tensorboard)
    except ImportError:
        return ("--tensorboard needs the tensorboard package: "
                "pip install -e \".[tensorboard]\" (or pip install tensorboard)")
    return None


def run_directory(root: str | Path, spec) -> Path:
    """The TensorBoard run of a row: root/<dataset>/<profile>/<spec file stem>."""
    return Path(root) / spec.dataset / spec.profile / spec.file_stem


def image_grid(samples: torch.Tensor, image_shape: tuple[int, int],
               value_range: tuple[float, float], columns: int = 8) -> torch.Tensor:
    """[1, H * rows, W * columns] in [0, 1] (1 = the dataset's high value) from samples [n, D]."""
    low, high = value_range
    height, width = image_shape
    images = ((samples.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    images = images.reshape(-1, height, width)
    rows = math.ceil(images.shape[0] / columns)
    grid = torch.zeros(rows * height, columns * width)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return grid.unsqueeze(0)


class TensorBoardLog:
    """Called after each epoch (`train.train`'s on_epoch, after the budget curve): writes
    the epoch's scalars and, at a budget-curve point, its NLL and a sample grid."""

    def __init__(self, root: str | Path, spec, method, data, learning_rates: list[float],
                 seed: int):
        from torch.utils.tensorboard import SummaryWriter

        self.directory = run_directory(root, spec)
        self.writer = SummaryWriter(log_dir=str(self.directory))
        self.writer.add_text("spec", f"`{spec.key}`\n\n```\n{spec.to_json()}\n```", 0)
        self.method, self.data, self.seed = method, data, seed
        self.learning_rates = learning_rates
        test = data.test
        self.test_x = test[curve_subset(test.shape[0], BOUND_EXAMPLES)]
        self.examples = data.train.shape[0]
        self.curve_points = 0

    def __call__(self, stats) -> None:
        epoch, seconds, loss = stats.history[-1]
        previous = stats.history[-2][1] if len(stats.history) > 1 else 0.0
        writer = self.writer
        writer.add_scalar("train/loss", loss, epoch)
        if epoch - 1 < len(self.learning_rates):
            writer.add_scalar("train/learning_rate", self.learning_rates[epoch - 1], epoch)
        if seconds > previous:
            writer.add_scalar("train/examples_per_second", self.examples / (seconds - previous), epoch)
        device = next(self.method.parameters(), torch.zeros(())).device
        test_x = self.test_x.to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(self.seed + 7_000_003 * epoch)
            scored = copy.deepcopy(self.method).eval()
            writer.add_scalar("test/bound", estimators.per_example_bound(scored, test_x).double().mean().item(),
                              epoch)
            if len(stats.curve) > self.curve_points:  # a stage end: the budget curve's point
                self.curve_points = len(stats.curve)
                _, bound, nll, _ = stats.curve[-1]
                writer.add_scalar("budget/test_nll", nll, epoch)
                writer.add_scalar("budget/test_bound", bound, epoch)
                if self.data.image_shape is not None:
                    samples = scored.sample(GRID_SAMPLES)
                    writer.add_image("samples", image_grid(samples, self.data.image_shape,
                                                           self.data.value_range), epoch)
        writer.flush()

    def finish(self, row: dict) -> None:
        """The row's final figures, at its last epoch; closes the log."""
        epoch = int(row.get("epochs") or 0)
        for name in ("test_nll", "test_bound", "train_bound"):
            value = row.get(name)
            if isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(f"final/{name}", value, epoch)
        self.writer.close()
