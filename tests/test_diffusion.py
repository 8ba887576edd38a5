"""Diffusion models against exact answers.

On a binary space small enough to enumerate every trajectory (D = 3, T = 4:
8^5 trajectories per x_0), the bound the model reports (the sum of exact step
KLs) must equal E_q[log q(x_{1:T} | x_0) - log p(x_{0:T})] computed trajectory by
trajectory, and averaged over a data distribution D it must equal
KL(q(x, tau) || p(x, tau)) - E_D[log D(x)], the seed's bound. The trajectory
log-weights, the Gaussian model and the schedules are checked too; trained on
known toy distributions, both models must reproduce them when sampled.
"""
import itertools
import math

import pytest
import torch

from genvar_bench import build_method
from genvar_bench.methods.diffusion import beta_schedule
from genvar_bench.profiles import Profile
from genvar_bench.train import train

BACKENDS = ["fused", "reference"]
DATA_DIM, NUM_STEPS = 3, 4
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=DATA_DIM)), dtype=torch.float64)


def tiny_binomial(backend, schedule="paper", scale=0.7):
    torch.manual_seed(0)
    model = build_method("diffusion", data_dim=DATA_DIM, num_samples=3, backend=backend,
                         diffusion_steps=NUM_STEPS, schedule=schedule).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, scale)
    return model


def transition_tables(model):
    """log q(x_t = j | x_{t-1} = i) [T, 8, 8] and log p(x_{t-1} = j | x_t = i) [T, 8, 8]."""
    count = STATES.shape[0]
    log_q, log_p = [], []
    for step in range(1, NUM_STEPS + 1):
        log_q.append(torch.stack([model.q.log_step(STATES, previous.expand(count, -1), step)
                                  for previous in STATES]))
        steps = torch.full((count, count), step)
        log_p.append(model.p.step_log_prob(STATES[None].expand(count, -1, -1),
                                            STATES[:, None].expand(-1, count, -1), steps))
    return torch.stack(log_q), torch.stack(log_p)


def exact_by_trajectories(model):
    """Per x_0 state: the bound E_q[log q - log p] and log p(x_0), summing over every
    trajectory; also the joint q(x_{0:T} | x_0) and p(x_{0:T}) [8]*(T+1) for the KL."""
    log_q, log_p = transition_tables(model)
    count = STATES.shape[0]
    # joint log-probabilities over (x_0, ..., x_T), built one step at a time
    joint_q = torch.zeros(count)
    joint_p = torch.zeros(count)
    for step in range(NUM_STEPS):
        joint_q = joint_q.unsqueeze(-1) + log_q[step].reshape((1,) * step + (count, count))
        joint_p = joint_p.unsqueeze(-1) + log_p[step].transpose(0, 1).reshape((1,) * step + (count, count))
    joint_p = joint_p + model.p.prior_log_prob(STATES).reshape((1,) * NUM_STEPS + (count,))
    weights = joint_q.exp()
    axes = tuple(range(1, NUM_STEPS + 1))
    bound = (weights * (joint_q - joint_p)).sum(axes)
    log_marginal = torch.logsumexp(joint_p, dim=axes)
    return bound, log_marginal, joint_q, joint_p


def analytic_bound_expectation(model):
    """L_T + sum_t E_{q(x_t | x_0)} KL_t, with the expectation over x_t enumerated."""
    count = STATES.shape[0]
    x0 = STATES
    total = model.q.prior_kl(x0)
    for step in range(1, NUM_STEPS + 1):
        alpha_bar = model.q.alpha_bar[step]
        one = x0 * alpha_bar + (1 - alpha_bar) / 2  # q(x_t = 1 | x_0) [8, D]
        marginal = (torch.xlogy(STATES[:, None], one[None]) + torch.xlogy(1 - STATES[:, None], 1 - one[None])).sum(-1).exp()
        states = STATES[:, None].expand(count, count, DATA_DIM)  # [x_t, x_0, D]
        kl = model.p.step_kl(x0, states, torch.full((count, count), step))  # [x_t, x_0]
        total = total + (marginal * kl).sum(0)
    return total


