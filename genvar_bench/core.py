"""The seed's view in code.

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
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from genvar_bench.ops import get_ops

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
    its fused log ratio is written for (`GenerativeModel.fused_for_q`)."""

    latents: list[torch.Tensor]
    params: list[tuple[torch.Tensor, ...]] = field(default_factory=list)


class InferenceModel(nn.Module):
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
    # The op set of the method holding this q (set by `Method`).
    ops: Any = None  # a SimpleNamespace of ops (`get_ops`); None until set

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


class GenerativeModel(nn.Module):
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
    # The op set of the method holding this p (set by `Method`).
    ops: Any = None  # a SimpleNamespace of ops (`get_ops`); None until set

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
        missing = [f"{type(model).__name__} ({role}) must provide log_prob(x, latents) = {what} "
                   "and declare has_log_prob = True"
                   for model, role, what, base in ((self, "p", "log p(x, tau)", GenerativeModel),
                                                   (q, "q", "log q(tau | x)", InferenceModel))
                   if not scores(model, base)]
        if missing:
            family = (f"its fused log ratio holds only for a q of family {self.fused_for_q!r} "
                      f"and {type(q).__name__} declares q_family="
                      f"{getattr(q, 'q_family', None)!r}, so " if self.fused_for_q is not None else "")
            raise TypeError(f"{type(self).__name__}.log_ratio cannot score the draws of "
                            f"{type(q).__name__}: {family}it needs the exact log p(x, tau) - "
                            f"log q(tau | x), for which {'; and '.join(missing)}")
        return self.log_prob(x, draw.latents) - q.log_prob(x, draw.latents)

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

    Subclasses set `name` (by `register`) and implement `bound`; most override `loss`.
    `log_weights(x, k)[i, b] = log p(x_b, tau_i) - log q(tau_i | x_b)` with
    tau_i ~ q(tau | x_b): every bound and estimate below is built from it.
    """

    name: ClassVar[str]
    # Sample counts `run` trains when none are given; None: the profile's.
    default_num_samples: ClassVar[tuple[int, ...] | None] = None
    # The data p models: "binary" or "continuous" (a dataset's `kind`).
    data_kind: ClassVar[str] = "binary"
    # The method's options (see `Option`; usually given to `register`), and what k counts.
    options: ClassVar[tuple] = ()
    k_meaning: ClassVar[str] = "importance samples"
    # (profile, data_dim) -> {option: default} for defaults that depend on them; None: none do.
    option_defaults: ClassVar[Callable[..., dict[str, object]] | None] = None
    # Where a plugin method was loaded from (`plugins.load_plugin`); None for built-ins.
    plugin: ClassVar[str | None] = None
    # Set by the runner: long scoring preparations (AIS) show a progress bar.
    show_progress: bool = False
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
        self.ops = get_ops(backend)
        self.q.ops = self.p.ops = self.ops

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

    @torch.no_grad()
    def bound_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The one-sample bound split as the seed writes it: the reconstruction term
        E_q[-log p(x | tau)] and the KL term E_q[log q(tau | x) - log p(tau)], each [B];
        {} for a method whose q draws no latent layers or whose p has no log p(x | tau)."""
        if not (self.q.can_sample and self.p.has_log_prob):
            return {}
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

    def prepare_training(self, train_data: torch.Tensor) -> None:
        """Called once before training: a method may set data-dependent initial values."""

    def make_optimizer(self, profile) -> torch.optim.Optimizer:
        """The optimizer: Adam with the profile's eps (the IWAE paper's); its learning
        rate is set per epoch from `epoch_settings`. The fused implementation: one kernel
        for every parameter, where the default on the CPU is a loop of small ops per
        parameter and moment (docs/speed.md: 1.2x steps/s for IWAE k=5 on MNIST)."""
        return torch.optim.Adam(self.parameters(), lr=profile.stages[0][1],
                                betas=(0.9, 0.999), eps=profile.adam_eps, fused=True)

    def epoch_settings(self, profile) -> list[dict[str, float]]:
        """One dict per epoch of optimizer settings (e.g. lr) applied to every param
        group at the epoch's start: here the profile's staged learning rates."""
        return [{"lr": rate} for epochs, rate in profile.stages for _ in range(epochs)]

    def training_batch_size(self, profile) -> int:
        return profile.batch_size

    def prepare_scoring(self, train_data: torch.Tensor) -> None:
        """Called once after training, before any bound is scored: a method whose
        p depends on the training set (the DAE's prior) fixes it here."""

    def prepare_check(self, batch: torch.Tensor) -> None:
        """Readies the method for the check before training (`preflight.check_method`,
        which runs it on a copy, or puts the state back after), which then scores `batch`
        with `bound` and `log_weights`: here `prepare_scoring(batch)`. A method whose
        preparation is long (AIS) does a cheap one: the check needs well-formed figures,
        not good ones."""
        self.prepare_scoring(batch)

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


