"""Every estimator against models of the suite shrunk until log p(x) is exact:
an SBN with 3 binary latents (sum over 8 states) and a DAE with a 1-D code
(quadrature over z). The importance-sampled NLL must reach the exact value as
k grows, and every bound must sit above it."""
import itertools
import math

import pytest
import torch

from genvar_bench import estimators
from genvar_bench import build_method
from genvar_bench.methods.dae import NoisyCode
from genvar_bench.methods.latent import mlp
from genvar_bench.methods.sbn import BinaryLatentMethod, bernoulli_log_prob
from helpers import prepare_scoring

DATA_DIM = 6
BACKENDS = ["fused", "reference"]


def random_binary(rows, seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, DATA_DIM, generator=generator, dtype=torch.float64) < 0.4).double()


def tiny_sbn(backend):
    torch.manual_seed(0)
    model = BinaryLatentMethod(DATA_DIM, num_samples=1, backend=backend, latent_dim=3).double()
    with torch.no_grad():
        for parameter in model.p.parameters():
            parameter.normal_(0, 1.5)
        # A q that gives every state a fair chance: the IS weights stay light-tailed.
        for parameter in model.q.parameters():
            parameter.normal_(0, 0.3)
    return model


def sbn_exact_log_marginal(model, x):
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    log_prior = bernoulli_log_prob(model.p.prior_logits.expand(8, -1), states)  # [8]
    logits = model.p.logits(states)  # [8, D]
    log_lik = bernoulli_log_prob(logits[:, None, :], x[None, :, :])  # [8, B]
    return torch.logsumexp(log_lik + log_prior[:, None], dim=0)


def tiny_dae(backend, train):
    """The suite's DAE with its encoder and decoder swapped for 1-D-code linear ones."""
    torch.manual_seed(0)
    model = build_method("dae", data_dim=DATA_DIM, num_samples=1, backend=backend, noise=1.0)
    model.q.layers[0] = NoisyCode(DATA_DIM, [], 1, 1.0)
    model.p.data_layer = mlp(1, [], DATA_DIM)
    model = model.double()
    with torch.no_grad():
        # Scales at which q(z | x), as wide as the code noise, still covers p(z | x):
        # IS weights with a light tail, so the estimate settles within 0.02 nats.
        for parameter in model.parameters():
            parameter.normal_(0, 1.0)
    prepare_scoring(model, train)
    return model


def dae_exact_log_marginal(model, x):
    grid = torch.linspace(-8, 8, 32001, dtype=torch.float64)
    centers = model.p.prior_centers[:, 0]
    log_prior = (torch.distributions.Normal(centers[None, :], model.noise).log_prob(grid[:, None])
                 .logsumexp(1) - math.log(centers.numel()))
    logits = model.p.logits(grid[:, None])  # [G, D]
    log_lik = bernoulli_log_prob(logits[:, None, :], x[None, :, :])  # [G, B]
    step = (grid[1] - grid[0]).item()
    return torch.logsumexp(log_lik + log_prior[:, None], dim=0) + math.log(step)


@pytest.fixture(params=itertools.product(["sbn", "dae"], BACKENDS), ids=lambda p: "-".join(p))
def exact_model(request):
    kind, backend = request.param
    with torch.no_grad():
        if kind == "sbn":
            model = tiny_sbn(backend)
            return model, lambda x: sbn_exact_log_marginal(model, x)
        model = tiny_dae(backend, random_binary(40, seed=9))
        return model, lambda x: dae_exact_log_marginal(model, x)


@torch.no_grad()
def test_importance_nll_reaches_the_exact_value(exact_model):
    model, exact_log_marginal = exact_model
    torch.manual_seed(1)
    x = random_binary(8, seed=2)
    exact = -exact_log_marginal(x)
    estimate = estimators.importance_nll(model, x, 100_000, max_elements=DATA_DIM * 2**14)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)


@torch.no_grad()
def test_bounds_sit_above_the_exact_value_and_tighten_with_k(exact_model):
    model, exact_log_marginal = exact_model
    torch.manual_seed(3)
    x = random_binary(4, seed=4).repeat(500, 1)
    exact = -exact_log_marginal(x[:4]).mean().item()
    means = [model.importance_bound(x, k).mean().item() for k in (1, 5, 50)]
    assert means[0] > means[1] > means[2] > exact - 0.01
    assert means[0] - exact > 0.05, "q differs from p(tau | x), so the ELBO must be loose"
    # The model's own bound is the one-sample bound: its mean sits above as well.
    assert estimators.mean_bound(model, x) > exact


@torch.no_grad()
def test_bound_terms_add_up_to_the_one_sample_bound(exact_model):
    model, _ = exact_model
    x = random_binary(4, seed=5).repeat(2000, 1)
    terms = estimators.mean_bound_terms(model, x)
    torch.manual_seed(6)
    one_sample = -model.log_weights(x, 1)[0].mean().item()
    assert set(terms) == {"reconstruction", "kl"}
    assert terms["reconstruction"] > 0
    assert terms["reconstruction"] + terms["kl"] == pytest.approx(one_sample, abs=0.1)
