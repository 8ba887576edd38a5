"""A sigmoid belief network with one layer of binary latent units (Neal 1992), the
discrete model of reweighted wake-sleep (Bornschein & Bengio 2015).

p(h) = prod_j Bernoulli(h_j; sigmoid(a_j)), p(x | h) = prod_d Bernoulli(x_d;
sigmoid(W h + c)_d); q(h | x) = prod_j Bernoulli(h_j; sigmoid(V x + e)_j). Both
directions are linear-sigmoid, as in that paper. h cannot be reparameterised, so
q learns by the wake or sleep rules of `rws`, not by SGVB. q is `BernoulliEncoder`,
p is `SigmoidBeliefDecoder`, whose `log_ratio` is the fused `sbn_log_weights` op.
"""
from __future__ import annotations

import torch
from torch import nn

from genvar_bench.core import Draw, InferenceModel, Method
from genvar_bench.methods.latent import BernoulliDecoder, reverse_grad


def bernoulli_log_prob(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum over the last axis of log Bernoulli(values; sigmoid(logits))."""
    return (values * logits + nn.functional.logsigmoid(-logits)).sum(-1)


class BernoulliEncoder(InferenceModel):
    """q(h | x) = prod_j Bernoulli(sigmoid(V x + e)_j)."""

    # h cannot be reparameterised: no gradient flows through a draw.
    q_grads = ("none", "reverse")
    has_units = True
    # Its draws carry (probabilities, logits) of q(h | x): what SigmoidBeliefDecoder fuses.
    q_family = "bernoulli"

    def __init__(self, data_dim: int, latent_dim: int, backend: str = "fused"):
        super().__init__(backend)
        self.net = nn.Linear(data_dim, latent_dim)

    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> Draw:
        """latents [h [k, B, H]], params [(probabilities [B, H], q logits [B, H])].
        Gradients never flow through h; q_grad "reverse" flips the sign of the gradient
        through the logits (the wake-phase q update, see GaussianEncoder.sample),
        "none" cuts it."""
        if q_grad == "reparameterize":
            raise ValueError("binary latents have no reparameterisation: q_grad must be "
                             f"reverse or none, got {q_grad!r}")
        q_grad = self.check_q_grad(q_grad)
        logits = self.net(x)
        probabilities = torch.sigmoid(logits.detach())
        h = torch.bernoulli(probabilities.expand(num_samples, *probabilities.shape))
        logits = reverse_grad(logits) if q_grad == "reverse" else logits.detach()
        return Draw([h], [(probabilities, logits)])

    def unit_means(self, x: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
        return [self.sample(x, num_samples).params[0][0]]

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        return bernoulli_log_prob(self.net(x), latents[0])


class SigmoidBeliefDecoder(BernoulliDecoder):
    """p(h) factorised Bernoulli with learned logits, p(x | h) = Bernoulli(sigmoid(W h + c))."""

    # The fused log ratio reads q's logits from the draw: factorised Bernoulli q only.
    fused_for_q = "bernoulli"

    def __init__(self, data_dim: int, latent_dim: int, backend: str = "fused"):
        super().__init__(backend)
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        self.data_layer = nn.Linear(latent_dim, data_dim)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.data_layer(h)

    def log_likelihood(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        return bernoulli_log_prob(self.logits(latents[0]), x)

    def log_prob(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        h = latents[0]
        return self.log_likelihood(x, latents) + bernoulli_log_prob(self.prior_logits.expand_as(h), h)

    def log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        """One fused op: log p(x | h) + log p(h) - log q(h | x) from q's logits in the draw;
        for a q of another family, log p - log q apart (`exact_log_ratio`)."""
        if not self.fuses(q):
            return self.exact_log_ratio(x, draw, q)
        (h,), ((_, q_logits),) = draw.latents, draw.params
        return self.ops.sbn_log_weights(self.logits(h), x, h, self.prior_logits, q_logits)

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        probabilities = torch.sigmoid(self.prior_logits)
        return [torch.bernoulli(probabilities.expand(num_samples, -1))]


class BinaryLatentMethod(Method):
    """Base of the objectives on the one-layer SBN (q a `BernoulliEncoder`, p a
    `SigmoidBeliefDecoder`); by default the negative ELBO over k samples."""

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 5,
                 backend: str = "fused", latent_dim: int = 200):
        if layers != 1:
            raise ValueError(f"the sigmoid belief network has 1 latent layer, got layers={layers}")
        super().__init__(BernoulliEncoder(data_dim, latent_dim, backend),
                         SigmoidBeliefDecoder(data_dim, latent_dim, backend), num_samples, backend)
        self.layers = layers

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO, averaged over k samples."""
        return -self.log_weights(x, self.num_samples).mean(0)
