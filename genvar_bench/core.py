"""The seed's view in code.

Every method pairs an inference side q(x, tau) = D(x) q(tau | x) with a
generation side p(x, tau) = p(x | tau) p(tau), and trains them by minimising
KL(q(x, tau) || p(x, tau)). Since KL(q || p) >= KL(q(x) || p(x)), the
per-example quantity E_q(tau|x)[log q(tau|x) - log p(x, tau)] bounds -log p(x)
from above; averaged over D it is KL(q || p) - E_q(x)[log q(x)].

D(x) is the data loader; `InferenceModel` is q(tau | x); `GenerativeModel` is
p(x, tau). A `Method` says how the two are trained and scored.
"""
from __future__ import annotations

import abc
from typing import Callable, ClassVar

import torch
from torch import nn

from genvar_bench.ops import get_ops


class InferenceModel(nn.Module, abc.ABC):
    """q(tau | x): draws latent trajectories tau for each x."""


class GenerativeModel(nn.Module, abc.ABC):
    """p(x, tau) = p(x | tau) p(tau)."""


class Method(nn.Module, abc.ABC):
    """A training method: q, p, a loss, and per-example bounds in nats.

    Subclasses set `name` and implement `loss` and `log_weights`.
    `log_weights(x, k)[i, b] = log p(x_b, tau_i) - log q(tau_i | x_b)` with
    tau_i ~ q(tau | x_b): every bound and estimate below is built from it.
    """

    name: ClassVar[str]
    # Sample counts `run` trains when none are given; None: the profile's.
    default_num_samples: ClassVar[tuple[int, ...] | None] = None
    # The data p models: "binary" or "continuous" (a dataset's `kind`).
    data_kind: ClassVar[str] = "binary"

    def __init__(self, inference: InferenceModel, generative: GenerativeModel,
                 num_samples: int, backend: str):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples (k) must be >= 1, got {num_samples}")
        self.q = inference
        self.p = generative
        self.num_samples = num_samples
        self.backend = backend
        self.ops = get_ops(backend)

    @abc.abstractmethod
    def log_weights(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """[k, B] log importance weights log p(x, tau) - log q(tau | x), tau ~ q(tau | x)."""

    @abc.abstractmethod
    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[B] this method's own upper bound on -log p(x) in nats, estimated with its
        k samples: per example, its share of KL(q || p) - E_q(x)[log q(x)]."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for a batch x [B, D]: the mean bound, an estimate
        of KL(q || p) up to the constant E_D[log D(x)]."""
        return self.bound(x).mean()

    def prepare_training(self, train_data: torch.Tensor) -> None:
        """Called once before training: a method may set data-dependent initial values."""

    def make_optimizer(self, profile) -> torch.optim.Optimizer:
        """The optimizer: Adam with the profile's eps (the IWAE paper's); its learning
        rate is set per epoch from `epoch_settings`."""
        return torch.optim.Adam(self.parameters(), lr=profile.stages[0][1],
                                betas=(0.9, 0.999), eps=profile.adam_eps)

    def epoch_settings(self, profile) -> list[dict[str, float]]:
        """One dict per epoch of optimizer settings (e.g. lr) applied to every param
        group at the epoch's start: here the profile's staged learning rates."""
        return [{"lr": rate} for epochs, rate in profile.stages for _ in range(epochs)]

    def training_batch_size(self, profile) -> int:
        return profile.batch_size

    def prepare_scoring(self, train_data: torch.Tensor) -> None:
        """Called once after training, before any bound is scored: a method whose
        p depends on the training set (the DAE's prior) fixes it here."""

    def test_nll(self, x: torch.Tensor, eval_samples: int, progress=None):
        """(per-example estimate of -log p(x) [N], the estimator's name, and None or
        the estimate's split into named terms): here importance sampling with
        eval_samples draws from q, the IWAE paper's test estimator."""
        from genvar_bench.estimators import importance_nll

        return (importance_nll(self, x, eval_samples, progress=progress),
                f"IS k={eval_samples}", None)

    def importance_bound_samples(self, num_examples: int, candidates: tuple[int, ...]) -> tuple[int, ...]:
        """Which of the candidate k the k-sample bound is reported at, over num_examples."""
        return candidates

    def importance_bound(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """[B] -log (1/k) sum_i w_i with k = num_samples: the bound of the resampled
        q_p^k. With k = 1 it is the negative ELBO; it tightens as k grows."""
        bound, _ = self.ops.iwae_bound(self.log_weights(x, num_samples))
        return -bound


METHODS: dict[str, Callable[..., Method]] = {}


def register(name: str):
    """Decorator of a Method subclass, or of a function building one: adds it to the
    registry under `name`. Keyword parameters beyond data_dim, layers, num_samples
    and backend are the method's options (see `method_options`)."""
    def decorate(cls):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


def build_method(name: str, **config) -> Method:
    """Instantiates a registered method; unknown names list the known ones."""
    import genvar_bench.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**config)


STANDARD_PARAMETERS = ("self", "data_dim", "layers", "num_samples", "backend")


def method_options(name: str) -> dict[str, object]:
    """{option: default} of a registered method, e.g. rws: {q_update: wake, latent: gaussian}."""
    import inspect

    import genvar_bench.methods  # noqa: F401

    return {parameter.name: parameter.default
            for parameter in inspect.signature(METHODS[name]).parameters.values()
            if parameter.name not in STANDARD_PARAMETERS}
