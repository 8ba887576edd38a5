"""The denoising autoencoder as a generative model (the seed's third example).

q(z | x) = N(z; e(x), noise^2 I): a deterministic encoder e, its code corrupted
by Gaussian noise of a fixed level. The prior is the data-convolved encoder,
p(z) = E_D[q(z | x)] = (1/N) sum_n N(z; e(x_n), noise^2 I) over the N training
points, and p(x | z) is a Bernoulli decoder. Since p(z) is q's own marginal,
KL(q(x, z) || p(x, z)) moves with q and p only through the reconstruction term
E_q[-log p(x | z)]: training is reconstruction, nothing else.

Scoring uses the same importance weights as every other latent model, with
log p(z) the exact mixture over all N training codes (`mixture_log_density`).
The encoder's code passes through tanh: at a fixed noise level an unbounded
encoder could spread its codes until the noise no longer mattered, driving the
reconstruction error down and the KL to an unseen test point's code up without
limit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genvar_bench.core import Option, register
from genvar_bench.methods.latent import ARCHITECTURES, GaussianLatentMethod, mlp


class NoisyCode(nn.Module):
    """x -> (tanh(mlp(x)), log noise^2): the mean and log-variance of q(z | x)."""

    def __init__(self, data_dim: int, hidden: list[int], latent_dim: int, noise: float):
        super().__init__()
        self.net = mlp(data_dim, hidden, latent_dim)
        self.log_variance = 2 * math.log(noise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = torch.tanh(self.net(x))
        return mu, torch.full_like(mu, self.log_variance)


# Far below this range float32 scoring underflows to NaN; far above it the prior is flat
# and the figures meaningless (codes lie in [-1, 1]).
NOISE_RANGE = (1e-3, 100.0)


@register("dae", default_num_samples=(1,), options=(
    Option("noise", float, 0.8, "standard deviation of the code noise (default 0.8; codes "
           "lie in [-1, 1])", low=NOISE_RANGE[0], high=NOISE_RANGE[1]),))
class DenoisingAutoencoder(GaussianLatentMethod):

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused", noise: float = 0.8):
        if layers != 1:
            raise ValueError(f"the denoising autoencoder has 1 latent layer, got layers={layers}")
        if not (math.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive number, got {noise}")
        super().__init__(data_dim, layers, num_samples, backend)
        (latent_dim,), (hidden, *_), _ = ARCHITECTURES[1]
        self.q.layers[0] = NoisyCode(data_dim, hidden, latent_dim, noise)
        self.noise = noise
        # The prior's components: the codes e(x_n) of the training set (prepare_scoring).
        self.register_buffer("prior_centers", torch.empty(0, latent_dim), persistent=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of prior components is the saved training set's, not the empty default.
        saved = state_dict.get(prefix + "prior_centers")
        if saved is not None:
            self.prior_centers = self.prior_centers.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction error E_q[-log p(x | z)], averaged over k noise draws."""
        (z, _, _), = self.q.sample(x, self.num_samples)
        logits = self.p.logits(z)
        return nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1).mean()

    @torch.no_grad()
    def prepare_scoring(self, train_data: torch.Tensor, batch_size: int = 1000) -> None:
        """Fixes the prior: p(z) = (1/N) sum_n N(z; e(x_n), noise^2 I) over train_data."""
        codes = [self.q.posterior_means(train_data[start:start + batch_size])
                 for start in range(0, train_data.shape[0], batch_size)]
        self.prior_centers = torch.cat(codes)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) [...] for z [..., Z]: the mixture over the training codes."""
        if self.prior_centers.shape[0] == 0:
            raise RuntimeError("the DAE prior is not set: call prepare_scoring(train_data) "
                               "after training, before any bound or sample")
        flat = z.reshape(-1, z.shape[-1])
        return self.ops.mixture_log_density(flat, self.prior_centers, self.noise).reshape(z.shape[:-1])

    def sampled_log_weights(self, x, num_samples, q_grad="reparameterize"):
        # The fused op scores against p(z) = N(0, I); swap in the mixture prior.
        log_w, samples, logits = super().sampled_log_weights(x, num_samples, q_grad)
        z = samples[0][0]
        standard_normal = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        return log_w + self.log_prior(z) - standard_normal, samples, logits

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO with the mixture prior: reconstruction plus KL(q(z | x) || p(z))."""
        return -self.log_weights(x, self.num_samples).mean(0)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """A training code, plus encoder noise, decoded: [n, D] Bernoulli means."""
        if self.prior_centers.shape[0] == 0:
            raise RuntimeError("the DAE prior is not set: call prepare_scoring(train_data) first")
        picks = torch.randint(self.prior_centers.shape[0], (num_samples,),
                              device=self.prior_centers.device)
        centers = self.prior_centers[picks]
        z = centers + self.noise * torch.randn_like(centers)
        return torch.sigmoid(self.p.logits(z))
