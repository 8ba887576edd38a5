"""Plain PyTorch versions of the suite's models and objectives, written the way a user
would write them from the papers: the same architectures, the same losses and
gradients, torch.nn layers and torch ops only, no genvar op. They are the "eager" and
"compiled" baselines of benchmarks/test_training_step.py.

Shapes: x [B, D] binary data, k samples per example.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, logsigmoid

from genvar_bench.methods.denoisers import TimeMLP
from genvar_bench.ops.diffusion import binomial_schedule


def mlp(in_dim, hidden, out_dim):
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                         nn.Tanh(), nn.Linear(hidden, out_dim))


class PlainGaussianModel(nn.Module):
    """The IWAE paper's 1-layer model: D-200-200-50 encoder, 50-200-200-D decoder."""

    def __init__(self, data_dim, hidden=200, latent=50, tanh_code=False, noise=0.8):
        super().__init__()
        self.encoder = mlp(data_dim, hidden, latent if tanh_code else 2 * latent)
        self.decoder = mlp(latent, hidden, data_dim)
        self.tanh_code, self.noise = tanh_code, noise

    def log_likelihood(self, x, z):
        logits = self.decoder(z)
        return -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def log_weights(self, x, num_samples, detach_samples=False):
        """(log p(x, z) [k, B], log q(z | x) [k, B]); log(2 pi) terms cancel and are left out."""
        mu, logvar = self.encoder(x).chunk(2, -1)
        noise = torch.randn(num_samples, *mu.shape)
        z = mu + torch.exp(0.5 * logvar) * noise
        if detach_samples:
            z = z.detach()
            log_q = -0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar).sum(-1)
        else:
            log_q = -0.5 * (noise**2 + logvar).sum(-1)
        return self.log_likelihood(x, z) - 0.5 * (z**2).sum(-1), log_q


def vae_loss(model, x, num_samples):
    log_p, log_q = model.log_weights(x, num_samples)
    return -(log_p - log_q).mean()


def iwae_loss(model, x, num_samples):
    log_p, log_q = model.log_weights(x, num_samples)
    return -(torch.logsumexp(log_p - log_q, 0) - math.log(num_samples)).mean()


def rws_loss(model, x, num_samples):
    """Wake updates of p and q with self-normalised weights; the value is the k-sample bound."""
    log_p, log_q = model.log_weights(x, num_samples, detach_samples=True)
    log_w = (log_p - log_q).detach()
    weights = torch.softmax(log_w, 0)
    surrogate = -(weights * (log_p + log_q)).sum(0).mean()
    bound = -(torch.logsumexp(log_w, 0) - math.log(num_samples)).mean()
    return bound + (surrogate - surrogate.detach())


def dae_loss(model, x, num_samples):
    """Reconstruction of the code tanh(e(x)) corrupted by Gaussian noise."""
    code = torch.tanh(model.encoder(x))
    z = code + model.noise * torch.randn(num_samples, *code.shape)
    return -model.log_likelihood(x, z).mean()


class PlainBinomialDiffusion(nn.Module):
    """Binomial diffusion with the suite's x_0-predicting MLP, tables built once."""

    # buffers, registered in __init__
    alpha_bar: torch.Tensor
    kappa_now: torch.Tensor
    rho: torch.Tensor
    kappa_prev: torch.Tensor

    def __init__(self, data_dim, num_steps, hidden):
        super().__init__()
        steps = torch.arange(1, num_steps + 1, dtype=torch.float64)
        betas = 1 / (num_steps - steps + 1)
        betas[0] = 1e-3
        log_abar = torch.cat([betas.new_zeros(1), torch.log1p(-betas).cumsum(0)])
        kappa = (torch.log1p(log_abar.exp()) - torch.log(-torch.expm1(log_abar))).clamp(max=40.0)
        rho, _ = binomial_schedule(betas)
        # index t: kappa_t, rho_t and kappa_{t-1} (kappa_0 = +inf clamped, as in the suite)
        tables = {"alpha_bar": log_abar.exp(), "kappa_now": kappa,
                  "rho": torch.cat([rho.new_ones(1), rho]),
                  "kappa_prev": torch.cat([kappa.new_zeros(1), kappa[:-1]])}
        for name, table in tables.items():
            self.register_buffer(name, table.float())
        self.num_steps = num_steps
        self.network = TimeMLP(data_dim, num_steps, hidden)

    def loss(self, x0, num_samples):
        steps = torch.randint(1, self.num_steps + 1, (num_samples, x0.shape[0]))
        alpha_bar = self.alpha_bar[steps].unsqueeze(-1)
        xt = torch.bernoulli(x0 * alpha_bar + (1 - alpha_bar) / 2)
        sign = 2 * xt - 1
        net = self.network(xt.reshape(-1, xt.shape[-1]), steps.reshape(-1)).reshape(xt.shape)
        x0_logits = sign * self.kappa_now[steps].unsqueeze(-1) + net
        keep, kappa = sign * self.rho[steps].unsqueeze(-1), self.kappa_prev[steps].unsqueeze(-1)
        one, zero = logsigmoid(x0_logits), logsigmoid(-x0_logits)
        logits = (torch.logaddexp(one + logsigmoid(keep + kappa), zero + logsigmoid(keep - kappa))
                  - torch.logaddexp(one + logsigmoid(-keep - kappa), zero + logsigmoid(kappa - keep)))
        first = (steps == 1).unsqueeze(-1)
        posterior_logit = keep + (2 * x0 - 1) * kappa
        q = torch.where(first, x0, torch.sigmoid(posterior_logit))
        entropy = torch.where(first, 0.0, -logsigmoid(-posterior_logit) - q * posterior_logit)
        kl = (-logsigmoid(-logits) - q * logits - entropy).sum(-1)
        last = x0 * self.alpha_bar[-1] + (1 - self.alpha_bar[-1]) / 2
        prior_kl = (torch.xlogy(last, 2 * last) + torch.xlogy(1 - last, 2 * (1 - last))).sum(-1)
        return (prior_kl + kl.mean(0) * self.num_steps).mean()


def plain_model_and_loss(method, data_dim, num_samples):
    """(module, loss(module, x)) of a method's plain PyTorch version."""
    if method == "diffusion":
        num_steps, hidden = (1000, 512) if data_dim > 256 else (100, 256)
        model: nn.Module = PlainBinomialDiffusion(data_dim, num_steps, hidden)
        return model, lambda module, x: module.loss(x, num_samples)
    losses = {"vae": vae_loss, "iwae": iwae_loss, "rws": rws_loss, "dae": dae_loss}
    model = PlainGaussianModel(data_dim, tanh_code=method == "dae")
    return model, lambda module, x: losses[method](module, x, num_samples)
