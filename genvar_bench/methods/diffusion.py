"""Diffusion probabilistic models (Sohl-Dickstein et al. 2015), the paper's fourth example.

q(x_{1:T} | x_0) is a fixed forward process from the data to a simple prior in T
small steps; p(x_{0:T}) = p(x_T) prod_t p(x_{t-1} | x_t) runs it backwards with
learned kernels. The latent trajectory is tau = x_{1:T}, and the bound on
-log p(x_0) is, exactly,

    L_T + sum_{t=1..T} E_q(x_t | x_0) KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),

L_T = KL(q(x_T | x_0) || p(x_T)); the t = 1 term is the reconstruction
E[-log p(x_0 | x_1)] (the posterior is x_0 itself). Every KL is in closed form
(the fused `diffusion_*_kl` ops); training draws k steps per example uniformly
and scales their sum by T / k, an unbiased estimate of the bound. Scoring sums
all T steps. `log_weights` scores whole trajectories drawn from q, for the
k-trajectory importance-weighted bound shared with the latent-variable models.

q is a `ForwardProcess` (fixed: no parameters), p a `ReverseProcess` (the prior
p(x_T), the learned kernels, their KLs to q's posteriors, and the reverse chain);
`DiffusionMethod` is the objective. A draw of q, `ForwardTrajectory`, is drawn in
chunks of steps as p reads it, so that memory stays bounded at any T.
"""
from __future__ import annotations

import abc
from typing import ClassVar

import torch

from genvar_bench.core import GenerativeModel, InferenceModel, Method
from genvar_bench.registry import Option, family_defaults
from genvar_bench.scoring import Scorer
from genvar_bench.methods.denoisers import NETWORKS, build_denoiser

SCHEDULES = ("paper", "linear")
# The options of both diffusion methods; T defaults to the profile's.
OPTIONS = (
    Option("diffusion_steps", int, None, "number of steps T (default: the profile's, quick "
           "100, else 1000)", low=2, high=100_000),
    Option("schedule", str, "paper", "paper (beta_t = 1/(T - t + 1), the default) or linear",
           choices=SCHEDULES),
    Option("network", str, "mlp", "the reverse network, mlp (default) or conv (square images)",
           choices=NETWORKS),
)


def option_defaults(profile, data_dim: int) -> dict[str, object]:
    return {"diffusion_steps": profile.diffusion_steps}

# Most work spent on the k-trajectory bounds of a test set, in network rows
# (k x T x examples) times (dims + 256): they are reported for the k that fit (on
# digits with T = 100, k <= 50; on MNIST with T = 1000, none: k = 1 alone is 1e10).
TRAJECTORY_BUDGET = 10**9
# Largest number of reverse-network outputs (steps x examples x dims) held at once,
# and most rows through the network in one call.
MAX_ELEMENTS = 2**23
NETWORK_ROWS = 2**14


