"""The view of Bachman & Precup's paper in code.

Every method pairs an inference side q(x, tau) = D(x) q(tau | x) with a
generation side p(x, tau) = p(x | tau) p(tau), and trains them by minimising
KL(q(x, tau) || p(x, tau)). Since KL(q || p) >= KL(q(x) || p(x)), the
per-example quantity E_q(tau|x)[log q(tau|x) - log p(x, tau)] bounds -log p(x)
from above; averaged over D it is KL(q || p) - E_q(x)[log q(x)].

D(x) is the data loader; `InferenceModel` is q(tau | x); `GenerativeModel` is
p(x, tau); a `Draw` is tau ~ q(tau | x). A `Method` holds one q and one p and says
how they are trained (its objective) and scored. The importance log-weight
log p(x, tau) - log q(tau | x), from which every bound is built, is formed in one
place, `Method.log_weights`.
"""
from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from genvar_bench.ops import get_ops


@functools.lru_cache(maxsize=None)
def _ops_of(backend: str) -> Any:
    return get_ops(backend)

# How gradients reach q's parameters through a draw (`InferenceModel.sample`):
# through the sample itself (z = mu + sigma * noise), with their sign reversed on q's
# parameters and none through the sample (the wake-phase q update of reweighted
# wake-sleep), or not at all.
Q_GRADS = ("reparameterize", "reverse", "none")


@dataclass
class Draw:
    """tau_1..tau_k ~ q(tau | x) for each example of a batch x [B, ...].

    `latents`: the latent layers, bottom-up, each [k, B, ...]. `params`: per layer, q's
    parameters at x that the layer was drawn from (a family's own: (mu, logvar) of a
    diagonal Gaussian, (probabilities, logits) of Bernoulli units), so that p's
    `log_ratio` can score log q(tau | x) without a second pass through q. What they are is
    the q's family (`InferenceModel.q_family`): a p reads them only for a q of the family
    its fused log ratio is written for (`GenerativeModel.fused_for_q`).

    `log_q`: [k, B] log q(tau_i | x) of these very draws, for a q that can score only its
    own samples (an inverse-autoregressive flow computes it as it draws); where given, the
    exact log ratio uses it instead of calling `q.log_prob`."""

    latents: list[torch.Tensor]
    params: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    log_q: torch.Tensor | None = None


class _OnBackend(nn.Module):
    """A q or p: its backend is given at construction, so it works on its own."""

    def __init__(self, backend: str = "fused"):
        super().__init__()
        self.backend = backend

    @property
    def ops(self) -> Any:
        """The op set of its backend (`ops.get_ops`): the fused library or the reference."""
        return _ops_of(self.backend)


