"""A sigmoid belief network with one layer of binary latent units (Neal 1992), the
discrete model of reweighted wake-sleep (Bornschein & Bengio 2015).

p(h) = prod_j Bernoulli(h_j; sigmoid(a_j)), p(x | h) = prod_d Bernoulli(x_d;
sigmoid(W h + c)_d); q(h | x) = prod_j Bernoulli(h_j; sigmoid(V x + e)_j). Both
directions are linear-sigmoid, as in that paper. h cannot be reparameterised, so
q learns by the wake or sleep rules of `rws`, not by SGVB.
"""
from __future__ import annotations

import torch
from torch import nn

from genvar_bench.core import GenerativeModel, InferenceModel, Method
from genvar_bench.methods.latent import reverse_grad


def bernoulli_log_prob(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum over the last axis of log Bernoulli(values; sigmoid(logits))."""
    return (values * logits + nn.functional.logsigmoid(-logits)).sum(-1)


class BernoulliEncoder(InferenceModel):
    """q(h | x) = prod_j Bernoulli(sigmoid(V x + e)_j)."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.net = nn.Linear(data_dim, latent_dim)

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str = "none"):
        """[(h [k, B, H], probabilities [B, H], q logits [B, H])]: one binary layer.
        Gradients never flow through h; q_grad "reverse" flips the sign of the gradient
        through the logits (the wake-phase q update, see GaussianEncoder.sample),
        "none" cuts it."""
        if q_grad not in ("reverse", "none"):
            raise ValueError("binary latents have no reparameterisation: q_grad must be "
                             f"reverse or none, got {q_grad!r}")
        logits = self.net(x)
        probabilities = torch.sigmoid(logits.detach())
        h = torch.bernoulli(probabilities.expand(num_samples, *probabilities.shape))
        logits = reverse_grad(logits) if q_grad == "reverse" else logits.detach()
        return [(h, probabilities, logits)]

    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))

    def log_density(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        return bernoulli_log_prob(self.net(x), latents[0])


class SigmoidBeliefDecoder(GenerativeModel):
    """p(h) factorised Bernoulli with learned logits, p(x | h) = Bernoulli(sigmoid(W h + c))."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        self.data_layer = nn.Linear(latent_dim, data_dim)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.data_layer(h)

    @torch.no_grad()
    def sample_latents(self, num_samples: int, device, dtype) -> list[torch.Tensor]:
        probabilities = torch.sigmoid(self.prior_logits).to(device=device, dtype=dtype)
        return [torch.bernoulli(probabilities.expand(num_samples, -1))]


class BinaryLatentMethod(Method):
    """Base of methods on the one-layer SBN: log w = log p(x, h) - log q(h | x)
    through the fused `sbn_log_weights` op."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 5,
                 backend: str = "fused", latent_dim: int = 200):
        if layers != 1:
            raise ValueError(f"the sigmoid belief network has 1 latent layer, got layers={layers}")
        super().__init__(BernoulliEncoder(data_dim, latent_dim),
                         SigmoidBeliefDecoder(data_dim, latent_dim), num_samples, backend)
        self.layers = layers

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO, averaged over k samples."""
        return -self.log_weights(x, self.num_samples).mean(0)

    def log_weights(self, x: torch.Tensor, num_samples: int, q_grad: str = "none"):
        return self.sampled_log_weights(x, num_samples, q_grad)[0]

    def sampled_log_weights(self, x, num_samples, q_grad="none"):
        """(log w [k, B], the encoder's samples, the decoder's logits [k, B, D])."""
        samples = self.q.sample(x, num_samples, q_grad)
        h, _, q_logits = samples[0]
        logits = self.p.logits(h)
        log_w = self.ops.sbn_log_weights(logits, x, h, self.p.prior_logits, q_logits)
        return log_w, samples, logits

    @torch.no_grad()
    def bound_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One-sample E_q[-log p(x | h)] and E_q[log q(h | x) - log p(h)], each [B]."""
        log_w, _, logits = self.sampled_log_weights(x, 1, "none")
        reconstruction = -bernoulli_log_prob(logits[0], x)
        return {"reconstruction": reconstruction, "kl": -log_w[0] - reconstruction}

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        parameter = self.p.prior_logits
        h = self.p.sample_latents(num_samples, parameter.device, parameter.dtype)[0]
        return torch.sigmoid(self.p.logits(h))

    def sleep_log_q(self, num_samples: int) -> torch.Tensor:
        """[n] log q(h | x) at n dreams (x, h) ~ p; gradients reach q only."""
        parameter = self.p.prior_logits
        with torch.no_grad():
            h = self.p.sample_latents(num_samples, parameter.device, parameter.dtype)[0]
            x = torch.bernoulli(torch.sigmoid(self.p.logits(h)))
        return self.q.log_density(x, [h])
