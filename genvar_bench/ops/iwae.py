"""The IWAE ops: `genvar::iwae_log_weights` and `genvar::iwae_bound`.

Shapes use k (samples per example), B (batch), D (data dimension) and
Z (latent dimension).
"""
import math

import torch

from genvar_bench.ops.registry import Gradients, define_op


def iwae_log_weights_ref(logits, x, z, mu, logvar):
    """log w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b).

    p(x|z) is Bernoulli with logits `logits` [k, B, D] evaluated at x [B, D];
    p(z) = N(0, I); q(z|x) = N(mu, diag(exp(logvar))) with mu, logvar [B, Z];
    z [k, B, Z]. Returns [k, B]. The log(2 pi) terms of the two Gaussians cancel.
    """
    # softplus(l) = -log sigmoid(-l): exact for every l (F.softplus cuts off at 20),
    # and its gradient is sigmoid(l) everywhere, l = 0 included.
    softplus = -torch.nn.functional.logsigmoid(-logits)
    bernoulli = (x * logits - softplus).sum(-1)
    gaussian = 0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar - z**2).sum(-1)
    return bernoulli + gaussian


def iwae_bound_ref(log_weights):
    """bound[b] = logsumexp_k log_weights[k, b] - log k; weights = softmax over k.

    log_weights [k, B] -> (bound [B], weights [k, B]). A column that is all
    -inf has bound -inf and weights 0: no sample is possible under the model.
    A NaN anywhere in a column gives NaN bound and weights in that column only.
    """
    num_samples = log_weights.shape[0]
    column_max = log_weights.detach().amax(0)
    shift = torch.where(torch.isfinite(column_max), column_max, torch.zeros_like(column_max))
    shifted = torch.exp(log_weights - shift)
    total = shifted.sum(0)
    bound = torch.log(total) + shift - math.log(num_samples)
    weights = torch.where(total == 0, torch.zeros_like(shifted), shifted / total)
    return bound, weights


def _check_log_weights_shapes(logits, x, z, mu, logvar):
    torch._check(logits.dim() == 3, lambda: f"logits must be [k, B, D], got {logits.shape}")
    torch._check(logits.shape[0] > 0, lambda: "logits must have k > 0 samples")
    num_samples, batch, data_dim = logits.shape
    torch._check(x.shape == (batch, data_dim), lambda: f"x must be [B, D], got {x.shape}")
    torch._check(z.dim() == 3 and z.shape[:2] == (num_samples, batch),
                 lambda: f"z must be [k, B, Z], got {z.shape}")
    torch._check(mu.shape == (batch, z.shape[2]), lambda: f"mu must be [B, Z], got {mu.shape}")
    torch._check(logvar.shape == mu.shape, lambda: f"logvar must be [B, Z], got {logvar.shape}")


def _log_weights_fake(logits, x, z, mu, logvar):
    _check_log_weights_shapes(logits, x, z, mu, logvar)
    return logits.new_empty(logits.shape[:2])


def _bound_fake(log_weights):
    torch._check(log_weights.dim() == 2 and log_weights.shape[0] > 0,
                 lambda: f"log_weights must be [k, B] with k > 0, got {log_weights.shape}")
    return log_weights.new_empty(log_weights.shape[1:]), torch.empty_like(log_weights)


def _bound_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _bound_backward(ctx, grad_bound, grad_weights):
    (weights,) = ctx.saved_tensors
    return torch.ops.genvar.iwae_bound_backward(grad_bound, grad_weights, weights)


# The training path (registry.py): the forward writes d log_w / d logits, the backward
# scales it into the logits gradient and computes those of z, mu and logvar.
fused_iwae_log_weights = define_op(
    "iwae_log_weights", iwae_log_weights_ref, _log_weights_fake,
    Gradients(differentiable=("logits", "z", "mu", "logvar"),
              no_gradient={"x": "iwae_log_weights has no gradient with respect to x (the data)"},
              buffers_for=("logits",), scale_args=("z", "mu", "logvar")))
fused_iwae_bound = define_op(
    "iwae_bound", iwae_bound_ref, _bound_fake, autograd=(_bound_backward, _bound_setup),
    backward_fake=lambda grad_bound, grad_weights, weights: torch.empty_like(weights))
