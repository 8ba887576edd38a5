"""Reweighted wake-sleep (Bornschein & Bengio, ICLR 2015): an objective on either latent
family, the Gaussian-latent models of `latent.py` or the sigmoid belief network of `sbn.py`.

Draw h_1..h_k ~ q(h | x), log w_i = log p(x, h_i) - log q(h_i | x), and
self-normalised weights w~_i = w_i / sum_j w_j. Then
- wake phase, p: ascend sum_i w~_i grad log p(x, h_i), the gradient of the
  k-sample importance-weighted bound log (1/k) sum_i w_i with respect to p;
- wake phase, q: ascend sum_i w~_i grad log q(h_i | x), fitting q to the resampled
  q_p^k, a better guess at p(h | x);
- sleep phase, q: draw (x, h) ~ p and ascend log q(h | x).
No gradient passes through the samples, so it trains discrete latents too.
The reported bound is the k-sample importance-weighted bound, as for IWAE.
"""
from __future__ import annotations

import torch

from genvar_bench.core import Method
from genvar_bench.registry import Option, register
from genvar_bench.methods.latent import GaussianLatentMethod
from genvar_bench.methods.sbn import BinaryLatentMethod

Q_UPDATES = ("wake", "sleep", "mix")
LATENTS = ("gaussian", "binary")


class ReweightedWakeSleep(Method):
    """The RWS objective over a latent model family (mixed in before it)."""

    name = "rws"

    def _set_q_update(self, q_update: str) -> None:
        if q_update not in Q_UPDATES:
            raise ValueError(f"q_update must be one of {Q_UPDATES}, got {q_update!r}")
        self.q_update = q_update

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        return self.importance_bound(x, self.num_samples)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Value: the mean k-sample bound. Gradient: the RWS updates, through
        surrogates (s - s.detach() is 0 in value, s in gradient)."""
        wake_q = self.q_update in ("wake", "mix")
        log_w = self.log_weights(x, self.num_samples, q_grad="reverse" if wake_q else "none")
        log_mean_w, weights = self.ops.iwae_bound(log_w.detach())
        # Over p: -sum_i w~_i grad log p. Over q (signs reversed in log_w): -sum_i w~_i grad log q.
        wake = -(weights * log_w).sum(0).mean()
        loss = -log_mean_w.mean() + (wake - wake.detach())
        if self.q_update in ("sleep", "mix"):
            sleep = -self.sleep_log_q(x.shape[0]).mean()
            loss = loss + (sleep - sleep.detach())
        return loss

    def sleep_log_q(self, num_samples: int) -> torch.Tensor:
        """[n] log q(tau | x) at n dreams (x, tau) ~ p: the sleep phase fits q to them.
        Gradients reach q only."""
        x, latents = self.p.sample(num_samples)
        return self.q.log_prob(x, latents)


class GaussianRWS(ReweightedWakeSleep, GaussianLatentMethod):
    """RWS on the Gaussian-latent models of the IWAE paper (no reparameterisation used)."""

    def __init__(self, data_dim, layers=1, num_samples=5, backend="fused", q_update="wake"):
        super().__init__(data_dim, layers, num_samples, backend)
        self._set_q_update(q_update)


class BinaryRWS(ReweightedWakeSleep, BinaryLatentMethod):
    """RWS on a sigmoid belief network with 200 binary latent units."""

    def __init__(self, data_dim, layers=1, num_samples=5, backend="fused", q_update="wake",
                 latent_dim=200):
        super().__init__(data_dim, layers, num_samples, backend, latent_dim)
        self._set_q_update(q_update)


@register("rws", default_num_samples=(5,), options=(
    Option("q_update", str, "wake", "how q learns: wake (fit q to the resampled q_p^k, the "
           "default), sleep (fit q at dreams of p) or mix (both)", choices=Q_UPDATES),
    Option("latent", str, "gaussian", "gaussian (the IWAE models, the default) or binary "
           "(a sigmoid belief network of 200 units)", choices=LATENTS)))
def build_rws(data_dim: int, layers: int = 1, num_samples: int = 5, backend: str = "fused",
              q_update: str = "wake", latent: str = "gaussian"):
    """RWS with `latent` "gaussian" (the IWAE architectures) or "binary" (an SBN)."""
    if latent not in LATENTS:
        raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
    family = GaussianRWS if latent == "gaussian" else BinaryRWS
    return family(data_dim, layers, num_samples, backend, q_update)

