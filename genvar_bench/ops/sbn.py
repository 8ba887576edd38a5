"""The sigmoid-belief-network op: `genvar::sbn_log_weights`.

Shapes use k (samples per example), B (batch), D (data dimension) and
H (binary latent units).
"""
import torch

from genvar_bench.ops.registry import Gradients, define_op


def _bernoulli_log_prob(logits, values):
    """sum over the last axis of values * l - softplus(l); softplus(l) = -log sigmoid(-l)
    is exact for every l and has gradient sigmoid(l) everywhere."""
    return (values * logits + torch.nn.functional.logsigmoid(-logits)).sum(-1)


def sbn_log_weights_ref(logits, x, h, prior_logits, q_logits):
    """log w[k, b] = log p(x_b | h_kb) + log p(h_kb) - log q(h_kb | x_b), binary h.

    p(x|h) is Bernoulli with logits `logits` [k, B, D] evaluated at x [B, D];
    p(h) is a factorised Bernoulli with logits `prior_logits` [H]; q(h|x) a
    factorised Bernoulli with logits `q_logits` [B, H]; h [k, B, H] holds 0/1
    samples (any real values are accepted: the formula is linear in h).
    Returns [k, B].
    """
    return (_bernoulli_log_prob(logits, x) + _bernoulli_log_prob(prior_logits, h)
            - _bernoulli_log_prob(q_logits, h))


def _check_log_weights_shapes(logits, x, h, prior_logits, q_logits):
    torch._check(logits.dim() == 3, lambda: f"logits must be [k, B, D], got {logits.shape}")
    torch._check(logits.shape[0] > 0, lambda: "logits must have k > 0 samples")
    num_samples, batch, data_dim = logits.shape
    torch._check(x.shape == (batch, data_dim), lambda: f"x must be [B, D], got {x.shape}")
    torch._check(h.dim() == 3 and h.shape[:2] == (num_samples, batch),
                 lambda: f"h must be [k, B, H], got {h.shape}")
    torch._check(prior_logits.shape == h.shape[2:],
                 lambda: f"prior_logits must be [H], got {prior_logits.shape}")
    torch._check(q_logits.shape == (batch, h.shape[2]),
                 lambda: f"q_logits must be [B, H], got {q_logits.shape}")


def _log_weights_fake(logits, x, h, prior_logits, q_logits):
    _check_log_weights_shapes(logits, x, h, prior_logits, q_logits)
    return logits.new_empty(logits.shape[:2])


# The training path (registry.py), as for iwae_log_weights and for the same reasons.
fused_sbn_log_weights = define_op(
    "sbn_log_weights", sbn_log_weights_ref, _log_weights_fake,
    Gradients(differentiable=("logits", "h", "prior_logits", "q_logits"),
              no_gradient={"x": "sbn_log_weights has no gradient with respect to x (the data)"},
              buffers_for=("logits",), scale_args=("h", "prior_logits", "q_logits")))
