"""Binomial diffusion for binary data (Sohl-Dickstein et al. 2015, section 2.4).

q(x_t | x_{t-1}) = Bernoulli(x_{t-1} (1 - beta_t) + beta_t / 2), so
q(x_t = 1 | x_0) = x_0 abar_t + (1 - abar_t) / 2 and the posterior
q(x_{t-1} | x_t, x_0) has logit (2 x_t - 1) rho_t + (2 x_0 - 1) kappa_{t-1}, with
rho_t = log((2 - beta_t) / beta_t) and kappa_s = log((1 + abar_s) / (1 - abar_s)).
p(x_T) = Bernoulli(1/2); p(x_{t-1} | x_t) = Bernoulli(sigmoid(f(x_t, t))).

f is parameterised through a predicted x_0: per-pixel logits of x_0, the network's
output added to (2 x_t - 1) kappa_t (the posterior logit of x_0 under uniformly
random data, so an untrained network already keeps x_t at small t), and f is the
logit of sum_{x_0} p_net(x_0 | x_t) q(x_{t-1} = 1 | x_t, x_0), the forward posterior
averaged over the prediction. At t = 1 that is the prediction itself. f is still a
learned Bernoulli kernel of (x_t, t), as in the paper; this only eases its learning.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import logsigmoid

from genvar_bench.registry import register
from genvar_bench.methods.diffusion import (OPTIONS, DiffusionMethod, ForwardProcess,
                                            ReverseProcess, beta_schedule, check_config,
                                            option_defaults)

# kappa_0 is +inf (the t = 1 posterior is x_0 itself); this stands in for it.
KAPPA_MAX = 40.0


class BinomialForward(ForwardProcess):
    # buffers, registered in __init__
    rho: torch.Tensor
    kappa: torch.Tensor
    kappa_now: torch.Tensor

    def __init__(self, betas: torch.Tensor, backend: str = "fused"):
        super().__init__(betas, backend)
        padded = torch.cat([betas.new_ones(1), betas])  # index t
        self.register_buffer("rho", torch.log((2 - padded) / padded), persistent=False)
        # kappa_s = log((1 + abar_s) / (1 - abar_s)) for s = 0..T
        kappa = (torch.log1p(self.alpha_bar) - torch.log1p(-self.alpha_bar)).clamp(max=KAPPA_MAX)
        self.register_buffer("kappa", torch.cat([kappa.new_zeros(1), kappa[:-1]]),  # kappa_{t-1} at t
                             persistent=False)
        self.register_buffer("kappa_now", kappa, persistent=False)  # kappa_t at t

    def sample_marginal(self, x0, steps):
        alpha_bar = self.table(self.alpha_bar, steps, x0)
        return torch.bernoulli(x0 * alpha_bar + (1 - alpha_bar) / 2)

    def _step_probability(self, previous, step):
        beta = self.betas[step - 1].item()
        return previous * (1 - beta) + beta / 2

    def sample_step(self, previous, step):
        return torch.bernoulli(self._step_probability(previous, step))

    def log_step(self, state, previous, step):
        probability = self._step_probability(previous, step)
        return (torch.xlogy(state, probability) + torch.xlogy(1 - state, 1 - probability)).sum(-1)

    def prior_kl(self, x0):
        alpha_bar = self.alpha_bar[-1]  # a 0-dim tensor: no host sync per step on a GPU
        one = x0 * alpha_bar + (1 - alpha_bar) / 2
        return (torch.xlogy(one, 2 * one) + torch.xlogy(1 - one, 2 * (1 - one))).sum(-1)


class BinomialReverse(ReverseProcess):
    """p(x_T) = Bernoulli(1/2); p(x_{t-1} | x_t) = Bernoulli(sigmoid(logits(x_t, t)))."""

    forward_process: BinomialForward

    def logits(self, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """[S, B, D] logits of p(x_{t-1} = 1 | x_t) for states [S, B, D], steps [S, B]."""
        forward = self.forward_process
        sign = 2 * states - 1
        # the network corrects the logit of x_0 given x_t under uniform data: sign * kappa_t
        x0_logits = sign * forward.table(forward.kappa_now, steps, states) + self.outputs(states, steps)
        keep = sign * forward.table(forward.rho, steps, states)
        kappa = forward.table(forward.kappa, steps, states)
        sure_one, sure_zero = logsigmoid(x0_logits), logsigmoid(-x0_logits)
        log_one = torch.logaddexp(sure_one + logsigmoid(keep + kappa), sure_zero + logsigmoid(keep - kappa))
        log_zero = torch.logaddexp(sure_one + logsigmoid(-keep - kappa), sure_zero + logsigmoid(kappa - keep))
        return log_one - log_zero

    def step_kl(self, x0, states, steps):
        return self.ops.diffusion_binomial_kl(x0, states, self.logits(states, steps), steps,
                                              self.forward_process.betas)

    def step_log_prob(self, previous, states, steps):
        logits = self.logits(states, steps)
        return -nn.functional.binary_cross_entropy_with_logits(
            logits, previous, reduction="none").sum(-1)

    def prior_log_prob(self, states):
        return torch.full(states.shape[:-1], -states.shape[-1] * math.log(2),
                          dtype=states.dtype, device=states.device)

    def sample_prior(self, num_samples):
        like = self.own_parameter()
        return torch.bernoulli(torch.full((num_samples, self.data_dim), 0.5, device=like.device,
                                          dtype=like.dtype))

    def reverse_step(self, states, step, last):
        steps = torch.full(states.shape[:1], step, device=states.device)
        probability = torch.sigmoid(self.logits(states, steps))
        return probability if last else torch.bernoulli(probability)


@register("diffusion", options=OPTIONS, option_defaults=option_defaults,
          k_meaning="diffusion steps per example")
class BinomialDiffusion(DiffusionMethod):
    data_kind = "binary"

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 10,
                 backend: str = "fused", diffusion_steps: int | None = None,
                 schedule: str = "paper", network: str = "mlp"):
        check_config(layers, diffusion_steps, network)
        assert diffusion_steps is not None  # check_config raised otherwise
        forward = BinomialForward(beta_schedule(schedule, diffusion_steps), backend)
        reverse = BinomialReverse(forward, data_dim, network, outputs=1, backend=backend)
        super().__init__(forward, reverse, data_dim, num_samples, backend)
