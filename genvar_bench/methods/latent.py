"""Gaussian-latent models of the IWAE paper (Burda et al. 2016).

q(z_1..z_L | x) = q(z_1 | x) prod_l q(z_l | z_{l-1}), diagonal Gaussians;
p(x, z_1..z_L) = p(x | z_1) prod_l p(z_l | z_{l+1}) p(z_L), Bernoulli data,
diagonal Gaussian intermediate layers, a standard normal top layer. Hidden
layers use tanh. The Bernoulli term and the top layer's prior and posterior
terms go through the fused `iwae_log_weights` op.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genvar_bench.core import GenerativeModel, InferenceModel, Method

# (latent sizes bottom-up, q hidden sizes per layer, p hidden sizes per layer top-down)
ARCHITECTURES = {
    1: ([50], [[200, 200]], [[200, 200]]),
    2: ([100, 50], [[200, 200], [100, 100]], [[100, 100], [200, 200]]),
}


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.Tanh()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class GaussianLayer(nn.Module):
    """h -> (mu, logvar) of a diagonal Gaussian over `out_dim` units."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * out_dim)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(inputs).chunk(2, dim=-1)
        return mu, logvar


def reverse_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The same values; gradients that flow back through it change sign.
    (2a - a == a exactly in floating point.)"""
    return 2 * tensor.detach() - tensor


def gaussian_log_density(z, mu, logvar) -> torch.Tensor:
    """log N(z; mu, diag(e^logvar)), summed over the last axis, constants included."""
    return -0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def gaussian_log_ratio(z, mu_p, logvar_p, mu_q, logvar_q) -> torch.Tensor:
    """log N(z; mu_p, e^logvar_p) - log N(z; mu_q, e^logvar_q), summed over the last axis."""
    log_p = -0.5 * ((z - mu_p) ** 2 * torch.exp(-logvar_p) + logvar_p)
    log_q = -0.5 * ((z - mu_q) ** 2 * torch.exp(-logvar_q) + logvar_q)
    return (log_p - log_q).sum(-1)


class GaussianEncoder(InferenceModel):
    """q(z_1..z_L | x): a stack of reparameterised diagonal Gaussians."""

    def __init__(self, data_dim: int, latent_dims: list[int], hidden: list[list[int]]):
        super().__init__()
        in_dims = [data_dim] + latent_dims[:-1]
        self.layers = nn.ModuleList(
            GaussianLayer(in_dim, width, out_dim)
            for in_dim, width, out_dim in zip(in_dims, hidden, latent_dims))

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str = "reparameterize"):
        """Returns [(z, mu, logvar)] bottom-up; z [k, B, Z_l]. The first layer's
        mu and logvar are [B, Z_1] (shared by the k samples), later ones [k, B, Z_l].

        q_grad says how gradients reach q's parameters: "reparameterize" (through
        z = mu + sigma * noise), "reverse" (z is a constant sample; the gradient
        through mu and logvar changes sign, so minimising -sum_i w_i log w_i over q
        maximises sum_i w_i log q(z_i | x): the wake-phase q update of reweighted
        wake-sleep) or "none" (z, mu and logvar are constants to q).
        """
        if q_grad not in ("reparameterize", "reverse", "none"):
            raise ValueError(f"q_grad must be reparameterize, reverse or none, got {q_grad!r}")
        samples = []
        mu, logvar = self.layers[0](x)
        inputs = None
        for index, layer in enumerate(self.layers):
            if index > 0:
                mu, logvar = layer(inputs)
            noise_shape = (num_samples, *mu.shape) if index == 0 else mu.shape
            noise = torch.randn(noise_shape, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * noise
            if q_grad != "reparameterize":
                z = z.detach()
                transform = reverse_grad if q_grad == "reverse" else torch.Tensor.detach
                mu, logvar = transform(mu), transform(logvar)
            samples.append((z, mu, logvar))
            inputs = z
        return samples

    def log_density(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log q(z_1..z_L | x) [B] of given latents z_l [B, Z_l], bottom-up."""
        total, inputs = 0, x
        for layer, z in zip(self.layers, latents):
            mu, logvar = layer(inputs)
            total = total + gaussian_log_density(z, mu, logvar)
            inputs = z
        return total

    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z_1 | x], [B, Z_1]: the statistic behind active-unit counts."""
        return self.layers[0](x)[0]


class GaussianDecoder(GenerativeModel):
    """p(x | z_1) Bernoulli, p(z_l | z_{l+1}) diagonal Gaussian, p(z_L) = N(0, I)."""

    def __init__(self, data_dim: int, latent_dims: list[int], hidden: list[list[int]]):
        super().__init__()
        top_down = latent_dims[::-1]
        self.top_dim = top_down[0]
        self.latent_layers = nn.ModuleList(
            GaussianLayer(upper, width, lower)
            for upper, width, lower in zip(top_down[:-1], hidden[:-1], top_down[1:]))
        self.data_layer = mlp(latent_dims[0], hidden[-1], data_dim)

    def logits(self, z_bottom: torch.Tensor) -> torch.Tensor:
        return self.data_layer(z_bottom)

    @torch.no_grad()
    def sample_latents(self, num_samples: int, device, dtype) -> list[torch.Tensor]:
        """Ancestral draws from p(z_L) prod_l p(z_l | z_{l+1}), bottom-up, each [n, Z_l]."""
        latents = [torch.randn(num_samples, self.top_dim, device=device, dtype=dtype)]
        for layer in self.latent_layers:
            mu, logvar = layer(latents[0])
            latents.insert(0, mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
        return latents


class GaussianLatentMethod(Method):
    """Base of the methods on these models: log w = log p(x, z) - log q(z | x)."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused"):
        if layers not in ARCHITECTURES:
            raise ValueError(f"layers must be one of {sorted(ARCHITECTURES)}, got {layers}")
        latent_dims, q_hidden, p_hidden = ARCHITECTURES[layers]
        super().__init__(GaussianEncoder(data_dim, latent_dims, q_hidden),
                         GaussianDecoder(data_dim, latent_dims, p_hidden), num_samples, backend)
        self.layers = layers

    def log_weights(self, x: torch.Tensor, num_samples: int,
                    q_grad: str = "reparameterize") -> torch.Tensor:
        """See `Method.log_weights`; q_grad as in `GaussianEncoder.sample`."""
        return self.sampled_log_weights(x, num_samples, q_grad)[0]

    def sampled_log_weights(self, x, num_samples, q_grad="reparameterize"):
        """(log w [k, B], the encoder's samples, the decoder's logits [k, B, D])."""
        samples = self.q.sample(x, num_samples, q_grad)
        logits = self.p.logits(samples[0][0])
        if len(samples) == 1:
            z, mu, logvar = samples[0]
            return self.ops.iwae_log_weights(logits, x, z, mu, logvar), samples, logits
        return self._deep_log_weights(x, samples, logits), samples, logits

    @torch.no_grad()
    def bound_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The one-sample bound split as the seed writes it: the reconstruction
        term E_q[-log p(x | z)] and the KL term E_q[log q(z | x) - log p(z)], each [B]."""
        log_w, _, logits = self.sampled_log_weights(x, 1)
        reconstruction = nn.functional.binary_cross_entropy_with_logits(
            logits[0], x.expand_as(logits[0]), reduction="none").sum(-1)
        return {"reconstruction": reconstruction, "kl": -log_w[0] - reconstruction}

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """[n, D] Bernoulli means p(x | z) of ancestral draws z from p."""
        parameter = next(self.parameters())
        latents = self.p.sample_latents(num_samples, parameter.device, parameter.dtype)
        return torch.sigmoid(self.p.logits(latents[0]))

    def sleep_log_q(self, num_samples: int) -> torch.Tensor:
        """[n] log q(z | x) at n dreams (x, z) ~ p: the sleep phase fits q to them.
        Gradients reach q only."""
        parameter = next(self.parameters())
        with torch.no_grad():
            latents = self.p.sample_latents(num_samples, parameter.device, parameter.dtype)
            x = torch.bernoulli(torch.sigmoid(self.p.logits(latents[0])))
        return self.q.log_density(x, latents)

    def _deep_log_weights(self, x, samples, logits) -> torch.Tensor:
        # The fused op takes one (k, B) grid whose q parameters are per example;
        # the top layer's q parameters are per sample, so flatten k*B into the batch.
        num_samples, batch, data_dim = logits.shape
        z_top, mu_top, logvar_top = samples[-1]
        flat = num_samples * batch
        log_w = self.ops.iwae_log_weights(
            logits.reshape(1, flat, data_dim), x.expand(num_samples, -1, -1).reshape(flat, -1),
            z_top.reshape(1, flat, -1), mu_top.reshape(flat, -1), logvar_top.reshape(flat, -1),
        ).reshape(num_samples, batch)
        for layer, (z_lower, mu_q, logvar_q), (z_upper, _, _) in zip(
                self.p.latent_layers, samples[-2::-1], samples[:0:-1]):
            mu_p, logvar_p = layer(z_upper)
            log_w = log_w + gaussian_log_ratio(z_lower, mu_p, logvar_p, mu_q, logvar_q)
        return log_w
