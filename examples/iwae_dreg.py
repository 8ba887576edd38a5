"""IWAE with doubly reparameterised gradients (DReG; Tucker, Lawson, Gu & Maddison, 2019),
written only against genvar-bench's public API, as a plug-in:

    python -m genvar_bench run --plugin examples/iwae_dreg.py --method iwae-dreg --k 5

q and p are the IWAE paper's 1-layer Gaussian-latent model (`GaussianLatentMethod`); the
objective is IWAE's k-sample bound, -log (1/k) sum_i w_i, so the rows it makes sit beside
`iwae` under the same protocol. Only q's gradient changes. IWAE's reparameterised
gradient of the bound for q,

    sum_i w~_i d log w_i / d phi    (w~ the self-normalised weights),

has a score-function part, through log q(z_i | x)'s own dependence on phi, whose variance
grows with k and drives q's signal-to-noise ratio to 0 (Rainforth et al. 2018). DReG
replaces it by the equal-in-expectation

    sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi),

with log q evaluated at stopped mu and sigma, so that phi acts through z only. p's
gradient, sum_i w~_i d log w_i / d theta, is IWAE's.

Implementation: one pass. log w comes from p's fused log ratio at q's draw with mu
and log sigma^2 detached; the surrogate -sum_i w~_i log w_i gives p IWAE's gradient, and a hook on z
scales the gradient arriving at z_i by w~_i, turning q's w~_i into w~_i^2.
"""
from __future__ import annotations

import math

import torch

from genvar_bench import Draw, register
from genvar_bench.methods.latent import GaussianLatentMethod


@register("iwae-dreg")
class IWAEDReG(GaussianLatentMethod):
    """q(z | x) diagonal Gaussian, p(x | z) Bernoulli with an N(0, I) prior (1 layer);
    trained on the k-sample bound with DReG gradients for q."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 5,
                 backend: str = "fused"):
        if layers != 1:
            raise ValueError(f"iwae-dreg is written for 1 stochastic layer, got layers={layers}")
        super().__init__(data_dim, layers, num_samples, backend)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[B] the k-sample importance-weighted bound, as IWAE's."""
        return self.importance_bound(x, self.num_samples)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Value: the mean k-sample bound. Gradient: IWAE's for p, DReG's for q."""
        draw = self.q.sample(x, self.num_samples)  # z = mu + sigma * noise
        (z,), ((mu, logvar),) = draw.latents, draw.params
        # log p(x, z) - log q(z | x) with q's parameters stopped: phi acts through z only
        log_w = self.p.log_ratio(x, Draw([z], [(mu.detach(), logvar.detach())]), self.q)
        weights = torch.softmax(log_w.detach(), dim=0)  # w~ [k, B]
        if z.requires_grad:
            z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
        surrogate = -(weights * log_w).sum(0).mean()
        bound = -(torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_samples)).mean()
        return bound + (surrogate - surrogate.detach())