class InferenceModel(_OnBackend):
    """q(tau | x). The contract of every family:

    - `sample(x, num_samples, q_grad)` draws tau_1..tau_k ~ q(tau | x): a `Draw`;
    - `log_prob(x, latents)` is log q(tau | x) of given latents, per example;
    - `unit_means(x, num_samples)` is E_q[z_l | x] per stochastic layer, the statistic
      behind active-unit counts.

    What a family has is declared by the class attributes below, which the objectives and
    the runner read (never by probing for methods):
    - `can_sample`: sample gives a `Draw` of latent layers;
    - `q_grads`: the ways gradients can reach q's parameters through a draw (see
      Q_GRADS); the first is the default. A fixed q (diffusion's forward process) has
      none but "none";
    - `has_log_prob`: log_prob is defined;
    - `has_units`: it has latent units to count (unit_means is defined);
    - `q_family`: the family whose parameters its draws carry in `Draw.params`, by name
      (e.g. "diagonal-gaussian": per layer (mu, logvar) of q(z_l | .) itself), or None. A
      p's fused `log_ratio` reads those parameters only for a q of the family it declares
      (`GenerativeModel.fused_for_q`); any other q is scored as log p - log q. The claim
      covers the `sample` and `log_prob` of the class that makes it: a subclass that
      redefines either is of no family (None) unless it declares one itself.
    """

    can_sample: ClassVar[bool] = True
    q_grads: ClassVar[tuple[str, ...]] = ("none",)
    has_log_prob: ClassVar[bool] = True
    has_units: ClassVar[bool] = False
    q_family: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A flow built on a Gaussian encoder must not inherit the Gaussian's family.
        if "q_family" not in vars(cls) and ("sample" in vars(cls) or "log_prob" in vars(cls)):
            cls.q_family = None

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> Draw:
        """tau ~ q(tau | x), num_samples per example; q_grad one of `q_grads` (None:
        the first)."""
        raise NotImplementedError(f"{type(self).__name__} draws no tau")

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log q(tau | x) of `latents`, per example."""
        raise NotImplementedError(f"{type(self).__name__} has no log q(tau | x)")

    def unit_means(self, x: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
        """[B, Z_l] per stochastic layer: E_q[z_l | x]."""
        raise NotImplementedError(f"{type(self).__name__} has no latent units")

    def check_q_grad(self, q_grad: str | None) -> str:
        """The q_grad to use: the default for None; ValueError for one this q lacks."""
        if q_grad is None:
            return self.q_grads[0]
        if q_grad not in self.q_grads:
            raise ValueError(f"{type(self).__name__} takes q_grad among "
                             f"{', '.join(self.q_grads)}, got {q_grad!r}")
        return q_grad


class GenerativeModel(_OnBackend):
    """p(x, tau) = p(x | tau) p(tau). The contract of every family:

    - `log_prob(x, latents)` is log p(x, tau) per example; `log_likelihood(x, latents)`
      its first factor, log p(x | tau);
    - `log_ratio(x, draw, q)` is log p(x, tau) - log q(tau | x) at q's draw: the
      importance log-weight. By default the two densities apart; a family overrides it
      to compute both in one fused op;
    - `sample_latents(n)` draws tau ~ p(tau); `data_mean(latents)` is E_p[x | tau];
      `sample(n)` draws (x, tau) ~ p(x, tau).

    Every p has `log_ratio`. Declared abilities: `has_log_prob` (log_prob and
    log_likelihood are defined; where they are not, as for the RBM's chain, log_ratio is
    exact without them), `can_sample` (sample_latents, data_mean and sample are) and
    `fused_for_q`: the q family (`InferenceModel.q_family`) that a fused `log_ratio`
    holds for, or None where log_ratio assumes nothing of q. A fused log_ratio takes its
    fused path only where `fuses(q)`, and is `exact_log_ratio` for any other q."""

    has_log_prob: ClassVar[bool] = True
    can_sample: ClassVar[bool] = True
    fused_for_q: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A p that changes its densities (a mixture prior on a Gaussian decoder) but not
        # the fused log ratio written for the old ones is scored exactly, unless it says so.
        redefined = {"log_prob", "log_prior", "log_likelihood"} & set(vars(cls))
        if "fused_for_q" not in vars(cls) and redefined and "log_ratio" not in vars(cls):
            cls.fused_for_q = None

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(x, tau) per example."""
        raise NotImplementedError(f"{type(self).__name__} has no log p(x, tau)")

    def log_likelihood(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(x | tau) per example."""
        raise NotImplementedError(f"{type(self).__name__} has no log p(x | tau)")

    def log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        """[k, B] log p(x, tau_i) - log q(tau_i | x) at the draw's tau_i."""
        return self.exact_log_ratio(x, draw, q)

    def fuses(self, q: InferenceModel) -> bool:
        """Whether this p's fused log ratio holds for q: q declares the family it is for."""
        return self.fused_for_q is not None and getattr(q, "q_family", None) == self.fused_for_q

    def exact_log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        """[k, B] log p(x, tau_i) - log q(tau_i | x), the two densities apart; a TypeError
        naming what is missing where p or q cannot score the draw."""
        scorers: list[tuple[Any, str, str, Any]] = [(self, "p", "log p(x, tau)", GenerativeModel)]
        if draw.log_q is None:  # else q scored its own draws as it made them
            scorers.append((q, "q", "log q(tau | x)", InferenceModel))
        missing = [f"{type(model).__name__} ({role}) must provide log_prob(x, latents) = {what} "
                   "and declare has_log_prob = True" + (" (or put log q in Draw.log_q)" if role == "q" else "")
                   for model, role, what, base in scorers if not scores(model, base)]
        if missing:
            family = (f"its fused log ratio holds only for a q of family {self.fused_for_q!r} "
                      f"and {type(q).__name__} declares q_family="
                      f"{getattr(q, 'q_family', None)!r}, so " if self.fused_for_q is not None else "")
            raise TypeError(f"{type(self).__name__}.log_ratio cannot score the draws of "
                            f"{type(q).__name__}: {family}it needs the exact log p(x, tau) - "
                            f"log q(tau | x), for which {'; and '.join(missing)}")
        log_q = draw.log_q if draw.log_q is not None else q.log_prob(x, draw.latents)
        return self.log_prob(x, draw.latents) - log_q

    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """tau ~ p(tau): the latent layers, bottom-up, each [n, ...]."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw tau")

    def data_mean(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """[n, D] E_p[x | tau]."""
        raise NotImplementedError(f"{type(self).__name__} has no p(x | tau)")

    def sample(self, num_samples: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(x [n, D], tau) ~ p(x, tau)."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw (x, tau)")

    def own_parameter(self) -> torch.Tensor:
        """A parameter or buffer of p: the device and dtype of its draws."""
        return next(iter([*self.parameters(), *self.buffers()]))


def scores(model: InferenceModel | GenerativeModel,
           base: type[InferenceModel] | type[GenerativeModel]) -> bool:
    """Whether a q or p has a log density: declared (`has_log_prob`) and defined (its class
    implements log_prob, not the contract's stub)."""
    return bool(model.has_log_prob) and type(model).log_prob is not base.log_prob


class Method(nn.Module, abc.ABC):
    """A training method: one q, one p, an objective (`loss`), and per-example bounds.

    Subclasses implement `bound`; most override `loss`. `log_weights(x, k)[i, b] =
    log p(x_b, tau_i) - log q(tau_i | x_b)` with tau_i ~ q(tau | x_b): every bound and
    estimate below is built from it. How a method trains (optimizer, schedule, batch) is
    its `recipes.TrainingRecipe`, how it is scored its `scoring.Scorer`, and what `run`
    knows of it (options, default k, data kind) its `registry.MethodRecord`.
    """

    # State-dict keys of earlier versions and where they live now ({old: new}), so that
    # kept models and checkpoints saved before a move still load.
    moved_state: ClassVar[dict[str, str]] = {}

    def __init__(self, inference: InferenceModel, generative: GenerativeModel,
                 num_samples: int, backend: str):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples (k) must be >= 1, got {num_samples}")
        if not isinstance(inference, InferenceModel) or not isinstance(generative, GenerativeModel):
            raise TypeError("a Method takes an InferenceModel (q) and a GenerativeModel (p), got "
                            f"{type(inference).__name__} and {type(generative).__name__}")
        self.q = inference
        self.p = generative
        self.num_samples = num_samples
        self.backend = backend
        self.ops = _ops_of(backend)
        for model in (self.q, self.p):  # a q or p built without the method's backend
            if getattr(model, "backend", None) != backend:
                model.backend = backend

    def log_weights(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> torch.Tensor:
        """[k, B] log importance weights log p(x, tau) - log q(tau | x), tau ~ q(tau | x),
        k = num_samples; q_grad as in `InferenceModel.sample`."""
        return self.p.log_ratio(x, self.q.sample(x, num_samples, q_grad), self.q)

    @abc.abstractmethod
    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[B] this method's own upper bound on -log p(x) in nats, estimated with its
        k samples: per example, its share of KL(q || p) - E_q(x)[log q(x)]."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for a batch x [B, D]: the mean bound, an estimate
        of KL(q || p) up to the constant E_D[log D(x)]."""
        return self.bound(x).mean()

    def bound_terms(self, x: torch.Tensor, differentiable: bool = False) -> dict[str, torch.Tensor]:
        """The one-sample bound split as the paper writes it: the reconstruction term
        E_q[-log p(x | tau)] and the KL term E_q[log q(tau | x) - log p(tau)], each [B];
        {} for a method whose q draws no latent layers or whose p has no log p(x | tau).
        `differentiable=True` keeps the graph (q's draw reparameterised), so an objective
        built from the terms (a beta-VAE's reconstruction + beta * kl) takes one pass."""
        if not (self.q.can_sample and self.p.has_log_prob):
            return {}
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            draw = self.q.sample(x, 1)
            log_w = self.p.log_ratio(x, draw, self.q)[0]
            reconstruction = -self.p.log_likelihood(x, draw.latents)[0]
        return {"reconstruction": reconstruction, "kl": -log_w - reconstruction}

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """[n, D] E_p[x | tau] at n draws tau ~ p(tau)."""
        return self.p.data_mean(self.p.sample_latents(num_samples))

    def trajectory(self, num_samples: int, frames: int = 10) -> torch.Tensor | None:
        """[frames, n, D]: a chain from p's prior to the data, for methods whose p is one
        (diffusion); None for the others."""
        return None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self.moved_state.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def importance_bound(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """[B] -log (1/k) sum_i w_i with k = num_samples: the bound of the resampled
        q_p^k. With k = 1 it is the negative ELBO; it tightens as k grows."""
        bound, _ = self.ops.iwae_bound(self.log_weights(x, num_samples))
        return -bound


