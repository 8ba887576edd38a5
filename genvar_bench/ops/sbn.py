"""The sigmoid-belief-network op: `genvar::sbn_log_weights`.

Shapes use k (samples per example), B (batch), D (data dimension) and
H (binary latent units).
"""
import torch


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