@dataclass(frozen=True)
class Option:
    """One option of a method, declared once where the method is registered: `run` makes
    the flag `--<name>` from it (a comma list runs every value), checks each value against
    `choices` or [low, high] before any training, and passes it to the method's
    constructor as the keyword `name`. A `default` of None is resolved per profile and
    data by the method's `option_defaults`."""

    name: str
    kind: type
    default: object
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """`value` as the option's kind; ValueError saying what it takes otherwise."""
        try:
            value = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.flag} takes {self.kind.__name__} values, got {value!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise ValueError(f"{self.flag} takes finite numbers, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.flag} must be among {', '.join(map(str, self.choices))}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{self.flag} takes values from {self.low} to {self.high}, got {value!r}")
        return value

    def parse(self, text: str) -> list:
        """A comma-separated list of values, each checked; ValueError otherwise."""
        values = [self.check(item.strip()) for item in str(text).split(",") if item.strip()]
        if not values:
            raise ValueError(f"{self.flag} needs at least one value, got {text!r}")
        return values


class MethodBuilder(Protocol):
    """A registered method: a Method subclass or a function building one, with what
    `register` (and `plugins.load_plugin`) set on it."""

    name: str
    options: tuple[Option, ...]
    default_num_samples: tuple[int, ...] | None
    data_kind: str
    k_meaning: str
    option_defaults: Callable[..., dict[str, object]] | None
    plugin: str | None

    def __call__(self, *args: Any, **kwargs: Any) -> Method: ...


METHODS: dict[str, MethodBuilder] = {}


def register(name: str, *, options: tuple[Option, ...] | None = None,
             default_num_samples: tuple[int, ...] | None = None, data_kind: str | None = None,
             k_meaning: str | None = None,
             option_defaults: Callable[..., dict[str, object]] | None = None):
    """Decorator of a Method subclass, or of a function building one: adds it to the
    registry under `name`, with what `run` needs to know of it:
    - `options`: its Option declarations (each a keyword parameter of the builder);
    - `default_num_samples`: the k `run` trains when none are given (None: the profile's);
    - `data_kind`: "binary" (default) or "continuous";
    - `k_meaning`: what k counts for it ("importance samples" by default; "Gibbs sweeps
      per update", "diffusion steps per example");
    - `option_defaults(profile, data_dim)`: {option: default} for options whose default
      depends on the profile or the data.
    A keyword given here overrides the class attribute of the same name."""
    def decorate(builder):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        settings = {"options": options, "default_num_samples": default_num_samples,
                    "data_kind": data_kind, "k_meaning": k_meaning}
        for attribute, value in settings.items():
            # given here, else the builder's own (a class's, or inherited), else Method's
            if value is None:
                value = getattr(builder, attribute, getattr(Method, attribute))
            setattr(builder, attribute, tuple(value) if attribute == "options" else value)
        if option_defaults is not None:
            builder.option_defaults = staticmethod(option_defaults) if isinstance(builder, type) \
                else option_defaults
        elif not isinstance(builder, type):
            builder.option_defaults = None
        builder.plugin = None  # the plugin source, set by `plugins.load_plugin`
        _check_declaration(name, builder)
        builder.name = name
        METHODS[name] = builder
        return builder
    return decorate


def _check_declaration(name: str, builder) -> None:
    """Clear errors for a method whose declared options its builder cannot take, or
    whose option disagrees with another method's option of the same name."""
    parameters = inspect.signature(builder).parameters
    accepts_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    for option in builder.options:
        if not isinstance(option, Option):
            raise TypeError(f"method {name!r}: options must be Option declarations, got {option!r}")
        if option.name in STANDARD_PARAMETERS:
            raise ValueError(f"method {name!r}: option {option.name!r} is a standard parameter")
        if option.name not in parameters and not accepts_any:
            raise TypeError(f"method {name!r} declares option {option.name!r}, which its builder "
                            f"{builder.__qualname__} does not take as a keyword")
        for other_name, other in METHODS.items():
            for declared in other.options:
                if declared.name == option.name and (declared.kind, declared.choices, declared.low,
                                                     declared.high) != (option.kind, option.choices,
                                                                         option.low, option.high):
                    raise ValueError(f"method {name!r}: option {option.name!r} is declared otherwise "
                                     f"by {other_name!r} (one flag serves both: declare it alike)")


def method_spec_options(name: str) -> dict[str, Option]:
    """{option name: Option} of a registered method."""
    return {option.name: option for option in METHODS[name].options}


def resolved_option_defaults(name: str, profile, data_dim: int) -> dict[str, object]:
    """{option: default} of a registered method for this profile and data."""
    builder = METHODS[name]
    defaults = {option.name: option.default for option in builder.options}
    hook = builder.option_defaults
    if hook is not None:
        defaults.update(hook(profile, data_dim))
    return defaults


STANDARD_PARAMETERS = ("self", "data_dim", "layers", "num_samples", "backend")
