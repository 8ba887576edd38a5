"""Test NLL against the training budget: at the end of each stage of the IWAE paper's
schedule (after 1, 4, 13, 40, 121, 364, 1093 and 3280 passes, as far as a run goes), the
method is scored on a fixed subset of the test set (its scorer's `curve_examples`, by
default CURVE_EXAMPLES, evenly spaced over the test set: MNIST's test set is ordered by
class in blocks, so its first 1,000 examples are not a sample of it): its own bound, and the test NLL by its scorer with
`curve_samples` importance samples (by default CURVE_SAMPLES; the DAE's mixture prior over
every training code takes fewer; the RBMs' AIS fewer temperatures; diffusion its all-steps
bound on fewer examples), so that the curve costs a few percent of the training.

Each evaluation scores a copy of the method under a random generator of its own
(`torch.random.fork_rng`), so the trained model and the row's final figures are bit for
bit what they are without the curve; its time is left out of the training time.
"""
from __future__ import annotations

import copy
import time

import torch

from genvar_bench import estimators
from genvar_bench.registry import record_of

STAGE_ENDS = (1, 4, 13, 40, 121, 364, 1093, 3280)
CURVE_EXAMPLES = 1000
CURVE_SAMPLES = 500
# The columns of a curve point, as `TrainStats.curve` keeps them.
CURVE_COLUMNS = ("epochs", "test_bound", "test_nll", "eval_seconds")


class BudgetCurve:
    """Called by `train.train` after each epoch (`on_epoch`): at a stage end, appends
    (epochs, test bound, test NLL, seconds) of the subset to `stats.curve`."""

    def __init__(self, method, train_x: torch.Tensor, test_x: torch.Tensor, seed: int):
        self.method, self.train_x = method, train_x
        self.scorer = record_of(method).scorer
        self.test_x = test_x[curve_subset(test_x.shape[0], self.scorer.curve_examples)]
        self.seed = seed
        self.estimator = ""
        self.subset = subset_text(test_x.shape[0], self.test_x.shape[0])

    def __call__(self, stats) -> None:
        if stats.epochs in STAGE_ENDS:
            stats.curve.append(self.point(stats.epochs))

    def point(self, epochs: int) -> tuple[int, float, float, float]:
        start = time.perf_counter()
        device = self.test_x.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(self.seed + 1_000_003 * epochs)
            scored = copy.deepcopy(self.method).eval()
            self.scorer.prepare_stage(scored, self.train_x)
            bound = estimators.per_example_bound(scored, self.test_x).double().mean().item()
            nll, self.estimator, _ = self.scorer.test_nll(scored, self.test_x, self.scorer.curve_samples)
        return (epochs, bound, nll.double().mean().item(), time.perf_counter() - start)


def curve_subset(num_examples: int, wanted: int) -> slice:
    """Every (N // wanted)-th test example from the first: `wanted` of them, spread over the
    whole test set (all of it where it is smaller)."""
    step = max(1, num_examples // max(1, wanted))
    return slice(0, step * wanted, step)


def subset_text(num_examples: int, taken: int) -> str:
    step = max(1, num_examples // max(1, taken))
    if step > 1:
        return f"every {step}th test example ({taken})"
    return f"all {taken} test examples" if taken == num_examples else f"the first {taken} test examples"


def curve_csv(curve: list, estimator: str, subset: str) -> str:
    """A run's curve as CSV, with the subset and the estimator in its header comment."""
    header = (f"# test NLL on {subset} by {estimator or 'its scorer'}\n"
              + ",".join(CURVE_COLUMNS) + "\n")
    return header + "".join(",".join(repr(value) for value in point) + "\n" for point in curve)
