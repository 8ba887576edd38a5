"""Gaussian diffusion for continuous data (Sohl-Dickstein et al. 2015, section 2.4).

q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), so q(x_t | x_0) =
N(sqrt(abar_t) x_0, (1 - abar_t) I) and the posterior q(x_{t-1} | x_t, x_0) is
Gaussian with mean c0_t x_0 + c1_t x_t and variance vq_t (see the
`diffusion_gaussian_kl` reference). p(x_T) = N(0, I); p(x_{t-1} | x_t) =
N(mean(x_t, t), exp(log_var(x_t, t))), both learned.

The mean is parameterised through a predicted x_0, mean = c0_t x0_net + c1_t x_t
(defined at every step, t = T with beta_T = 1 included), x0_net = skip_t x_t +
scale_t F(x_t, t) with the network F and the scalings of Karras et al. (2022), and
the log-variance as log beta_t plus a learned correction. Bounds are densities of the data as
stored (nats); the command line also reports bits per dimension.
"""
from __future__ import annotations

import math

import torch

from genvar_bench.registry import register
from genvar_bench.methods.diffusion import (OPTIONS, DiffusionMethod, ForwardProcess, ReverseProcess,
                                            beta_schedule, check_config, option_defaults)

LOG_2PI = math.log(2 * math.pi)
# The data's variance per dimension assumed by the x_0 predictor's scaling; the
# continuous datasets here are scaled to about [-1, 1].
DATA_VARIANCE = 0.25


class GaussianForward(ForwardProcess):
    # buffers, registered in __init__
    mean_x0: torch.Tensor
    mean_xt: torch.Tensor
    log_beta: torch.Tensor
    skip: torch.Tensor
    scale: torch.Tensor

    def __init__(self, betas: torch.Tensor, backend: str = "fused"):
        super().__init__(betas, backend)
        current, previous = self.alpha_bar[1:], self.alpha_bar[:-1]
        zero = betas.new_zeros(1)
        # index t: the posterior mean's coefficients of x_0 and x_t
        self.register_buffer("mean_x0", torch.cat([zero, previous.sqrt() * betas / (1 - current)]),
                             persistent=False)
        self.register_buffer("mean_xt", torch.cat([zero, (1 - betas).sqrt() * (1 - previous) / (1 - current)]),
                             persistent=False)
        self.register_buffer("log_beta", torch.cat([zero, betas.log()]), persistent=False)
        # x_0 = skip_t x_t + scale_t F: skip_t x_t is the best linear guess of x_0 for data
        # of variance DATA_VARIANCE, scale_t the spread left around it (Karras et al. 2022)
        signal = self.alpha_bar * DATA_VARIANCE + 1 - self.alpha_bar
        self.register_buffer("skip", self.alpha_bar.sqrt() * DATA_VARIANCE / signal, persistent=False)
        self.register_buffer("scale", (DATA_VARIANCE * (1 - self.alpha_bar) / signal).sqrt(),
                             persistent=False)
        # L_T's coefficients, as floats read once here: no host sync per step on a GPU
        alpha_bar = float(self.alpha_bar[-1])
        self.prior_alpha_bar = alpha_bar
        self.prior_constant = -alpha_bar - math.log1p(-alpha_bar) if alpha_bar < 1 else math.inf

    def sample_marginal(self, x0, steps):
        alpha_bar = self.table(self.alpha_bar, steps, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * torch.randn(
            *steps.shape, x0.shape[-1], dtype=x0.dtype, device=x0.device)

    def sample_step(self, previous, step):
        beta = self.betas[step - 1].item()
        return math.sqrt(1 - beta) * previous + math.sqrt(beta) * torch.randn_like(previous)

    def log_step(self, state, previous, step):
        beta = self.betas[step - 1].item()
        squared = (state - math.sqrt(1 - beta) * previous) ** 2
        return -0.5 * (squared / beta + math.log(beta) + LOG_2PI).sum(-1)

    def prior_kl(self, x0):
        # KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)) per dimension
        return 0.5 * (self.prior_alpha_bar * x0**2 + self.prior_constant).sum(-1)


class GaussianReverse(ReverseProcess):
    """p(x_T) = N(0, I); p(x_{t-1} | x_t) = N(mean(x_t, t), exp(log_var(x_t, t)))."""

    forward_process: GaussianForward

    def mean_and_log_var(self, states: torch.Tensor, steps: torch.Tensor):
        """[S, B, D] mean and log-variance of p(x_{t-1} | x_t) for states [S, B, D], steps [S, B]."""
        forward = self.forward_process
        denoised, correction = self.outputs(states, steps).chunk(2, dim=-1)
        predicted_x0 = (forward.table(forward.skip, steps, states) * states
                        + forward.table(forward.scale, steps, states) * denoised)
        mean = (forward.table(forward.mean_x0, steps, states) * predicted_x0
                + forward.table(forward.mean_xt, steps, states) * states)
        return mean, forward.table(forward.log_beta, steps, states) + correction

    def step_kl(self, x0, states, steps):
        mean, log_var = self.mean_and_log_var(states, steps)
        return self.ops.diffusion_gaussian_kl(x0, states, mean, log_var, steps,
                                              self.forward_process.betas)

    def step_log_prob(self, previous, states, steps):
        mean, log_var = self.mean_and_log_var(states, steps)
        return -0.5 * ((previous - mean) ** 2 * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)

    def prior_log_prob(self, states):
        return -0.5 * (states**2 + LOG_2PI).sum(-1)

    def sample_prior(self, num_samples):
        like = self.own_parameter()
        return torch.randn(num_samples, self.data_dim, device=like.device, dtype=like.dtype)

    def reverse_step(self, states, step, last):
        steps = torch.full(states.shape[:1], step, device=states.device)
        mean, log_var = self.mean_and_log_var(states, steps)
        return mean if last else mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


@register("diffusion-gauss", options=OPTIONS, option_defaults=option_defaults,
          k_meaning="diffusion steps per example")
class GaussianDiffusion(DiffusionMethod):
    data_kind = "continuous"

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 10,
                 backend: str = "fused", diffusion_steps: int | None = None,
                 schedule: str = "paper", network: str = "mlp"):
        check_config(layers, diffusion_steps, network)
        assert diffusion_steps is not None  # check_config raised otherwise
        forward = GaussianForward(beta_schedule(schedule, diffusion_steps), backend)
        reverse = GaussianReverse(forward, data_dim, network, outputs=2, backend=backend)
        super().__init__(forward, reverse, data_dim, num_samples, backend)
