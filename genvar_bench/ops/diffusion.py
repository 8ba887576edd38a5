"""The diffusion KL ops: `genvar::diffusion_binomial_kl` and `genvar::diffusion_gaussian_kl`,
the per-step terms KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) of the bound of a
diffusion probabilistic model (Sohl-Dickstein et al. 2015).

Shapes use T (steps of the schedule), T' (step slices), B (batch) and D (data
dimension). Steps t = 1..T are 1-based: betas [T] holds beta_t in (0, 1] at t - 1,
alpha_t = 1 - beta_t, abar_s = prod_{r <= s} alpha_r and abar_0 = 1. x0 [B, D] is the
data of every slice, xt [T', B, D] the noisy x_t of each slice, steps [T', B] int64 the
t of each (slice, example), and the result [T', B] the KL summed over D, in nats. At
t = 1 the posterior is x_0 itself and the term is -log p(x_0 | x_1).

Gradients flow to the network outputs only (logits; mean and log_var): x0, xt, steps
and betas get None, as the data, its noising and the schedule are not learned.
"""
import math

import torch

from genvar_bench.ops.registry import Gradients, define_op


def _softplus(logits):
    # -log sigmoid(-l): exact for every l (F.softplus cuts off at 20), gradient sigmoid(l).
    return -torch.nn.functional.logsigmoid(-logits)


def _log_abar(betas):
    """log abar_s for s = 0..T, float64 [T + 1]."""
    log_alpha = torch.log1p(-betas.double())
    return torch.cat([log_alpha.new_zeros(1), torch.cumsum(log_alpha, 0)])


def _per_step(table, steps, dtype):
    """table [T] gathered at the 1-based steps [T', B], as [T', B, 1] of dtype."""
    return table[steps - 1].to(dtype).unsqueeze(-1)


def binomial_schedule(betas):
    """(rho_t, kappa_{t-1}) per step, float64 [T] each: rho_t = log((2 - beta_t) / beta_t)
    and kappa_s = log((1 + abar_s) / (1 - abar_s)), so kappa_0 = +inf."""
    log_abar = _log_abar(betas)
    rho = torch.log((2 - betas.double()) / betas.double())
    kappa_prev = torch.log1p(torch.exp(log_abar[:-1])) - torch.log(-torch.expm1(log_abar[:-1]))
    return rho, kappa_prev


def gaussian_schedule(betas):
    """(c0_t, c1_t, vq_t) per step, float64 [T] each: the posterior
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + c1_t x_t, vq_t). At t = 1: 1, 0 and 0."""
    log_abar = _log_abar(betas)
    one_minus_abar = -torch.expm1(log_abar)
    betas = betas.double()
    c0 = torch.exp(0.5 * log_abar[:-1]) * betas / one_minus_abar[1:]
    c1 = torch.sqrt(1 - betas) * one_minus_abar[:-1] / one_minus_abar[1:]
    var_q = betas * one_minus_abar[:-1] / one_minus_abar[1:]
    return c0, c1, var_q


def diffusion_binomial_kl_ref(x0, xt, logits, steps, betas):
    """KL of Bernoulli posteriors, binary data: q(x_t | x_{t-1}) =
    Bernoulli(x_{t-1} (1 - beta_t) + beta_t / 2), p(x_{t-1} | x_t) = Bernoulli(sigmoid(logits)).

    x0 [B, D], xt [T', B, D], logits [T', B, D], steps [T', B] int64, betas [T] -> [T', B].
    With lq = (2 x_t - 1) rho_t + (2 x_0 - 1) kappa_{t-1} and q = sigmoid(lq), per element
    softplus(l) - q l - (softplus(lq) - q lq); at t = 1, q = x_0: softplus(l) - x_0 l.
    The formula is linear in x0 and xt, so it is defined for non-binary values too; the
    fused op is not (an error on the CPU, NaN rows on CUDA).
    """
    rho, kappa_prev = binomial_schedule(betas)
    first = (steps == 1).unsqueeze(-1)
    finite_kappa_prev = torch.where(steps == 1, 0.0, kappa_prev[steps - 1])  # unused at t = 1
    lq = ((2 * xt - 1) * _per_step(rho, steps, logits.dtype)
          + (2 * x0 - 1) * finite_kappa_prev.to(logits.dtype).unsqueeze(-1))
    q = torch.where(first, x0, torch.sigmoid(lq))
    entropy = torch.where(first, 0.0, _softplus(lq) - q * lq)
    return (_softplus(logits) - q * logits - entropy).sum(-1)


