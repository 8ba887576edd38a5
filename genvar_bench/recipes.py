"""How a method trains: its training recipe, read by `train.train`.

A recipe gives, for a method and a profile, the data-dependent start (`prepare`), the
optimizer, the optimizer settings of each epoch (learning rate, momentum) and the batch
size. `TrainingRecipe` is the IWAE paper's: Adam (beta1 0.9, beta2 0.999, the profile's
eps) at the profile's staged learning rates, in the profile's batches. A family with
another (the RBMs' SGD with momentum) declares it (`registry.family_defaults`).
"""
from __future__ import annotations

import torch


class TrainingRecipe:
    """Adam on the profile's staged learning rates and batch size."""

    def prepare(self, method, train_data: torch.Tensor) -> None:
        """Called once before training: data-dependent initial values (none here)."""

    def optimizer(self, method, profile) -> torch.optim.Optimizer:
        """Adam with the profile's eps; its learning rate is set per epoch from
        `epoch_settings`. The fused implementation: one kernel for every parameter,
        where the default on the CPU is a loop of small ops per parameter and moment."""
        return torch.optim.Adam(method.parameters(), lr=profile.stages[0][1],
                                betas=(0.9, 0.999), eps=profile.adam_eps, fused=True)

    def epoch_settings(self, method, profile) -> list[dict[str, float]]:
        """One dict per epoch of optimizer settings (e.g. lr) applied to every param
        group at the epoch's start: here the profile's staged learning rates."""
        return [{"lr": rate} for epochs, rate in profile.stages for _ in range(epochs)]

    def batch_size(self, method, profile) -> int:
        return profile.batch_size


class LegacyRecipe(TrainingRecipe):
    """The recipe of a method class of the earlier API, whose own `prepare_training`,
    `make_optimizer`, `epoch_settings` or `training_batch_size` define it; what it does
    not define is its family's (`base`), else the default's."""

    def __init__(self, base: TrainingRecipe | None = None):
        self.base = base or TrainingRecipe()

    def prepare(self, method, train_data):
        hook = getattr(method, "prepare_training", None)
        return hook(train_data) if hook is not None else self.base.prepare(method, train_data)

    def optimizer(self, method, profile):
        hook = getattr(method, "make_optimizer", None)
        return hook(profile) if hook is not None else self.base.optimizer(method, profile)

    def epoch_settings(self, method, profile):
        hook = getattr(method, "epoch_settings", None)
        return hook(profile) if hook is not None else self.base.epoch_settings(method, profile)

    def batch_size(self, method, profile):
        hook = getattr(method, "training_batch_size", None)
        return hook(profile) if hook is not None else self.base.batch_size(method, profile)
