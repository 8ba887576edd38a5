"""Reweighted wake-sleep: its gradient estimates against their definitions,
computed by enumerating every sample tuple of a tiny discrete model."""
import itertools

import pytest
import torch

from genvar_bench import build_method
from genvar_bench.methods.latent import gaussian_log_density
from genvar_bench.methods.rws import BinaryRWS
from genvar_bench.methods.sbn import bernoulli_log_prob

DATA_DIM, LATENT_DIM, NUM_SAMPLES = 3, 2, 2
BATCH = 40_000  # one x repeated: the batch-mean gradient averages this many draws


def binary_states(width):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=width)), dtype=torch.float64)


def tiny_rws(q_update, backend="reference"):
    torch.manual_seed(0)
    model = BinaryRWS(DATA_DIM, num_samples=NUM_SAMPLES, backend=backend, q_update=q_update,
                      latent_dim=LATENT_DIM).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 1.0)
    return model


def flat_grad(model, value):
    grads = torch.autograd.grad(value, list(model.parameters()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, model.parameters())])


def log_joint_and_q(model, x, h):
    log_p = (bernoulli_log_prob(model.p.prior_logits.expand_as(h), h)
             + bernoulli_log_prob(model.p.logits(h), x))
    return log_p, model.q.log_prob(x, [h])


def enumerated_moments(model, x, q_update):
    """First and second moments of one example's gradient estimate, by enumeration:
    the wake part over all k-tuples of h ~ q(h | x), the sleep part over (x', h) ~ p."""
    states = binary_states(LATENT_DIM)
    mean, second = 0, 0
    for tuple_ in itertools.product(range(len(states)), repeat=NUM_SAMPLES):
        h = states[list(tuple_)]  # [k, H]
        log_p, log_q = log_joint_and_q(model, x.expand(NUM_SAMPLES, -1), h)
        probability = log_q.detach().sum().exp()
        weights = torch.softmax((log_p - log_q).detach(), 0)
        surrogate = -(weights * log_p).sum()
        if q_update in ("wake", "mix"):
            surrogate = surrogate - (weights * log_q).sum()
        grad = flat_grad(model, surrogate)
        mean, second = mean + probability * grad, second + probability * grad**2
    variance = second - mean**2
    if q_update in ("sleep", "mix"):
        sleep_mean, sleep_second = 0, 0
        for h in states:
            for dream in binary_states(DATA_DIM):
                log_p, log_q = log_joint_and_q(model, dream[None], h[None])
                grad = flat_grad(model, -log_q.sum())
                probability = log_p.detach().exp().sum()
                sleep_mean = sleep_mean + probability * grad
                sleep_second = sleep_second + probability * grad**2
        mean, variance = mean + sleep_mean, variance + sleep_second - sleep_mean**2
    return mean, variance


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("q_update", ["wake", "sleep", "mix"])
def test_gradient_estimate_agrees_in_expectation_with_enumeration(q_update, backend):
    model = tiny_rws(q_update, backend)
    x = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    expected, variance = enumerated_moments(model, x, q_update)
    torch.manual_seed(1)
    estimate = flat_grad(model, model.loss(x.expand(BATCH, -1)))
    standard_error = (variance.clamp_min(0) / BATCH).sqrt()
    assert (standard_error > 0).any()
    z_scores = (estimate - expected).abs() / (standard_error + 1e-12)
    assert z_scores.max() < 5, (estimate, expected, standard_error)
    # Power: q's expected gradient (q's parameters come first) stands far above the
    # noise, so a wrong sign or a missing phase would fail the check above.
    q_size = sum(p.numel() for p in model.q.parameters())
    assert expected[:q_size].abs().max() > 10 * standard_error[:q_size].max()


def test_wake_q_gradient_has_the_sign_that_fits_q_to_the_weighted_samples():
    """One ascent step along -grad(loss) must raise sum_i w_i log q(h_i | x) on the
    same samples: the wake rule moves q toward the resampled q_p^k."""
    model = tiny_rws("wake")
    x = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64).expand(256, -1)
    torch.manual_seed(2)
    h = model.q.sample(x, NUM_SAMPLES).latents[0]
    log_p, log_q = log_joint_and_q(model, x.expand(NUM_SAMPLES, -1, -1), h)
    weights = torch.softmax((log_p - log_q).detach(), 0)
    objective = (weights * log_q).sum(0).mean()
    torch.manual_seed(2)
    model.zero_grad()
    model.loss(x).backward()
    with torch.no_grad():
        for parameter in model.q.parameters():
            parameter -= 1e-3 * parameter.grad
        after = (weights * model.q.log_prob(x.expand(NUM_SAMPLES, -1, -1), [h])).sum(0).mean()
    assert after > objective


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("q_update", ["wake", "sleep"])
def test_gaussian_rws_gradient_is_the_weighted_score_on_the_same_samples(layers, q_update):
    torch.manual_seed(0)
    model = build_method("rws", data_dim=8, layers=layers, num_samples=4, backend="fused",
                         q_update=q_update).double()
    x = (torch.rand(5, 8, dtype=torch.float64) < 0.4).double()
    torch.manual_seed(3)
    loss = model.loss(x)
    got = flat_grad(model, loss) if q_update == "wake" else None
    # The definition, on the same draws: samples z constant, w~ constant.
    torch.manual_seed(3)
    latents = model.q.sample(x, 4, q_grad="none").latents
    log_q = sum(gaussian_log_density(z, mu, logvar) for z, mu, logvar in
                [(z, *model.q.layers[i](x if i == 0 else latents[i - 1]))
                 for i, z in enumerate(latents)])
    log_p = bernoulli_log_prob(model.p.logits(latents[0]), x)
    top = latents[-1]
    log_p = log_p + gaussian_log_density(top, torch.zeros_like(top), torch.zeros_like(top))
    for layer, lower, upper in zip(model.p.latent_layers, latents[-2::-1], latents[:0:-1]):
        log_p = log_p + gaussian_log_density(lower, *layer(upper))
    # q's and p's own densities are these
    torch.testing.assert_close(model.q.log_prob(x, latents), log_q)
    torch.testing.assert_close(model.p.log_prob(x, latents), log_p)
    weights = torch.softmax((log_p - log_q).detach(), 0)
    bound = -(torch.logsumexp((log_p - log_q).detach(), 0) - torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(loss, bound.mean())
    if q_update == "wake":
        expected = flat_grad(model, -(weights * (log_p + log_q)).sum(0).mean())
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("config, message", [
    (dict(latent="spin"), "latent must be one of"),
    (dict(q_update="dream"), "q_update must be one of"),
    (dict(latent="binary", layers=2), "1 latent layer"),
])
def test_bad_rws_configuration_is_rejected(config, message):
    with pytest.raises(ValueError, match=message):
        build_method("rws", data_dim=4, **config)
