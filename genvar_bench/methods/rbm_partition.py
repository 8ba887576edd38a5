"""The RBM's free energies and partition function: Z_v and Z_h with a layer summed out,
log Z exactly by enumerating the smaller layer (small RBMs: the check of AIS), and log Z
by annealed importance sampling (Salakhutdinov & Murray 2008) from a base-rate model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# --- RBM partition functions -------------------------------------------------------
# An RBM with energy E(v, h) = -v'Wh - b'v - c'h, W [D, H]. Summing one layer out,
#   log sum_h exp(-E(v, h)) = b'v + sum_j softplus(c_j + (v W)_j)   (the paper's Z_x)
#   log sum_v exp(-E(v, h)) = c'h + sum_d softplus(b_d + (W h)_d)   (the paper's Z_z)
# so log p(v) = Z_v - log Z, and log Z is a sum over either layer alone.

# The largest layer exact_log_z enumerates: 2^25 states.
MAX_ENUMERATED_UNITS = 25


def rbm_visible_log_marginal(v: torch.Tensor, weight: torch.Tensor, visible_bias: torch.Tensor,
                             hidden_bias: torch.Tensor) -> torch.Tensor:
    """Z_v = log sum_h exp(-E(v, h)) = b'v + sum_j softplus(c_j + (v W)_j), [B] for v [B, D]:
    the negative free energy, log p(v) up to log Z."""
    return v @ visible_bias + torch.nn.functional.softplus(v @ weight + hidden_bias).sum(-1)


def rbm_hidden_log_marginal(h: torch.Tensor, weight: torch.Tensor, visible_bias: torch.Tensor,
                            hidden_bias: torch.Tensor) -> torch.Tensor:
    """Z_h = log sum_v exp(-E(v, h)) = c'h + sum_d softplus(b_d + (W h)_d), [B] for h [B, H]."""
    return h @ hidden_bias + torch.nn.functional.softplus(h @ weight.T + visible_bias).sum(-1)


def binary_states(num_units: int, start: int, stop: int, dtype=torch.float64,
                  device="cpu") -> torch.Tensor:
    """The binary vectors of the integers start..stop-1 (bit i = unit i), [stop - start, n]."""
    codes = torch.arange(start, stop, dtype=torch.int64, device=device)
    bits = torch.arange(num_units, dtype=torch.int64, device=device)
    return ((codes[:, None] >> bits) & 1).to(dtype)


@torch.no_grad()
def exact_log_z(weight: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor,
                chunk_states: int = 2**16) -> float:
    """log Z of an RBM, exactly: the smaller layer (at most MAX_ENUMERATED_UNITS units)
    is enumerated, chunk_states states at a time (memory stays bounded), in float64."""
    weight, visible_bias, hidden_bias = (t.detach().double() for t in
                                         (weight, visible_bias, hidden_bias))
    visible_dim, hidden_dim = weight.shape
    if min(visible_dim, hidden_dim) > MAX_ENUMERATED_UNITS:
        raise ValueError(f"exact_log_z enumerates the smaller layer, which must have at most "
                         f"{MAX_ENUMERATED_UNITS} units; this RBM has {visible_dim} visible and "
                         f"{hidden_dim} hidden units (use ais_log_z)")
    if chunk_states < 1:
        raise ValueError(f"chunk_states must be >= 1, got {chunk_states}")
    # log p*(states) of the enumerated layer, the other summed out: (states, W, b, c) -> [n]
    log_marginal: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    if hidden_dim <= visible_dim:
        units, log_marginal = hidden_dim, rbm_hidden_log_marginal
    else:
        units, log_marginal = visible_dim, rbm_visible_log_marginal
    total = torch.tensor(-math.inf, dtype=torch.float64, device=weight.device)
    for start in range(0, 2**units, chunk_states):
        states = binary_states(units, start, min(start + chunk_states, 2**units),
                               device=weight.device)
        total = torch.logaddexp(total, torch.logsumexp(
            log_marginal(states, weight, visible_bias, hidden_bias), dim=0))
    return total.item()


def ais_betas(num_temperatures: int = 14500) -> torch.Tensor:
    """Inverse temperatures 0 = beta_0 < ... < beta_K = 1 (float64), spaced as in
    Salakhutdinov & Murray 2008: uniform steps on [0, 0.5], [0.5, 0.9] and [0.9, 1]
    with 500, 4000 and 10000 of the 14500 steps, finer towards 1. Other totals keep
    those proportions."""
    if num_temperatures < 3:
        raise ValueError(f"num_temperatures must be >= 3, got {num_temperatures}")
    first = max(1, round(num_temperatures * 500 / 14500))
    second = max(1, round(num_temperatures * 4000 / 14500))
    third = num_temperatures - first - second
    segments = [torch.linspace(0.0, 0.5, first + 1, dtype=torch.float64)[:-1],
                torch.linspace(0.5, 0.9, second + 1, dtype=torch.float64)[:-1],
                torch.linspace(0.9, 1.0, third + 1, dtype=torch.float64)]
    return torch.cat(segments)