def diffusion_gaussian_kl_ref(x0, xt, mean, log_var, steps, betas):
    """KL of Gaussian posteriors, continuous data: q(x_t | x_{t-1}) =
    N(sqrt(alpha_t) x_{t-1}, beta_t), p(x_{t-1} | x_t) = N(mean, exp(log_var)).

    x0 [B, D], xt, mean and log_var [T', B, D], steps [T', B] int64, betas [T] -> [T', B].
    Per element 0.5 (log_var - log vq + (vq + (mq - mean)^2) exp(-log_var) - 1), with
    mq = c0 x_0 + c1 x_t (gaussian_schedule); at t = 1 (vq = 0, mq = x_0) the negative
    log-likelihood 0.5 (log(2 pi) + log_var + (x_0 - mean)^2 exp(-log_var)).
    """
    c0, c1, var_q = (_per_step(table, steps, mean.dtype) for table in gaussian_schedule(betas))
    first = (steps == 1).unsqueeze(-1)
    precision = torch.exp(-log_var)
    mean_q = c0 * x0 + c1 * xt
    kl = 0.5 * (log_var - torch.log(var_q) + (var_q + (mean_q - mean) ** 2) * precision - 1)
    nll = 0.5 * (math.log(2 * math.pi) + log_var + (x0 - mean) ** 2 * precision)
    return torch.where(first, nll, kl).sum(-1)


def _check_shapes(x0, xt, output, steps, betas):
    torch._check(output.dim() == 3, lambda: f"output must be [T', B, D], got {output.shape}")
    torch._check(x0.shape == output.shape[1:], lambda: f"x0 must be [B, D], got {x0.shape}")
    torch._check(xt.shape == output.shape, lambda: f"xt must be [T', B, D], got {xt.shape}")
    torch._check(steps.shape == output.shape[:2],
                 lambda: f"steps must be [T', B], got {steps.shape}")
    torch._check(steps.dtype == torch.int64, lambda: f"steps must be int64, got {steps.dtype}")
    torch._check(betas.dim() == 1 and betas.shape[0] > 0,
                 lambda: f"betas must be [T] with T > 0, got {betas.shape}")


def _binomial_fake(x0, xt, logits, steps, betas):
    _check_shapes(x0, xt, logits, steps, betas)
    return logits.new_empty(logits.shape[:2])


def _gaussian_fake(x0, xt, mean, log_var, steps, betas):
    _check_shapes(x0, xt, mean, steps, betas)
    return mean.new_empty(mean.shape[:2])


# The training paths (registry.py): on CPU when the network outputs need a gradient, the
# forward writes the derivatives and the backward scales them in place. Non-binary x0 or
# xt (NaN included) is an error on the CPU (found in the kernel's pass); on CUDA the rows
# holding one come out NaN (checking would cost a pass and a synchronisation). steps
# outside [1, T] and betas outside (0, 1] are errors on both devices; on CUDA that check
# copies betas and the range of steps to the host, so the op waits for the stream once
# per call. Each schedule's table is built once (a cache in csrc/ops/diffusion.cpp).
fused_diffusion_binomial_kl = define_op(
    "diffusion_binomial_kl", diffusion_binomial_kl_ref, _binomial_fake,
    Gradients(differentiable=("logits",), buffers_for=("logits",)))
fused_diffusion_gaussian_kl = define_op(
    "diffusion_gaussian_kl", diffusion_gaussian_kl_ref, _gaussian_fake,
    Gradients(differentiable=("mean", "log_var"), buffers_for=("mean", "log_var")))
