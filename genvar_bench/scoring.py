"""How a trained method is scored: its scorer, which the runner, `score` and the check
before training use.

A scorer readies a trained method for scoring (`prepare`: the DAE's prior from the
training set, an RBM's log Z by AIS), estimates each test example's -log p(x)
(`test_nll`, with the estimator's name and, where it has them, its terms) and says at which
k the k-sample bound is reported (`bound_samples`). `ImportanceScorer` is the IWAE
paper's: importance sampling with `eval_samples` draws from q. Families with another
declare it (`registry.family_defaults`); `settings` are what a run's spec records of it.
"""
from __future__ import annotations

from typing import Any

import torch


class Scorer:
    """Importance sampling: the test NLL is -log (1/k) sum_i w_i with k = eval_samples."""

    settings: dict[str, Any] = {}
    # The budget curve's evaluation (`budget.BudgetCurve`): test examples and samples.
    curve_examples: int = 1000
    curve_samples: int = 500

    def prepare(self, method, train_data: torch.Tensor, show_progress: bool = False) -> None:
        """Called once after training, before any bound is scored (nothing here)."""

    def prepare_check(self, method, batch: torch.Tensor) -> None:
        """Readies a method for the check before training (`preflight.check_method`, which
        runs it on a copy) on one batch: `prepare`, or a cheap form of a long one."""
        self.prepare(method, batch)

    def prepare_stage(self, method, train_data: torch.Tensor) -> None:
        """Readies a copy of a method in training for the budget curve's evaluation
        (`budget.BudgetCurve`): `prepare`, or a cheaper form of a long one."""
        self.prepare(method, train_data)

    def test_nll(self, method, x: torch.Tensor, eval_samples: int, progress=None):
        """(per-example estimate of -log p(x) [N], the estimator's name, and None or the
        estimate's split into named terms)."""
        from genvar_bench.estimators import importance_nll

        return (importance_nll(method, x, eval_samples, progress=progress),
                f"IS k={eval_samples}", None)

    def bound_samples(self, method, num_examples: int, candidates: tuple[int, ...]) -> tuple[int, ...]:
        """Which of the candidate k the k-sample bound is reported at, over num_examples."""
        return candidates

    def test_nll_and_ess(self, method, x: torch.Tensor, eval_samples: int, progress=None):
        """`test_nll`'s (estimate [N], name, terms) and, for an importance-sampled estimate,
        the effective sample size of each example's weights [N] from the same draws
        (`estimators.importance_nll_and_ess`); None for a scorer whose own `test_nll` is
        not importance sampling."""
        if type(self).test_nll is not Scorer.test_nll:
            return (*self.test_nll(method, x, eval_samples, progress), None)
        from genvar_bench.estimators import importance_nll_and_ess

        nll, ess = importance_nll_and_ess(method, x, eval_samples, progress=progress)
        return nll, f"IS k={eval_samples}", None, ess


ImportanceScorer = Scorer


class LegacyScorer(Scorer):
    """The scoring of a method class of the earlier API, whose own `prepare_scoring`,
    `prepare_check`, `test_nll` or `importance_bound_samples` define it; what it does not
    define is its family's (`base`), else importance sampling."""

    def __init__(self, base: Scorer | None = None, settings: dict[str, Any] | None = None):
        self.base = base or Scorer()
        self.settings = dict(self.base.settings if settings is None else settings)

    def prepare(self, method, train_data, show_progress=False):
        hook = getattr(method, "prepare_scoring", None)
        if hook is None:
            return self.base.prepare(method, train_data, show_progress)
        method.show_progress = show_progress
        return hook(train_data)

    def prepare_check(self, method, batch):
        hook = getattr(method, "prepare_check", None)
        return hook(batch) if hook is not None else self.prepare(method, batch)

    def test_nll(self, method, x, eval_samples, progress=None):
        hook = getattr(method, "test_nll", None)
        return (hook(x, eval_samples, progress=progress) if hook is not None
                else self.base.test_nll(method, x, eval_samples, progress))

    def test_nll_and_ess(self, method, x, eval_samples, progress=None):
        if getattr(method, "test_nll", None) is None:
            return self.base.test_nll_and_ess(method, x, eval_samples, progress)
        return (*self.test_nll(method, x, eval_samples, progress), None)

    def bound_samples(self, method, num_examples, candidates):
        hook = getattr(method, "importance_bound_samples", None)
        return (hook(num_examples, candidates) if hook is not None
                else self.base.bound_samples(method, num_examples, candidates))
