"""The denoising autoencoder as a generative model: the data-convolved prior,
its importance weights, and training by reconstruction alone."""
import math

import pytest
import torch

from genvar_bench import build_method
from helpers import prepare_scoring

DATA_DIM = 16


def make_dae(backend="fused", noise=0.3, num_samples=1):
    torch.manual_seed(0)
    return build_method("dae", data_dim=DATA_DIM, num_samples=num_samples, backend=backend,
                        noise=noise).double()


def binary(rows, seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, DATA_DIM, generator=generator, dtype=torch.float64) < 0.3).double()


def test_prior_is_the_encoder_convolved_with_the_training_data():
    model = make_dae()
    train = binary(30, seed=1)
    prepare_scoring(model, train)
    codes = model.q.posterior_means(train).detach()
    assert codes.abs().max() <= 1, "codes pass through tanh"
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(30, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(codes, 0.3), 1))
    z = torch.randn(11, codes.shape[1], dtype=torch.float64) * 0.5
    torch.testing.assert_close(model.p.log_prior([z]), mixture.log_prob(z))


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_log_weights_use_the_mixture_prior(backend):
    model = make_dae(backend)
    prepare_scoring(model, binary(30, seed=1))
    x = binary(4, seed=2)
    torch.manual_seed(3)
    log_w = model.log_weights(x, 6)
    torch.manual_seed(3)
    draw = model.q.sample(x, 6)
    (z,), ((mu, _),) = draw.latents, draw.params
    logits = model.p.logits(z)
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none").sum(-1)
    log_q = torch.distributions.Normal(mu, 0.3).log_prob(z).sum(-1)
    expected = log_lik + model.p.log_prior([z]) - log_q
    torch.testing.assert_close(log_w, expected)
    # p's fused log ratio equals its two densities apart, log p(x, z) - log q(z | x)
    torch.testing.assert_close(log_w, model.p.log_prob(x, [z]) - model.q.log_prob(x, [z]))


def test_training_loss_is_the_reconstruction_error_alone():
    model = make_dae(num_samples=3)
    x = binary(5, seed=4)
    torch.manual_seed(5)
    loss = model.loss(x)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    torch.manual_seed(5)
    z = model.q.sample(x, 3).latents[0]
    logits = model.p.logits(z)
    reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none").sum(-1).mean()
    torch.testing.assert_close(loss, reconstruction)
    expected = torch.autograd.grad(reconstruction, list(model.parameters()), allow_unused=True)
    for got, want in zip(grads, expected):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want)
    # The prior is no parameter: training cannot move it.
    assert all("prior" not in name for name, _ in model.named_parameters())


def test_noise_sets_the_spread_of_q():
    model = make_dae(noise=0.25)
    x = binary(3, seed=6)
    draw = model.q.sample(x, 20000)
    (z,), ((mu, logvar),) = draw.latents, draw.params
    torch.testing.assert_close(logvar, torch.full_like(logvar, 2 * math.log(0.25)))
    assert (z - mu).std().item() == pytest.approx(0.25, rel=0.02)


def test_scoring_and_sampling_need_the_prior_first():
    model = make_dae()
    with pytest.raises(RuntimeError, match=r"Scorer\(\).prepare"):
        model.bound(binary(2, seed=7))
    with pytest.raises(RuntimeError, match=r"Scorer\(\).prepare"):
        model.sample(3)
    prepare_scoring(model, binary(10, seed=8))
    samples = model.sample(5)
    assert samples.shape == (5, DATA_DIM) and 0 <= samples.min() and samples.max() <= 1


def test_prior_codes_are_saved_with_the_model():
    model = make_dae()
    prepare_scoring(model, binary(12, seed=9))
    restored = make_dae()
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.p.prior_centers, model.p.prior_centers)


def test_models_saved_with_the_prior_on_the_method_still_load():
    """Kept models from before the prior moved into p hold it as `prior_centers`."""
    model = make_dae()
    prepare_scoring(model, binary(12, seed=9))
    state = model.state_dict()
    state["prior_centers"] = state.pop("p.prior_centers")
    restored = make_dae()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.p.prior_centers, model.p.prior_centers)


@pytest.mark.parametrize("config, message", [
    (dict(noise=0.0), "noise must be a positive number"),
    (dict(noise=float("nan")), "noise must be a positive number"),
    (dict(layers=2), "1 latent layer"),
])
def test_bad_dae_configuration_is_rejected(config, message):
    with pytest.raises(ValueError, match=message):
        build_method("dae", data_dim=4, **config)
