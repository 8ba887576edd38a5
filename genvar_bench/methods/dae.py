"""The denoising autoencoder as a generative model (the paper's third example).

q(z | x) = N(z; e(x), noise^2 I): a deterministic encoder e, its code corrupted
by Gaussian noise of a fixed level. The prior is the data-convolved encoder,
p(z) = E_D[q(z | x)] = (1/N) sum_n N(z; e(x_n), noise^2 I) over the N training
points, and p(x | z) is a Bernoulli decoder. Since p(z) is q's own marginal,
KL(q(x, z) || p(x, z)) moves with q and p only through the reconstruction term
E_q[-log p(x | z)]: training is reconstruction, nothing else.

q is a `GaussianEncoder` of one `NoisyCode` layer; p is `MixturePriorDecoder`, the
Gaussian-latent decoder with the mixture prior, fixed after training
(`DAEScorer.prepare`). Scoring uses the same importance weights as every other latent
model, with log p(z) the exact mixture over all N training codes
(`mixture_log_density`).
The encoder's code passes through tanh: at a fixed noise level an unbounded
encoder could spread its codes until the noise no longer mattered, driving the
reconstruction error down and the KL to an unseen test point's code up without
limit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genvar_bench.core import Draw, InferenceModel, Method
from genvar_bench.registry import Option, family_defaults, register
from genvar_bench.scoring import Scorer
from genvar_bench.methods.latent import (ARCHITECTURES, GaussianDecoder, GaussianEncoder, mlp,
                                         standard_normal_log_density)


class NoisyCode(nn.Module):
    """x -> (tanh(mlp(x)), log noise^2): the mean and log-variance of q(z | x)."""

    def __init__(self, data_dim: int, hidden: list[int], latent_dim: int, noise: float):
        super().__init__()
        self.net = mlp(data_dim, hidden, latent_dim)
        self.log_variance = 2 * math.log(noise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = torch.tanh(self.net(x))
        return mu, torch.full_like(mu, self.log_variance)


class MixturePriorDecoder(GaussianDecoder):
    """p(x | z) Bernoulli (the Gaussian-latent decoder), p(z) = (1/N) sum_n N(z; c_n,
    noise^2 I) over the codes c_n of the training set (`set_prior`)."""

    prior_centers: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, data_dim: int, latent_dim: int, hidden: list[int], noise: float,
                 backend: str = "fused"):
        super().__init__(data_dim, [latent_dim], [hidden], backend)
        self.noise = noise
        self.register_buffer("prior_centers", torch.empty(0, latent_dim), persistent=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of prior components is the saved training set's, not the empty default.
        saved = state_dict.get(prefix + "prior_centers")
        if saved is not None:
            self.prior_centers = self.prior_centers.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_prior(self, codes: torch.Tensor) -> None:
        self.prior_centers = codes

    def _check_prior(self) -> None:
        if self.prior_centers.shape[0] == 0:
            raise RuntimeError("the DAE prior is not set: call DAEScorer().prepare(method, train_data) "
                               "after training, before any bound or sample")

    def log_prior(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """log p(z) [...] for z [..., Z]: the mixture over the training codes."""
        self._check_prior()
        z = latents[0]
        flat = z.reshape(-1, z.shape[-1])
        return self.ops.mixture_log_density(flat, self.prior_centers, self.noise).reshape(z.shape[:-1])

    def log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        if not self.fuses(q):  # log_prob has the mixture prior already
            return self.exact_log_ratio(x, draw, q)
        # The fused op scores against p(z) = N(0, I); swap in the mixture prior.
        z = draw.latents[0]
        return (super().log_ratio(x, draw, q) + self.log_prior(draw.latents)
                - standard_normal_log_density(z))

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """A training code plus encoder noise: [z [n, Z]]."""
        self._check_prior()
        picks = torch.randint(self.prior_centers.shape[0], (num_samples,),
                              device=self.prior_centers.device)
        centers = self.prior_centers[picks]
        return [centers + self.noise * torch.randn_like(centers)]


# Far below this range float32 scoring underflows to NaN; far above it the prior is flat
# and the figures meaningless (codes lie in [-1, 1]).
NOISE_RANGE = (1e-3, 100.0)


@register("dae", default_num_samples=(1,), options=(
    Option("noise", float, 0.8, "standard deviation of the code noise (default 0.8; codes "
           "lie in [-1, 1])", low=NOISE_RANGE[0], high=NOISE_RANGE[1]),))
class DenoisingAutoencoder(Method):
    """Objective: reconstruction. Bound: the negative ELBO with the mixture prior."""

    # The prior's codes were kept on the method before they moved into p.
    moved_state = {"prior_centers": "p.prior_centers"}
    q: GaussianEncoder
    p: MixturePriorDecoder

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused", noise: float = 0.8):
        if layers != 1:
            raise ValueError(f"the denoising autoencoder has 1 latent layer, got layers={layers}")
        if not (math.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive number, got {noise}")
        (latent_dim,), (q_hidden, *_), (p_hidden, *_) = ARCHITECTURES[1]
        super().__init__(GaussianEncoder([NoisyCode(data_dim, q_hidden, latent_dim, noise)], backend),
                         MixturePriorDecoder(data_dim, latent_dim, p_hidden, noise, backend),
                         num_samples, backend)
        self.layers = layers
        self.noise = noise

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction error E_q[-log p(x | z)], averaged over k noise draws."""
        return -self.p.log_likelihood(x, self.q.sample(x, self.num_samples).latents).mean()

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO with the mixture prior: reconstruction plus KL(q(z | x) || p(z))."""
        return -self.log_weights(x, self.num_samples).mean(0)


class DAEScorer(Scorer):
    """Importance sampling, once the prior is fixed from the training set."""

    curve_samples = 50  # each sample scores against every training code

    @torch.no_grad()
    def prepare(self, method, train_data: torch.Tensor, show_progress: bool = False,
                batch_size: int = 1000) -> None:
        """Fixes the prior: p(z) = (1/N) sum_n N(z; e(x_n), noise^2 I) over train_data."""
        method.p.set_prior(torch.cat([method.q.posterior_means(train_data[start:start + batch_size])
                                      for start in range(0, train_data.shape[0], batch_size)]))


family_defaults(DenoisingAutoencoder, scorer=DAEScorer())