@dataclass(frozen=True)
class AISResult:
    """An AIS estimate of log Z. exp(log_z) is unbiased for Z, so log_z is biased
    low in expectation (Jensen): a test log-likelihood from it is optimistic by that
    bias. log_z_low and log_z_high are log(r -/+ 3 sd(r)), r the mean importance
    weight times Z_A (log_z_low is -inf when r - 3 sd(r) <= 0)."""
    log_z: float
    log_z_low: float
    log_z_high: float
    log_z_base: float
    log_weights: torch.Tensor  # [runs]: log w of each run, log_z = log_z_base + log mean w
    num_temperatures: int

    @property
    def num_runs(self) -> int:
        return self.log_weights.numel()


def base_rate_visible_bias(train_data: torch.Tensor, smoothing: float = 0.05) -> torch.Tensor:
    """The AIS base model's visible biases: the log-odds of the training pixel means,
    the means pulled towards 1/2 by `smoothing` pseudo-counts per example-count so a
    pixel that is always off (or on) gets a finite bias."""
    count = train_data.shape[0]
    means = (train_data.double().sum(0) + smoothing * count * 0.5) / (count * (1 + smoothing))
    return torch.log(means) - torch.log1p(-means)


@torch.no_grad()
def ais_log_z(weight: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor,
              base_visible_bias: torch.Tensor, *, num_runs: int = 100,
              num_temperatures: int = 14500, betas: torch.Tensor | None = None, seed: int = 0,
              backend: str = "fused",
              progress: Callable[[int], None] | None = None) -> AISResult:
    """Annealed importance sampling estimate of log Z (Salakhutdinov & Murray 2008).

    The base model A has zero weights, visible biases `base_visible_bias` (e.g.
    base_rate_visible_bias(train)) and zero hidden biases, so
    log Z_A = sum_d softplus(b_A,d) + H log 2 and its v is sampled exactly. The
    intermediate models p_k(v, h) ∝ exp((1 - beta_k) b_A'v + beta_k (v'Wh + b'v + c'h))
    have the unnormalised visible marginal
        log p*_k(v) = (1 - beta_k) b_A'v + beta_k b'v + sum_j softplus(beta_k (c_j + (vW)_j)),
    and each run moves from beta_0 = 0 to beta_K = 1 by one Gibbs sweep at every beta_k
    (`genvar::rbm_gibbs` with the base bias), accumulating
    log w += log p*_k(v_k) - log p*_{k-1}(v_k) in float64. `num_runs` independent runs;
    `betas` (0 first, 1 last, increasing) overrides the default ais_betas(num_temperatures).
    Random numbers come from the op's Philox stream under `seed`: the same arguments
    reproduce the estimate on the same device.
    """
    from genvar_bench.ops import get_ops
    from genvar_bench.ops.rbm import next_offset

    if num_runs < 2:
        raise ValueError(f"num_runs must be >= 2 (the spread needs two), got {num_runs}")
    if betas is None:
        betas = ais_betas(num_temperatures)
    betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
    if (betas.dim() != 1 or betas.numel() < 2 or betas[0].item() != 0.0
            or betas[-1].item() != 1.0 or not bool((betas[1:] > betas[:-1]).all())):
        raise ValueError("betas must increase strictly from 0 to 1")
    visible_dim, hidden_dim = weight.shape
    if base_visible_bias.shape != (visible_dim,):
        raise ValueError(f"base_visible_bias must be [{visible_dim}], got "
                         f"{tuple(base_visible_bias.shape)}")
    gibbs = get_ops(backend).rbm_gibbs
    weight, visible_bias, hidden_bias = (t.detach() for t in (weight, visible_bias, hidden_bias))
    base = base_visible_bias.detach().to(weight)
    generator = torch.Generator().manual_seed(seed)
    v = torch.bernoulli(torch.sigmoid(base.double().cpu()).expand(num_runs, visible_dim),
                        generator=generator).to(weight)
    visible_shift = (visible_bias - base).double()  # d/dbeta of the visible linear term
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=weight.device)
    offset, beta_values = 0, betas.tolist()
    for k in range(1, len(beta_values)):
        beta, previous = beta_values[k], beta_values[k - 1]
        activation = (v @ weight + hidden_bias).double()
        log_w += ((beta - previous) * (v.double() @ visible_shift)
                  + (torch.nn.functional.softplus(beta * activation)
                     - torch.nn.functional.softplus(previous * activation)).sum(-1))
        if k < len(beta_values) - 1:
            v, _ = gibbs(v, weight, visible_bias, hidden_bias, beta, 1, seed, offset, base)
            offset = next_offset(offset, 1)
        if progress is not None:
            progress(1)
    log_z_base = (torch.nn.functional.softplus(base.double()).sum().item()
                  + hidden_dim * math.log(2.0))
    return _ais_result(log_w.cpu(), log_z_base, len(beta_values) - 1)


def _ais_result(log_w: torch.Tensor, log_z_base: float, num_temperatures: int) -> AISResult:
    shift = log_w.max().item()
    weights = torch.exp(log_w - shift)
    mean = weights.mean().item()
    spread = 3.0 * weights.std(unbiased=True).item() / math.sqrt(weights.numel())
    low = math.log(mean - spread) if mean > spread else -math.inf
    return AISResult(log_z=log_z_base + shift + math.log(mean),
                     log_z_low=log_z_base + shift + low,
                     log_z_high=log_z_base + shift + math.log(mean + spread),
                     log_z_base=log_z_base, log_weights=log_w,
                     num_temperatures=num_temperatures)
