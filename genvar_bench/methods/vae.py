"""VAE and IWAE: one model family, two training objectives (Burda et al. 2016).

Both draw k samples z_i ~ q(z | x) and form log w_i = log p(x, z_i) - log q(z_i | x).
"VAE k" minimises the average of -log w_i (k-sample SGVB on the ELBO); IWAE
minimises -log (1/k) sum_i w_i, the bound of the paper's resampled q_p^k.

q is `latent.GaussianEncoder` (diagonal Gaussians, reparameterised), p is
`latent.GaussianDecoder` (Bernoulli p(x | z_1), N(0, I) on the top layer); both methods are
objectives over them, `bound` below.
"""
import torch

from genvar_bench.registry import register
from genvar_bench.methods.latent import GaussianLatentMethod


@register("vae")
class VAE(GaussianLatentMethod):
    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO, averaged over k samples: q is q(z | x) itself."""
        return -self.log_weights(x, self.num_samples).mean(0)


@register("iwae")
class IWAE(GaussianLatentMethod):
    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """The k-sample importance-weighted bound: q is the resampled q_p^k."""
        return self.importance_bound(x, self.num_samples)