def beta_schedule(name: str, num_steps: int, beta_first: float = 1e-3) -> torch.Tensor:
    """[T] float64 noise levels beta_1..beta_T.

    paper: beta_t = 1 / (T - t + 1), each step destroying a constant fraction of
    the signal left, beta_T = 1 (x_T is the prior exactly), and beta_1 = beta_first.
    linear: from beta_first up to the level that makes sum_t beta_t = 10
    (signal left ~ e^-10), at most 1."""
    if num_steps < 1:
        raise ValueError(f"the number of diffusion steps must be >= 1, got {num_steps}")
    if not 0 < beta_first <= 1:
        raise ValueError(f"beta_first must be in (0, 1], got {beta_first}")
    steps = torch.arange(1, num_steps + 1, dtype=torch.float64)
    if name == "paper":
        betas = 1 / (num_steps - steps + 1)
    elif name == "linear":
        beta_last = min(1.0, max(beta_first, 20 / num_steps - beta_first))
        betas = torch.linspace(beta_first, beta_last, num_steps, dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    betas[0] = beta_first
    return betas


def check_config(layers: int, diffusion_steps: int | None, network: str) -> None:
    """Clear errors for settings a diffusion model cannot take."""
    if layers != 1:
        raise ValueError(f"diffusion models take no layers setting other than 1, got layers={layers}")
    if diffusion_steps is None or int(diffusion_steps) != diffusion_steps or diffusion_steps < 1:
        raise ValueError(f"diffusion_steps (T) must be a positive integer (the profiles set it), "
                         f"got {diffusion_steps!r}")
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")


class ForwardProcess(InferenceModel):
    """q(x_{1:T} | x_0): the schedule and its cumulative products, as float64 buffers.
    Fixed: no gradient reaches it. Its draws are whole trajectories (`sample`), not
    latent layers with units."""

    can_sample = False  # a lazy ForwardTrajectory, not a Draw of latent layers
    q_grads = ("none",)
    # buffers (float64), registered in __init__
    betas: torch.Tensor
    alpha_bar: torch.Tensor

    def __init__(self, betas: torch.Tensor, backend: str = "fused"):
        super().__init__(backend)
        self.num_steps = betas.numel()
        self.register_buffer("betas", betas, persistent=False)
        # alpha_bar[s] = prod_{r <= s} (1 - beta_r), alpha_bar[0] = 1
        log_alpha = torch.log1p(-betas.clamp(max=1.0))
        self.register_buffer("alpha_bar", torch.cat([betas.new_ones(1), log_alpha.cumsum(0).exp()]),
                             persistent=False)

    def table(self, values: torch.Tensor, steps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[steps] in like's dtype, shaped to broadcast over like's last axis."""
        return values[steps].to(like.dtype).unsqueeze(-1)

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None):
        """num_samples trajectories x_{1:T} ~ q(x_{1:T} | x_0 = x) per example, drawn as read."""
        self.check_q_grad(q_grad)
        return ForwardTrajectory(self, x, num_samples)

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log q(x_{1:T} | x_0 = x) of a whole trajectory latents = [x_1, ..., x_T]."""
        states = [x.expand_as(latents[0]), *latents]
        total = x.new_zeros(())
        for step, (before, after) in enumerate(zip(states, states[1:]), 1):
            total = total + self.log_step(after, before, step)
        return total

    @abc.abstractmethod
    def sample_marginal(self, x0: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) [S, B, D] for x0 [B, D] and steps [S, B]."""

    @abc.abstractmethod
    def sample_step(self, previous: torch.Tensor, step: int) -> torch.Tensor:
        """x_t ~ q(x_t | x_{t-1})."""

    @abc.abstractmethod
    def log_step(self, state: torch.Tensor, previous: torch.Tensor, step: int) -> torch.Tensor:
        """log q(x_t | x_{t-1}) summed over the last axis."""

    @abc.abstractmethod
    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """[B] L_T = KL(q(x_T | x_0) || p(x_T))."""


class ForwardTrajectory:
    """A draw of q: num_samples trajectories x_{1:T} from each x_0, drawn in chunks of
    steps as they are read (`chunks`) so that at most MAX_ELEMENTS states live at once.
    Nothing is kept: reading it again draws other trajectories, so it is read once."""

    def __init__(self, forward_process: ForwardProcess, x0: torch.Tensor, num_samples: int):
        self.forward_process, self.x0, self.num_samples = forward_process, x0, num_samples

    def chunks(self):
        """(first step s, [x_{s-1}, x_s, ..., x_e]) for consecutive chunks of steps up to T;
        each list starts at the last state of the one before (x_0 for the first)."""
        batch, data_dim = self.x0.shape
        previous = self.x0.unsqueeze(0).expand(self.num_samples, batch, data_dim)
        chunk = max(1, MAX_ELEMENTS // max(1, self.num_samples * batch * data_dim))
        num_steps = self.forward_process.num_steps
        for start in range(1, num_steps + 1, chunk):
            states = [previous]
            for step in range(start, min(start + chunk, num_steps + 1)):
                states.append(self.forward_process.sample_step(states[-1], step))
            yield start, states
            previous = states[-1]


class ReverseProcess(GenerativeModel):
    """p(x_{0:T}): a fixed prior p(x_T) and learned kernels p(x_{t-1} | x_t) = f(x_t, t).
    A family defines the kernel's density (`step_log_prob`), its KL to q's posterior
    (`step_kl`), p(x_T) (`prior_log_prob`, `sample_prior`) and one reverse step."""

    # held, not a submodule (set in __init__)
    forward_process: ForwardProcess

    def __init__(self, forward_process: ForwardProcess, data_dim: int, network: str, outputs: int,
                 backend: str = "fused"):
        super().__init__(backend)
        self.network = build_denoiser(network, data_dim, forward_process.num_steps, outputs)
        self.data_dim = data_dim
        self.num_steps = forward_process.num_steps
        # The kernels read the schedule's tables; held, not registered as a submodule twice.
        object.__setattr__(self, "forward_process", forward_process)

    def outputs(self, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Network outputs [S, B, outputs * D] for states [S, B, D], steps [S, B]; at most
        NETWORK_ROWS rows at a time, so that hidden activations stay bounded too."""
        rows, steps = states.reshape(-1, states.shape[-1]), steps.reshape(-1)
        flat = torch.cat([self.network(rows[start:start + NETWORK_ROWS], steps[start:start + NETWORK_ROWS])
                          for start in range(0, rows.shape[0], NETWORK_ROWS)])
        return flat.reshape(*states.shape[:-1], flat.shape[-1])

    # ---- what a family defines
    @abc.abstractmethod
    def step_kl(self, x0: torch.Tensor, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """[S, B] KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) at x_t = states [S, B, D]."""

    @abc.abstractmethod
    def step_log_prob(self, previous: torch.Tensor, states: torch.Tensor,
                      steps: torch.Tensor) -> torch.Tensor:
        """[S, B] log p(x_{t-1} = previous | x_t = states)."""

    @abc.abstractmethod
    def prior_log_prob(self, states: torch.Tensor) -> torch.Tensor:
        """log p(x_T) summed over the last axis."""

    @abc.abstractmethod
    def sample_prior(self, num_samples: int) -> torch.Tensor:
        """[n, D] draws of x_T."""

    @abc.abstractmethod
    def reverse_step(self, states: torch.Tensor, step: int, last: bool) -> torch.Tensor:
        """A draw of x_{t-1} given x_t; with `last`, the mean of p(x_{t-1} | x_t) instead."""

    # ---- the contract, from those
    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(x_{0:T}) of x_0 = x and a whole trajectory latents = [x_1, ..., x_T]."""
        states = torch.stack([x.expand_as(latents[0]), *latents])
        steps = torch.arange(1, len(latents) + 1, device=x.device)
        steps = steps.reshape(-1, *[1] * (states.dim() - 2)).expand(len(latents), *states.shape[1:-1])
        return (self.step_log_prob(states[:-1], states[1:], steps).sum(0)
                + self.prior_log_prob(states[-1]))

    def log_likelihood(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(x_0 | x_1)."""
        steps = torch.ones(latents[0].shape[:-1], dtype=torch.long, device=x.device)
        return self.step_log_prob(x.expand_as(latents[0]), latents[0], steps)

    # Narrower than GenerativeModel.log_ratio: p scores the trajectories of a ForwardProcess only.
    @torch.no_grad()
    def log_ratio(self, x: torch.Tensor, draw: ForwardTrajectory,  # type: ignore[override]
                  q: ForwardProcess) -> torch.Tensor:
        """[k, B] log p(x_{0:T}) - log q(x_{1:T} | x_0) of q's trajectories, summed in float64
        chunk by chunk as they are drawn."""
        total = torch.zeros(draw.num_samples, x.shape[0], dtype=torch.float64, device=x.device)
        for start, states in draw.chunks():
            for step, (before, after) in enumerate(zip(states, states[1:]), start):
                total -= q.log_step(after, before, step).double()
            steps = torch.arange(start, start + len(states) - 1, device=x.device)
            steps = steps[:, None, None].expand(-1, draw.num_samples, x.shape[0])
            log_p = self.step_log_prob(torch.stack(states[:-1]), torch.stack(states[1:]), steps)
            total += log_p.double().sum(0)
        return (total + self.prior_log_prob(states[-1]).double()).to(x.dtype)

    @torch.no_grad()
    def chain(self, num_samples: int, frames: int = 10) -> torch.Tensor:
        """[frames, n, D]: the reverse chain from the prior, at `frames` evenly spaced
        steps from x_T to the mean of p(x_0 | x_1)."""
        keep = {0} if frames < 2 else set(
            torch.linspace(self.num_steps, 0, frames).round().long().tolist())
        states = self.sample_prior(num_samples)
        shots = [states] if self.num_steps in keep else []
        for step in range(self.num_steps, 0, -1):
            states = self.reverse_step(states, step, last=step == 1)
            if step - 1 in keep:
                shots.append(states)
        return torch.stack(shots)

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """[x_1 [n, D]]: the reverse chain from x_T ~ p(x_T) down to x_1."""
        states = self.sample_prior(num_samples)
        for step in range(self.num_steps, 1, -1):
            states = self.reverse_step(states, step, last=False)
        return [states]

    def data_mean(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """The mean of p(x_0 | x_1)."""
        return self.reverse_step(latents[0], 1, last=True)

    @torch.no_grad()
    def sample(self, num_samples: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        latents = self.sample_latents(num_samples)
        return self.reverse_step(latents[0], 1, last=False), latents


class DiffusionMethod(Method):
    """The objective shared by the binomial and Gaussian models; `num_samples` (k) is the
    number of steps drawn per example in each training estimate of the bound."""

    default_num_samples = (10,)
    # What the data must be: "binary" or "continuous" (checked by the command line).
    data_kind: ClassVar[str]
    q: ForwardProcess
    p: ReverseProcess

    def __init__(self, forward_process: ForwardProcess, reverse: ReverseProcess, data_dim: int,
                 num_samples: int, backend: str):
        super().__init__(forward_process, reverse, num_samples, backend)
        self.num_steps = forward_process.num_steps
        self.data_dim = data_dim

    @property
    def steps_per_example(self) -> int:
        """Steps drawn per example in each training estimate: what this family's k
        (`num_samples`) counts."""
        return self.num_samples

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[B] L_T + (T / k) sum of the exact KLs at k uniformly drawn steps: unbiased."""
        steps = torch.randint(1, self.num_steps + 1, (self.steps_per_example, x.shape[0]), device=x.device)
        states = self.q.sample_marginal(x, steps)
        return self.q.prior_kl(x) + self.p.step_kl(x, states, steps).mean(0) * self.num_steps

    def bound_terms(self, x: torch.Tensor, differentiable: bool = False) -> dict[str, torch.Tensor]:
        """The bound with every step summed (one x_t draw per step), in two parts:
        reconstruction (t = 1) and kl (L_T and the steps t >= 2); with the graph kept
        where `differentiable`."""
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return self._all_step_terms(x)

    def _all_step_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, data_dim = x.shape
        chunk = max(1, MAX_ELEMENTS // max(1, batch * data_dim))
        total = self.q.prior_kl(x).double()
        reconstruction = None
        for start in range(1, self.num_steps + 1, chunk):
            stop = min(start + chunk, self.num_steps + 1)
            steps = torch.arange(start, stop, device=x.device)[:, None].expand(-1, batch)
            terms = self.p.step_kl(x, self.q.sample_marginal(x, steps), steps).double()
            if start == 1:
                reconstruction = terms[0]
            total = total + terms.sum(0)
        assert reconstruction is not None  # the first chunk starts at step 1
        return {"reconstruction": reconstruction, "kl": total - reconstruction}

    def trajectory(self, num_samples: int, frames: int = 10) -> torch.Tensor:
        """[frames, n, D]: p's reverse chain (`ReverseProcess.chain`)."""
        return self.p.chain(num_samples, frames)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """[n, D]: the mean of p(x_0 | x_1) at the end of reverse chains from the prior."""
        return self.trajectory(num_samples, frames=1)[-1]


class DiffusionScorer(Scorer):
    """The test NLL is the bound with every step's KL summed (exact: no sampling); the
    k-trajectory bounds are reported at the k whose cost fits TRAJECTORY_BUDGET."""

    curve_examples = 500  # every one of T steps per example

    def test_nll(self, method, x: torch.Tensor, eval_samples: int, progress=None):
        """Per-example bound with all T steps summed (eval_samples is not used: the
        KLs are exact), its name, and its split into reconstruction and kl."""
        parts: dict[str, list[torch.Tensor]] = {"reconstruction": [], "kl": []}
        batch_size = max(1, min(1000, MAX_ELEMENTS // x.shape[1]))
        for start in range(0, x.shape[0], batch_size):
            terms = method.bound_terms(x[start:start + batch_size])
            for name in parts:
                parts[name].append(terms[name])
            if progress is not None:
                progress(terms["kl"].shape[0])
        joined = {name: torch.cat(values) for name, values in parts.items()}
        nll = joined["reconstruction"] + joined["kl"]
        return nll, f"bound, {method.num_steps} exact-KL steps", joined

    def bound_samples(self, method, num_examples, candidates):
        """The k whose k-trajectory bounds fit TRAJECTORY_BUDGET together."""
        reported, spent = [], 0
        for num_samples in sorted(candidates):
            spent += num_samples * method.num_steps * num_examples * (method.data_dim + 256)
            if spent > TRAJECTORY_BUDGET:
                break
            reported.append(num_samples)
        return tuple(reported)


family_defaults(DiffusionMethod, scorer=DiffusionScorer())