@pytest.mark.parametrize("schedule", ["paper", "linear"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_binomial_bound_equals_the_trajectory_enumeration(backend, schedule):
    model = tiny_binomial(backend, schedule)
    exact, log_marginal, _, _ = exact_by_trajectories(model)
    torch.testing.assert_close(analytic_bound_expectation(model), exact, rtol=1e-10, atol=1e-10)
    assert torch.all(exact >= -log_marginal - 1e-12)
    assert torch.logsumexp(log_marginal, 0).abs() < 1e-10  # p(x_0) sums to one


def test_mean_bound_is_the_seeds_kl_minus_data_entropy():
    model = tiny_binomial("reference")
    exact, _, joint_q, joint_p = exact_by_trajectories(model)
    data = torch.tensor([0.3, 0.0, 0.1, 0.05, 0.2, 0.15, 0.05, 0.15], dtype=torch.float64)
    shape = (-1,) + (1,) * NUM_STEPS
    log_joint_q = joint_q + data.log().reshape(shape)  # log D(x_0) q(x_{1:T} | x_0)
    q_joint = log_joint_q.exp()
    kl = (q_joint * (log_joint_q - joint_p)).nan_to_num().sum()
    entropy_term = (data * data.log()).nan_to_num().sum()  # E_D[log D(x)]
    torch.testing.assert_close(kl - entropy_term, (data * exact).sum(), rtol=1e-10, atol=1e-10)


def test_training_estimate_is_unbiased_and_the_full_sum_matches():
    model = tiny_binomial("reference")
    expected = analytic_bound_expectation(model)
    torch.manual_seed(3)
    x = STATES.repeat(2000, 1)
    estimates = model.bound(x).reshape(2000, -1)
    sums = torch.stack([sum(model.bound_terms(STATES).values()) for _ in range(500)])
    for draws in (estimates, sums):
        error = draws.std(0) / math.sqrt(draws.shape[0])
        assert torch.all((draws.mean(0) - expected).abs() < 5 * error + 1e-9), (draws.mean(0), expected)


def test_trajectory_log_weights_average_to_minus_the_bound():
    model = tiny_binomial("reference")
    exact, log_marginal, _, _ = exact_by_trajectories(model)
    torch.manual_seed(4)
    log_w = model.log_weights(STATES, 20000)  # [k, 8]
    error = log_w.std(0) / math.sqrt(log_w.shape[0])
    assert torch.all((-log_w.mean(0) - exact).abs() < 5 * error)


def test_trajectory_log_weights_are_the_joint_ratio_of_the_drawn_trajectory():
    model = tiny_binomial("reference")
    _, _, joint_q, joint_p = exact_by_trajectories(model)
    drawn = []
    sample_step = model.q.sample_step
    model.q.sample_step = lambda previous, step: drawn.append(sample_step(previous, step)) or drawn[-1]
    torch.manual_seed(5)
    log_w = model.log_weights(STATES, 50)  # [k, 8]
    codes = [STATES.expand(50, -1, -1)] + drawn  # x_0 .. x_T, each [k, 8, D]
    index = tuple((state * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)).sum(-1).long()
                  for state in codes)
    torch.testing.assert_close(log_w, joint_p[index] - joint_q[index], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_bound_matches_the_trajectory_average(backend):
    torch.manual_seed(0)
    model = build_method("diffusion-gauss", data_dim=2, num_samples=3, backend=backend,
                         diffusion_steps=5).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    x = torch.tensor([[0.5, -1.0], [1.2, 0.3]], dtype=torch.float64)
    torch.manual_seed(1)
    sums = torch.stack([sum(model.bound_terms(x).values()) for _ in range(4000)])
    log_w = model.log_weights(x, 40000)
    for draws in (sums, -log_w):
        assert torch.isfinite(draws).all()
    gap = (sums.mean(0) + log_w.mean(0)).abs()
    error = (sums.var(0) / sums.shape[0] + log_w.var(0) / log_w.shape[0]).sqrt()
    assert torch.all(gap < 5 * error), (gap, error)


def test_schedules():
    paper = beta_schedule("paper", 1000)
    assert paper[0] == 1e-3 and paper[-1] == 1.0
    torch.testing.assert_close(paper[1:], 1 / (1000 - torch.arange(2, 1001, dtype=torch.float64) + 1))
    linear = beta_schedule("linear", 100)
    assert linear[0] == 1e-3 and torch.all(linear.diff() > 0)
    assert abs(linear.sum().item() - 10) < 1e-9
    with pytest.raises(ValueError, match="schedule"):
        beta_schedule("cosine", 10)
    with pytest.raises(ValueError, match="steps"):
        beta_schedule("paper", 0)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="diffusion_steps"):
        build_method("diffusion", data_dim=4)
    with pytest.raises(ValueError, match="layers"):
        build_method("diffusion", data_dim=4, layers=2, diffusion_steps=3)
    with pytest.raises(ValueError, match="network"):
        build_method("diffusion-gauss", data_dim=4, diffusion_steps=3, network="rnn")
    with pytest.raises(ValueError, match="square"):
        build_method("diffusion", data_dim=5, diffusion_steps=3, network="conv")


def fit(model, data, epochs, batch=200):
    """Adam for `epochs` at 3e-3, then as many at 1e-3."""
    profile = Profile("toy", "toy", (model.num_samples,), ((epochs, 3e-3), (epochs, 1e-3)),
                      batch_size=batch)
    train(model, data, profile, seed=0, show_progress=False)
    model.eval()


def test_binomial_samples_reproduce_a_toy_distribution():
    torch.manual_seed(0)
    probabilities = torch.tensor([0.3, 0.0, 0.1, 0.05, 0.2, 0.15, 0.05, 0.15])
    data = STATES.float()[torch.multinomial(probabilities, 4000, replacement=True)]
    model = build_method("diffusion", data_dim=DATA_DIM, num_samples=10, diffusion_steps=10)
    fit(model, data, epochs=20)
    torch.manual_seed(1)
    samples = torch.bernoulli(model.sample(20000))
    codes = (samples * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    frequencies = torch.bincount(codes, minlength=8).float() / codes.numel()
    # total variation: 0.30 for uniform samples, about 0.01 from sampling noise alone
    assert (frequencies - probabilities).abs().sum() / 2 < 0.05, frequencies
    assert frequencies[1] < 0.03, frequencies  # a pattern the data never show (uniform: 0.125)


def test_gaussian_samples_reproduce_a_toy_distribution():
    torch.manual_seed(0)
    data = torch.cat([torch.randn(3000, 1) * 0.2 - 1, torch.randn(1000, 1) * 0.3 + 1]) \
        @ torch.ones(1, 2) * torch.tensor([1.0, -0.5])
    model = build_method("diffusion-gauss", data_dim=2, num_samples=10, diffusion_steps=20)
    fit(model, data, epochs=20)
    torch.manual_seed(1)
    samples = model.sample(20000)
    torch.testing.assert_close(samples.mean(0), data.mean(0), atol=0.08, rtol=0)
    torch.testing.assert_close(samples.std(0), data.std(0), atol=0.08, rtol=0)
    share_left = (samples[:, 0] < 0).float().mean()
    assert abs(share_left - 0.75) < 0.05, share_left
