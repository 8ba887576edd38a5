"""What the KL(q || p) view measures beyond the NLL: the posterior gap, the test estimator's
effective sample size, and the signal-to-noise ratio of a method's gradient estimator.

The paper's identity KL(q(x, tau) || p(x, tau)) = KL(q(x) || p(x)) + E_q(x) KL(q(tau|x) ||
p(tau|x)) splits a bound's looseness from the model's misfit: per test example,
(one-sample bound, the ELBO) - (-log p(x)) = KL(q(tau|x) || p(tau|x)) >= 0, and the
method's k-sample bound minus -log p(x) is the gap of the resampled q_p^k. `posterior_gaps`
measures both from a row's per-example file, with a paired interval over test examples.

`gradient_snr` is the signal-to-noise ratio of Rainforth et al. 2018 ("Tighter variational
bounds are not necessarily better"): per parameter, |E g| / sd g over M draws of the
method's training gradient on one fixed batch, averaged over q's parameters and over
p's parameters apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Rainforth et al. 2018 measure on a batch of 20 training images; M draws of the gradient.
SNR_BATCH = 20
SNR_REPEATS = 1000


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """(mean, half-width of its normal 95% interval) over the entries of `values`."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else math.nan, math.nan
    return float(values.mean()), float(z * values.std(ddof=1) / math.sqrt(values.size))


def posterior_gaps(per_example: dict[str, np.ndarray], own_k: int) -> dict[str, float]:
    """From a row's per-example test arrays: E_x KL(q(tau|x) || p(tau|x)) as the one-sample
    bound minus the NLL estimate (`elbo_gap`), and the method's k-sample bound minus the NLL
    (`k_gap`, k = own_k), each with the half-width of its 95% interval paired over test
    examples (`*_ci`). NaN where the file lacks the bound. The NLL is itself an upper bound
    (IS with K samples), so both gaps are slightly understated, by at most the NLL's own gap."""
    nll = per_example["test_nll"]
    gaps = {}
    for name, key in (("elbo_gap", "test_iw_bound_k1"), ("k_gap", f"test_iw_bound_k{own_k}")):
        if key in per_example and per_example[key].shape == nll.shape:
            gaps[name], gaps[f"{name}_ci"] = mean_interval(per_example[key] - nll)
        else:
            gaps[name], gaps[f"{name}_ci"] = math.nan, math.nan
    return gaps


@dataclass
class SNR:
    """Mean over parameters of |E g| / sd g, for q's and for p's parameters apart, with
    the number of gradient draws and of parameters that entered each mean."""
    q: float
    p: float
    repeats: int
    q_parameters: int
    p_parameters: int


class _Moments:
    """Running sums of a gradient and its square per parameter, in float64."""

    def __init__(self, parameters: list[torch.nn.Parameter]):
        self.parameters = parameters
        self.total = [torch.zeros_like(p, dtype=torch.float64) for p in parameters]
        self.squares = [torch.zeros_like(p, dtype=torch.float64) for p in parameters]

    def add(self) -> None:
        for parameter, total, squares in zip(self.parameters, self.total, self.squares):
            grad = (parameter.grad.double() if parameter.grad is not None
                    else torch.zeros_like(total))
            total += grad
            squares += grad * grad

    def snr(self, repeats: int) -> tuple[float, int]:
        """(mean |mean| / sd over parameters whose gradient varies, how many those are)."""
        ratios = []
        for total, squares in zip(self.total, self.squares):
            mean = total / repeats
            variance = (squares / repeats - mean * mean) * repeats / (repeats - 1)
            sd = variance.clamp_min(0).sqrt()
            varies = sd > 1e-12 * mean.abs().clamp_min(1e-30)
            ratios.append((mean.abs()[varies] / sd[varies]).flatten())
        joined = torch.cat(ratios) if ratios else torch.zeros(0, dtype=torch.float64)
        return (joined.mean().item() if joined.numel() else math.nan), joined.numel()


def gradient_snr(method, batch: torch.Tensor, repeats: int = SNR_REPEATS,
                 seed: int = 0) -> SNR:
    """The SNR of `method.loss`'s gradient (the estimator it trains with: the ELBO's
    reparameterised gradient, IWAE's, DReG's, RWS's wake-sleep surrogate, ...) on `batch`
    over `repeats` draws, for q's and p's parameters apart. The draws come from a random
    generator of their own (seeded `seed`), so the caller's is untouched; the method's
    parameters and their .grad are left as they were."""
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2, got {repeats}")
    q_parameters = [p for p in method.q.parameters() if p.requires_grad]
    p_parameters = [p for p in method.p.parameters() if p.requires_grad]
    if not q_parameters and not p_parameters:
        raise ValueError(f"{type(method).__name__} has no trainable q or p parameters")
    every = list(method.parameters())
    saved = [None if p.grad is None else p.grad.clone() for p in every]
    moments_q, moments_p = _Moments(q_parameters), _Moments(p_parameters)
    devices = [batch.device] if batch.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(repeats):
            for parameter in every:
                parameter.grad = None
            method.loss(batch).backward()
            moments_q.add()
            moments_p.add()
    for parameter, grad in zip(every, saved):
        parameter.grad = grad
    q_snr, q_count = moments_q.snr(repeats)
    p_snr, p_count = moments_p.snr(repeats)
    return SNR(q_snr, p_snr, repeats, q_count, p_count)
