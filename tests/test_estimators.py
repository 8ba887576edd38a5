"""Estimators against models whose log p(x) is known exactly."""
import math

import pytest
import torch

from genvar_bench import estimators
from genvar_bench.core import Draw, GenerativeModel, InferenceModel, Method
from genvar_bench.methods.latent import GaussianEncoder


class FixedGaussian(InferenceModel):
    """q(z | x) = N(m, s^2) for every x: one unit, no parameters."""

    q_grads = ("reparameterize",)

    def __init__(self, mean, logvar):
        super().__init__()
        self.mean, self.logvar = mean, logvar

    def sample(self, x, num_samples, q_grad=None):
        batch = x.shape[0]
        mu = torch.full((batch, 1), self.mean, dtype=x.dtype)
        logvar = torch.full((batch, 1), self.logvar, dtype=x.dtype)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(num_samples, batch, 1, dtype=x.dtype)
        return Draw([z], [(mu, logvar)])


class LinearBernoulli(GenerativeModel):
    """z ~ N(0, 1), x_d ~ Bernoulli(sigmoid(a_d z + b_d)); log p - log q by the fused op."""

    def __init__(self, slopes, offsets):
        super().__init__()
        self.slopes, self.offsets = slopes, offsets

    def log_ratio(self, x, draw, q):
        (z,), ((mu, logvar),) = draw.latents, draw.params
        return self.ops.iwae_log_weights(z * self.slopes + self.offsets, x, z, mu, logvar)


class LinearGaussianModel(Method):
    """q and p above: tiny enough that p(x) is a one-dimensional integral done by
    quadrature. Its log weights are the core's, log p - log q at q's draws."""

    def __init__(self, slopes, offsets, q_mean, q_logvar, backend):
        super().__init__(FixedGaussian(q_mean, q_logvar), LinearBernoulli(slopes, offsets), 1, backend)
        self.slopes, self.offsets = slopes, offsets

    def bound(self, x):
        return -self.log_weights(x, 1)[0]


def exact_log_marginal(model, x):
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    logits = grid[:, None, None] * model.slopes + model.offsets  # [G, 1, D]
    log_lik = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # [G, B]
    log_prior = -0.5 * grid**2 - 0.5 * math.log(2 * math.pi)
    step = (grid[1] - grid[0]).item()
    return torch.logsumexp(log_lik + log_prior[:, None], dim=0) + math.log(step)


@pytest.fixture(params=["fused", "reference"])
def toy_model(request):
    generator = torch.Generator().manual_seed(3)
    slopes = torch.randn(6, generator=generator, dtype=torch.float64) * 2
    offsets = torch.randn(6, generator=generator, dtype=torch.float64)
    return LinearGaussianModel(slopes, offsets, 0.3, math.log(0.8), request.param)


def test_importance_nll_approaches_exact_value(toy_model):
    torch.manual_seed(0)
    x = (torch.rand(8, 6, dtype=torch.float64) < 0.5).double()
    exact = -exact_log_marginal(toy_model, x)
    estimate = estimators.importance_nll(toy_model, x, 20000, max_elements=6 * 4096)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)


def test_bounds_sit_above_exact_value_and_tighten_with_k(toy_model):
    torch.manual_seed(1)
    x = (torch.rand(4, 6, dtype=torch.float64) < 0.5).double().repeat(500, 1)
    exact = -exact_log_marginal(toy_model, x[:4]).mean().item()
    means = [toy_model.importance_bound(x, k).mean().item() for k in (1, 5, 50)]
    assert means[0] > means[1] > means[2] > exact - 0.01
    assert means[0] - exact > 0.05, "q differs from p(z|x), so the ELBO must be loose"


class CountingModel:
    """log w of sample i (in draw order) for example b is a fixed function of (i, b)."""

    def __init__(self):
        self.drawn = 0

    def log_weights(self, x, num_samples):
        index = torch.arange(self.drawn, self.drawn + num_samples, dtype=torch.float64)
        self.drawn += num_samples
        column = torch.arange(x.shape[0], dtype=torch.float64)
        return torch.sin(index[:, None] * 0.37 + column[None, :]) * 30


@pytest.mark.parametrize("max_elements", [3, 7, 64, 10**6])
def test_importance_nll_chunking_is_exact(max_elements):
    x = torch.zeros(1, 1, dtype=torch.float64)
    expected = math.log(40) - torch.logsumexp(CountingModel().log_weights(x, 40)[:, 0], 0)
    estimate = estimators.importance_nll(CountingModel(), x, 40, max_elements=max_elements)
    torch.testing.assert_close(estimate[0], expected)


def test_importance_nll_rejects_zero_samples(toy_model):
    with pytest.raises(ValueError, match="num_samples"):
        estimators.importance_nll(toy_model, torch.zeros(2, 6, dtype=torch.float64), 0)


def test_active_units_counts_units_whose_mean_varies():
    class Holder:
        q = GaussianEncoder.of_sizes(data_dim=4, latent_dims=[5], hidden=[[]])

    linear = Holder.q.layers[0].net[0]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0, 0] = 1.0   # unit 0 follows x_0: variance 0.25 > 0.01
        linear.weight[1, 1] = 0.05  # unit 1 varies too little: 0.000625
    x = (torch.rand(2000, 4) < 0.5).float()
    assert estimators.active_units(Holder(), x) == [1]
