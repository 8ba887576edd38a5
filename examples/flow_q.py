"""IWAE with a normalising-flow q, as a plug-in on the built-in Gaussian-latent family:

    python -m genvar_bench run --plugin examples/flow_q.py --method iwae-flow --k 5

q(z | x): z_0 ~ N(mu(x), diag e^logvar(x)), then two affine coupling layers (RealNVP,
Dinh et al. 2017), each scaling and shifting half of the units given the other half:
z = f_2(f_1(z_0)), so log q(z | x) = log N(z_0; mu, e^logvar) - sum_j log |det df_j/dz|.
p is the family's own (`GaussianDecoder`: Bernoulli p(x | z), N(0, I) prior), given to
the family with `q=`; the objective is IWAE's k-sample bound.

The decoder's fused log ratio is written for a diagonal-Gaussian q, whose (mu, logvar) it
reads from the draw; this q is of another family (`q_family` None), so its log-weights
are formed exactly, log p(x, z) - log q(z | x). The flow scores its own draws as it makes
them (the log-determinants come with the forward pass) and hands the value over in
`Draw.log_q`; `log_prob` scores any latents by inverting the couplings, which the check
before training compares against.
"""
from __future__ import annotations

import torch
from torch import nn

from genvar_bench import Draw, InferenceModel, register
from genvar_bench.methods.latent import ARCHITECTURES, GaussianLayer, gaussian_log_density
from genvar_bench.methods.vae import IWAE


class AffineCoupling(nn.Module):
    """y = z with one half of the units scaled and shifted given the other half."""

    def __init__(self, dim: int, hidden: int, flip: bool):
        super().__init__()
        self.flip, self.half = flip, dim // 2
        self.net = nn.Sequential(nn.Linear(self.half, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * (dim - self.half)))
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = z[..., :self.half], z[..., self.half:]
        return (second, first) if self.flip else (first, second)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([changed, kept] if self.flip else [kept, changed], -1)

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.net(kept).chunk(2, -1)
        return torch.tanh(log_scale), shift  # |log scale| < 1: a stable start

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, log |det dy/dz|), the latter [...]: summed over units."""
        kept, changed = self._split(z)
        log_scale, shift = self._scale_shift(kept)
        return self._join(kept, changed * torch.exp(log_scale) + shift), log_scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log |det dy/dz| at z)."""
        kept, changed = self._split(y)
        log_scale, shift = self._scale_shift(kept)
        return self._join(kept, (changed - shift) * torch.exp(-log_scale)), log_scale.sum(-1)


class FlowEncoder(InferenceModel):
    """q(z | x): a diagonal Gaussian followed by two affine couplings; exact log q."""

    q_grads = ("reparameterize", "none")
    has_units = True

    def __init__(self, data_dim: int, latent_dim: int, hidden: list[int],
                 backend: str = "fused"):
        super().__init__(backend)
        self.base = GaussianLayer(data_dim, hidden, latent_dim)
        self.couplings = nn.ModuleList([AffineCoupling(latent_dim, hidden[-1], flip=False),
                                        AffineCoupling(latent_dim, hidden[-1], flip=True)])

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> Draw:
        """z [k, B, Z] and log q(z | x) [k, B] of these draws; params: the base Gaussian's
        (mu, logvar), which are not q's parameters (the family says so: None)."""
        q_grad = self.check_q_grad(q_grad)
        mu, logvar = self.base(x)
        z0 = mu + torch.exp(0.5 * logvar) * torch.randn(num_samples, *mu.shape,
                                                        device=mu.device, dtype=mu.dtype)
        z, log_q = z0, gaussian_log_density(z0, mu, logvar)
        for coupling in self.couplings:
            z, log_det = coupling(z)
            log_q = log_q - log_det
        if q_grad == "none":
            z, log_q, mu, logvar = z.detach(), log_q.detach(), mu.detach(), logvar.detach()
        return Draw([z], [(mu, logvar)], log_q=log_q)

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """log q(z | x) of given z [..., B, Z], by inverting the couplings."""
        z, log_det = latents[0], torch.zeros((), device=x.device, dtype=x.dtype)
        for coupling in reversed(self.couplings):
            z, step = coupling.inverse(z)
            log_det = log_det + step
        return gaussian_log_density(z, *self.base(x)) - log_det

    def unit_means(self, x: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
        return [self.sample(x, num_samples, "none").latents[0].mean(0)]


@register("iwae-flow")
class IWAEFlow(IWAE):
    """IWAE whose q is `FlowEncoder` (1 stochastic layer, the IWAE paper's sizes)."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 5,
                 backend: str = "fused"):
        if layers != 1:
            raise ValueError(f"iwae-flow is written for 1 stochastic layer, got layers={layers}")
        (latent_dim,), (q_hidden, *_), _ = ARCHITECTURES[1]
        super().__init__(data_dim, layers, num_samples, backend,
                         q=FlowEncoder(data_dim, latent_dim, q_hidden, backend))
