"""A VAE whose prior is a learned mixture of Gaussians, as a plug-in on the built-in
Gaussian-latent family:

    python -m genvar_bench run --plugin examples/mixture_prior.py --method vae-mixture --k 1

p(x, z) = p(x | z) p(z) with p(x | z) the family's Bernoulli decoder and
p(z) = sum_c pi_c N(z; m_c, diag e^{s_c}), C components whose weights, means and
log-variances are learned with the rest (as in Tomczak & Welling's VampPrior paper's
mixture baseline). q is the family's diagonal Gaussian; the p is given to the family with
`p=`.

The decoder's fused log ratio assumes the N(0, I) prior; this p redefines the prior
(`log_prior`), so its `fused_for_q` is None and its log-weights are formed exactly,
log p(x | z) + log p(z) - log q(z | x).
"""
from __future__ import annotations

import torch
from torch import nn

from genvar_bench import register
from genvar_bench.methods.latent import ARCHITECTURES, GaussianDecoder, gaussian_log_density
from genvar_bench.methods.vae import VAE

COMPONENTS = 10


class MixturePriorDecoder(GaussianDecoder):
    """Bernoulli p(x | z) of the family, p(z) a learned mixture of C diagonal Gaussians."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: list[int],
                 components: int = COMPONENTS, backend: str = "fused"):
        super().__init__(data_dim, [latent_dim], [hidden], backend)
        self.logit_weights = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.log_variances = nn.Parameter(torch.zeros(components, latent_dim))

    def log_prior(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """log sum_c pi_c N(z; m_c, diag e^{s_c}) for z [..., Z]: [...]."""
        z = latents[0].unsqueeze(-2)  # [..., 1, Z] against the [C, Z] components
        per_component = gaussian_log_density(z, self.means, self.log_variances)
        return torch.logsumexp(per_component + torch.log_softmax(self.logit_weights, 0), -1)

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """z ~ p(z): a component by its weight, then its Gaussian; [[n, Z]]."""
        component = torch.multinomial(torch.softmax(self.logit_weights, 0), num_samples,
                                      replacement=True)
        mean, log_variance = self.means[component], self.log_variances[component]
        return [mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)]


@register("vae-mixture")
class VAEMixturePrior(VAE):
    """The VAE objective with `MixturePriorDecoder` as p (1 stochastic layer)."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused"):
        if layers != 1:
            raise ValueError(f"vae-mixture is written for 1 stochastic layer, got layers={layers}")
        (latent_dim,), _, (p_hidden, *_) = ARCHITECTURES[1]
        super().__init__(data_dim, layers, num_samples, backend,
                         p=MixturePriorDecoder(data_dim, latent_dim, p_hidden, backend=backend))
