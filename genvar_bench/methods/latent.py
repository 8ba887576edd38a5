"""Gaussian-latent models of the IWAE paper (Burda et al. 2016).

q(z_1..z_L | x) = q(z_1 | x) prod_l q(z_l | z_{l-1}), diagonal Gaussians;
p(x, z_1..z_L) = p(x | z_1) prod_l p(z_l | z_{l+1}) p(z_L), Bernoulli data,
diagonal Gaussian intermediate layers, a standard normal top layer. Hidden
layers use tanh. q is `GaussianEncoder`, p is `GaussianDecoder`; p's `log_ratio`
puts the Bernoulli term and the top layer's prior and posterior terms through the
fused `iwae_log_weights` op. vae, iwae, rws and dae are objectives on this family
(the DAE with its own q and p, `methods/dae.py`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genvar_bench.core import Draw, GenerativeModel, InferenceModel, Method

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

    q_grads = ("reparameterize", "reverse", "none")
    has_units = True
    # Its draws carry (mu, logvar) of each layer's q(z_l | .): what GaussianDecoder fuses.
    q_family = "diagonal-gaussian"

    def __init__(self, layers, backend: str = "fused"):
        """layers: modules h -> (mu, logvar), bottom-up (x -> z_1 first)."""
        super().__init__(backend)
        self.layers = nn.ModuleList(layers)

    @classmethod
    def of_sizes(cls, data_dim: int, latent_dims: list[int], hidden: list[list[int]],
                 backend: str = "fused"):
        """MLP Gaussian layers of the given latent and hidden sizes."""
        in_dims = [data_dim] + latent_dims[:-1]
        return cls((GaussianLayer(in_dim, width, out_dim)
                    for in_dim, width, out_dim in zip(in_dims, hidden, latent_dims)), backend)

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> Draw:
        """latents z_l [k, B, Z_l] bottom-up, params (mu, logvar) per layer: the first
        layer's [B, Z_1] (shared by the k samples), later ones [k, B, Z_l].

        q_grad says how gradients reach q's parameters: "reparameterize" (through
        z = mu + sigma * noise), "reverse" (z is a constant sample; the gradient
        through mu and logvar changes sign, so minimising -sum_i w_i log w_i over q
        maximises sum_i w_i log q(z_i | x): the wake-phase q update of reweighted
        wake-sleep) or "none" (z, mu and logvar are constants to q).
        """
        q_grad = self.check_q_grad(q_grad)
        draw = Draw([], [])
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
            draw.latents.append(z)
            draw.params.append((mu, logvar))
            inputs = z
        return draw

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log q(z_1..z_L | x) of given latents z_l [..., B, Z_l], bottom-up."""
        total, inputs = x.new_zeros(()), x
        for layer, z in zip(self.layers, latents):
            mu, logvar = layer(inputs)
            total = total + gaussian_log_density(z, mu, logvar)
            inputs = z
        return total

    def unit_means(self, x: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
        """E_q[z_1 | x] is the first layer's mean; deeper layers' means are averaged over
        num_samples draws of the layers below."""
        draw = self.sample(x, num_samples)
        return [draw.params[0][0]] + [mu.mean(0) for mu, _ in draw.params[1:]]

    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z_1 | x], [B, Z_1]."""
        return self.layers[0](x)[0]


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class BernoulliDecoder(GenerativeModel):
    """A p of binary data, p(x | tau) = Bernoulli(sigmoid(logits(z_1))): its `data_mean`
    and `sample`, from the family's `logits` and `sample_latents`."""

    def logits(self, z_bottom: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def data_mean(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Bernoulli means sigmoid(logits(z_1))."""
        return torch.sigmoid(self.logits(latents[0]))

    @torch.no_grad()
    def sample(self, num_samples: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        latents = self.sample_latents(num_samples)
        return torch.bernoulli(self.data_mean(latents)), latents


class GaussianDecoder(BernoulliDecoder):
    """p(x | z_1) Bernoulli, p(z_l | z_{l+1}) diagonal Gaussian, p(z_L) = N(0, I)."""

    # The fused log ratio reads q's (mu, logvar) from the draw: diagonal Gaussian q only.
    fused_for_q = "diagonal-gaussian"

    def __init__(self, data_dim: int, latent_dims: list[int], hidden: list[list[int]],
                 backend: str = "fused"):
        super().__init__(backend)
        top_down = latent_dims[::-1]
        self.top_dim = top_down[0]
        self.latent_layers = nn.ModuleList(
            GaussianLayer(upper, width, lower)
            for upper, width, lower in zip(top_down[:-1], hidden[:-1], top_down[1:]))
        self.data_layer = mlp(latent_dims[0], hidden[-1], data_dim)

    def logits(self, z_bottom: torch.Tensor) -> torch.Tensor:
        return self.data_layer(z_bottom)

    def log_likelihood(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        logits = self.logits(latents[0])
        return -nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)

    def log_prior(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(z_1..z_L): the top layer's N(0, I) and the Gaussian layers below it."""
        total = standard_normal_log_density(latents[-1])
        for layer, lower, upper in zip(self.latent_layers, latents[-2::-1], latents[:0:-1]):
            total = total + gaussian_log_density(lower, *layer(upper))
        return total

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        return self.log_likelihood(x, latents) + self.log_prior(latents)

    def log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        """One fused op: log p(x | z_1) + log p(z_L) - log q(z_L | .) over the (k, B) grid,
        from q's mu and logvar in the draw; with two layers, plus the middle layer's
        Gaussian log ratio. For a q of another family (a flow, say), whose draw's params
        are not those of q(z | x), log p - log q apart (`exact_log_ratio`)."""
        if not self.fuses(q):
            return self.exact_log_ratio(x, draw, q)
        logits = self.logits(draw.latents[0])
        if len(draw.latents) == 1:
            (mu, logvar), = draw.params
            return self.ops.iwae_log_weights(logits, x, draw.latents[0], mu, logvar)
        # The fused op takes one (k, B) grid whose q parameters are per example;
        # the top layer's q parameters are per sample, so flatten k*B into the batch.
        num_samples, batch, data_dim = logits.shape
        z_top, (mu_top, logvar_top) = draw.latents[-1], draw.params[-1]
        flat = num_samples * batch
        log_w = self.ops.iwae_log_weights(
            logits.reshape(1, flat, data_dim), x.expand(num_samples, -1, -1).reshape(flat, -1),
            z_top.reshape(1, flat, -1), mu_top.reshape(flat, -1), logvar_top.reshape(flat, -1),
        ).reshape(num_samples, batch)
        for layer, z_lower, (mu_q, logvar_q), z_upper in zip(
                self.latent_layers, draw.latents[-2::-1], draw.params[-2::-1], draw.latents[:0:-1]):
            mu_p, logvar_p = layer(z_upper)
            log_w = log_w + gaussian_log_ratio(z_lower, mu_p, logvar_p, mu_q, logvar_q)
        return log_w

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """Ancestral draws from p(z_L) prod_l p(z_l | z_{l+1}), bottom-up, each [n, Z_l]."""
        parameter = self.own_parameter()
        latents = [torch.randn(num_samples, self.top_dim, device=parameter.device,
                               dtype=parameter.dtype)]
        for layer in self.latent_layers:
            mu, logvar = layer(latents[0])
            latents.insert(0, mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
        return latents


class GaussianLatentMethod(Method):
    """Base of the objectives on this family: by default q a `GaussianEncoder` and p a
    `GaussianDecoder` of the IWAE paper's architecture for `layers` (1 or 2).

    `q=` or `p=` puts your own in their place (a normalising flow q, a mixture prior p):
    built with the same backend, of the same latent sizes (`ARCHITECTURES[layers]`), and
    scored exactly as log p(x, tau) - log q(tau | x) where its family is not the other's
    (see `InferenceModel.q_family`); the default of the other side is built as usual."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused", *, q: InferenceModel | None = None,
                 p: GenerativeModel | None = None):
        if layers not in ARCHITECTURES:
            raise ValueError(f"layers must be one of {sorted(ARCHITECTURES)}, got {layers}")
        latent_dims, q_hidden, p_hidden = ARCHITECTURES[layers]
        if q is None:
            q = GaussianEncoder.of_sizes(data_dim, latent_dims, q_hidden, backend)
        if p is None:
            p = GaussianDecoder(data_dim, latent_dims, p_hidden, backend)
        super().__init__(q, p, num_samples, backend)
        self.layers = layers
