"""RBMs: exact and AIS partition functions, the seed's identity for the unrolled
Gibbs chain (checked by enumerating every chain of a tiny RBM), the CD and PCD
updates, and scoring."""
import itertools
import math

import pytest
import torch

from genvar_bench import estimators
from genvar_bench.methods import rbm_partition
from genvar_bench import build_method
from genvar_bench.data import load_dataset
from genvar_bench.methods.rbm import RBMMethod
from genvar_bench.ops import BACKENDS
from genvar_bench.profiles import get_profile
from genvar_bench.train import train
from helpers import prepare_scoring, test_nll


def random_rbm(visible, hidden, scale=1.0, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    weight = scale * torch.randn(visible, hidden, generator=generator, dtype=dtype)
    visible_bias = torch.randn(visible, generator=generator, dtype=dtype)
    hidden_bias = torch.randn(hidden, generator=generator, dtype=dtype)
    return weight, visible_bias, hidden_bias


def all_states(units):
    return rbm_partition.binary_states(units, 0, 2**units)


def brute_force_log_z(weight, visible_bias, hidden_bias):
    """log sum over every (v, h) of exp(v'Wh + b'v + c'h)."""
    v, h = all_states(weight.shape[0]), all_states(weight.shape[1])
    negative_energy = (v @ weight @ h.T + (v @ visible_bias)[:, None] + (h @ hidden_bias)[None, :])
    return torch.logsumexp(negative_energy.flatten(), 0).item()


def make_rbm(name="rbm-cd", data_dim=64, hidden=20, num_samples=1, backend="reference", seed=0):
    torch.manual_seed(seed)
    return build_method(name, data_dim=data_dim, num_samples=num_samples, backend=backend,
                        hidden=hidden)


# --- partition functions -----------------------------------------------------------

@pytest.mark.parametrize("visible, hidden", [(5, 3), (3, 6), (4, 4)])
def test_exact_log_z_matches_the_sum_over_every_joint_state(visible, hidden):
    params = random_rbm(visible, hidden)
    expected = brute_force_log_z(*params)
    assert rbm_partition.exact_log_z(*params) == pytest.approx(expected, abs=1e-10)
    # Chunking changes nothing.
    assert rbm_partition.exact_log_z(*params, chunk_states=3) == pytest.approx(expected, abs=1e-10)


def test_exact_log_z_refuses_layers_it_cannot_enumerate():
    with pytest.raises(ValueError, match="at most 25 units"):
        rbm_partition.exact_log_z(*random_rbm(30, 26))
    with pytest.raises(ValueError, match="chunk_states"):
        rbm_partition.exact_log_z(*random_rbm(3, 2), chunk_states=0)


def test_exact_log_z_enumerates_the_smaller_layer_of_a_wide_rbm():
    # 784 visible units: only the 12 hidden units can be enumerated.
    params = random_rbm(784, 12, scale=0.05)
    weight, visible_bias, hidden_bias = params
    h = all_states(12)
    expected = torch.logsumexp(rbm_partition.rbm_hidden_log_marginal(h, *params), 0).item()
    assert rbm_partition.exact_log_z(*params, chunk_states=1000) == pytest.approx(expected, abs=1e-9)


def test_ais_schedule_follows_the_paper():
    betas = rbm_partition.ais_betas()
    assert betas.numel() == 14501 and betas[0] == 0 and betas[-1] == 1
    steps = betas[1:] - betas[:-1]
    assert bool((steps > 0).all())
    # 500 steps on [0, 0.5], 4000 on [0.5, 0.9], 10000 on [0.9, 1]: finer towards 1.
    assert int((betas < 0.5).sum()) == 500 and int((betas < 0.9).sum()) == 4500
    assert steps[:500].mean() > steps[500:4500].mean() > steps[4500:].mean()
    assert rbm_partition.ais_betas(1000).numel() == 1001


def test_ais_is_exact_when_the_weights_vanish():
    # W = 0 and b = b_A: every importance weight is the same, and the estimate is exact.
    _, visible_bias, hidden_bias = random_rbm(7, 5)
    weight = torch.zeros(7, 5, dtype=torch.float64)
    result = rbm_partition.ais_log_z(weight, visible_bias, hidden_bias, visible_bias,
                                  num_runs=4, num_temperatures=50, backend="reference")
    exact = rbm_partition.exact_log_z(weight, visible_bias, hidden_bias)
    assert result.log_z == pytest.approx(exact, abs=1e-9)
    assert result.log_z_low == pytest.approx(exact, abs=1e-6)
    assert result.log_z_high == pytest.approx(exact, abs=1e-6)


@pytest.fixture(scope="module")
def digits_rbm_20():
    """An RBM with 20 hidden units trained by CD-1 on digits for 30 epochs, so that its
    partition function is not trivial; and the base-rate biases of the data."""
    data = load_dataset("digits")
    model = make_rbm(hidden=20, backend="fused")
    train(model, data.train, get_profile("quick").scaled(30), seed=0, show_progress=False)
    return model, data, rbm_partition.base_rate_visible_bias(data.train)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ais_matches_the_exact_log_z_of_a_20_hidden_unit_rbm(digits_rbm_20, backend):
    model, data, base = digits_rbm_20
    params = model.rbm.parameters_tuple
    exact = rbm_partition.exact_log_z(*params)
    # The paper's schedule; fewer temperatures for the slow pure-PyTorch op.
    temperatures = 14500 if backend == "fused" else 3000
    result = rbm_partition.ais_log_z(*params, base.float(), num_runs=100,
                                  num_temperatures=temperatures, seed=3, backend=backend)
    assert abs(result.log_z - exact) < 0.1, (result.log_z, exact)
    assert result.log_z_low <= result.log_z <= result.log_z_high
    assert result.num_runs == 100 and result.num_temperatures == temperatures
    # And on the scale of a test NLL: log Z is far from the base model's.
    assert abs(result.log_z_base - exact) > 1.0


def test_ais_reproduces_with_the_same_seed_and_varies_with_another(digits_rbm_20):
    model, _, base = digits_rbm_20
    params = model.rbm.parameters_tuple
    runs = [rbm_partition.ais_log_z(*params, base.float(), num_runs=10, num_temperatures=300,
                                 seed=seed, backend="fused") for seed in (1, 1, 2)]
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)
    assert not torch.equal(runs[0].log_weights, runs[2].log_weights)


def test_ais_rejects_bad_arguments():
    params = random_rbm(4, 3)
    base = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_runs"):
        rbm_partition.ais_log_z(*params, base, num_runs=1, backend="reference")
    with pytest.raises(ValueError, match="betas"):
        rbm_partition.ais_log_z(*params, base, betas=torch.tensor([0.0, 0.7, 0.5, 1.0]),
                             backend="reference")
    with pytest.raises(ValueError, match="betas"):
        rbm_partition.ais_log_z(*params, base, betas=torch.tensor([0.1, 1.0]), backend="reference")
    with pytest.raises(ValueError, match="base_visible_bias"):
        rbm_partition.ais_log_z(*params, torch.zeros(5, dtype=torch.float64), backend="reference")
    with pytest.raises(ValueError, match="num_temperatures"):
        rbm_partition.ais_betas(2)


# --- the seed's identity on the unrolled chain ---------------------------------------

def bernoulli_log_prob(logits, values):
    return (values * logits - torch.nn.functional.softplus(logits)).sum(-1)


@pytest.mark.parametrize("sweeps", [0, 1, 2])
def test_the_unrolled_chain_log_ratio_is_z_of_z_k_minus_z_of_x_0(sweeps):
    """Every chain x_0, z_0, x_1, ..., x_k, z_k of a 3 x 2 RBM, enumerated. q runs the
    Gibbs conditionals forward, p runs them backward from p(z_k) with the same weights:
    log q(z_0..z_k | x_0) - log p(x_0, z_0, .. x_k | z_k) is Z_{z_k} - Z_{x_0} for every
    chain (the seed), and with p(z_k) the RBM's marginal the log ratio is -log p(x_0),
    the chain's KL the RBM's own."""
    params = random_rbm(3, 2, scale=1.5, seed=4)
    weight, visible_bias, hidden_bias = params
    log_z = rbm_partition.exact_log_z(*params)
    xs, zs = all_states(3), all_states(2)

    def log_q_z(z, x):  # q(z | x)
        return bernoulli_log_prob(x @ weight + hidden_bias, z)

    def log_p_x(x, z):  # p(x | z)
        return bernoulli_log_prob(z @ weight.T + visible_bias, x)

    for x0 in xs[[0, 5]]:
        total_q = 0.0
        # A chain: z_0, (x_1, z_1), ..., (x_k, z_k).
        for path in itertools.product(range(4), *[list(itertools.product(range(8), range(4)))] * sweeps):
            z = [zs[path[0]]] + [zs[zi] for _, zi in path[1:]]
            x = [x0] + [xs[xi] for xi, _ in path[1:]]
            log_q = sum(log_q_z(z[i], x[i]) for i in range(sweeps + 1)) + sum(
                log_p_x(x[i], z[i - 1]) for i in range(1, sweeps + 1))
            # p: z_k, then x_k | z_k, z_{k-1} | x_k, x_{k-1} | z_{k-1}, ..., x_0 | z_0.
            log_p_given_z_k = sum(log_p_x(x[i], z[i]) for i in range(sweeps + 1)) + sum(
                log_q_z(z[i - 1], x[i]) for i in range(1, sweeps + 1))
            z_k_term = rbm_partition.rbm_hidden_log_marginal(z[-1][None], *params)[0]
            x_0_term = rbm_partition.rbm_visible_log_marginal(x0[None], *params)[0]
            torch.testing.assert_close(log_q - log_p_given_z_k, z_k_term - x_0_term,
                                       rtol=0, atol=1e-12)
            log_p_z_k = z_k_term - log_z  # the RBM's marginal of z
            torch.testing.assert_close(log_q - log_p_given_z_k - log_p_z_k,
                                       -(x_0_term - log_z), rtol=0, atol=1e-12)
            total_q += log_q.exp().item()
        assert total_q == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sweeps", [1, 2])
def test_the_cd_objective_column_is_the_chains_mean_log_ratio(sweeps):
    """The method's cd_objective (one sampled chain per example) averages to the
    enumerated expectation E_q[Z_{z_k} - Z_{x_0}]."""
    model = make_rbm(data_dim=3, hidden=2, num_samples=sweeps).double()
    params = random_rbm(3, 2, scale=1.5, seed=4)
    with torch.no_grad():
        for parameter, value in zip(model.rbm.parameters_tuple, params):
            parameter.copy_(value)
    weight, visible_bias, hidden_bias = params
    x0 = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    # Enumerate: distribution of x_k given x_0 by the transition matrix, then z_k.
    xs, zs = all_states(3), all_states(2)
    q_z = torch.exp(bernoulli_log_prob((xs @ weight + hidden_bias)[:, None, :], zs[None]))  # [x, z]
    p_x = torch.exp(bernoulli_log_prob((zs @ weight.T + visible_bias)[:, None, :], xs[None]))  # [z, x]
    transition = q_z @ p_x  # x -> x'
    start = torch.zeros(8, dtype=torch.float64)
    start[5] = 1.0  # x0 = (1, 0, 1): bit i = unit i
    marginal_z_k = start @ torch.linalg.matrix_power(transition, sweeps) @ q_z
    z_terms = rbm_partition.rbm_hidden_log_marginal(zs, *params)
    x_term = rbm_partition.rbm_visible_log_marginal(x0[None], *params)[0]
    expected = (marginal_z_k @ z_terms - x_term).item()
    samples = model.cd_objective(x0.expand(40000, 3).contiguous())
    standard_error = samples.std().item() / math.sqrt(samples.numel())
    assert abs(samples.mean().item() - expected) < 5 * standard_error, (
        samples.mean().item(), expected, standard_error)


# --- the method ---------------------------------------------------------------------

def test_cd_loss_gradient_is_the_cd_update():
    """d/dtheta [F(x_0) - F(x_k)] with x_k fixed: <x p(h|x)'>_k - <x p(h|x)'>_0 for W."""
    model = make_rbm(data_dim=10, hidden=6, num_samples=3).double()
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 10, generator=generator, dtype=torch.float64) < 0.4).double()
    offset = model.chain_offset
    loss = model.loss(x)
    loss.backward()
    # The same negatives, drawn again from the same stream position.
    model.chain_offset = offset
    negative = model.negative_samples(x)
    weight, visible_bias, hidden_bias = model.rbm.parameters_tuple

    def stats(v):
        p_h = torch.sigmoid(v @ weight + hidden_bias).detach()
        return v.T @ p_h / v.shape[0], v.mean(0), p_h.mean(0)

    data_w, data_b, data_c = stats(x)
    model_w, model_b, model_c = stats(negative)
    torch.testing.assert_close(weight.grad, model_w - data_w)
    torch.testing.assert_close(visible_bias.grad, model_b - data_b)
    torch.testing.assert_close(hidden_bias.grad, model_c - data_c)


def test_pcd_chains_persist_across_updates_and_cd_chains_restart():
    x = (torch.rand(12, 10, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    pcd = make_rbm("rbm-pcd", data_dim=10, hidden=4)
    first = pcd.negative_samples(x).clone()
    assert pcd.persistent_chains.shape == (12, 10)
    offset = pcd.chain_offset
    second = pcd.negative_samples(x[:5])  # a smaller last batch keeps all the chains
    assert second.shape == (12, 10) and pcd.chain_offset == offset + 2
    # PCD continued from `first`: the same as one sweep from it on the same stream.
    replay = make_rbm("rbm-pcd", data_dim=10, hidden=4)
    replay.load_state_dict(pcd.state_dict())
    replay.chain_offset = offset
    expected, _ = replay.gibbs(first, 1)
    torch.testing.assert_close(second, expected)
    cd = make_rbm("rbm-cd", data_dim=10, hidden=4)
    cd.negative_samples(x)
    assert cd.persistent_chains.shape[0] == 0


def test_state_dict_keeps_the_chain_stream_and_persistent_chains():
    x = (torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    model = make_rbm("rbm-pcd", data_dim=10, hidden=4)
    model.loss(x)
    copy = make_rbm("rbm-pcd", data_dim=10, hidden=4, seed=9)
    assert copy.chain_seed != model.chain_seed
    copy.load_state_dict(model.state_dict())
    assert (copy.chain_seed, copy.chain_offset) == (model.chain_seed, model.chain_offset)
    torch.testing.assert_close(copy.persistent_chains, model.persistent_chains)
    torch.testing.assert_close(copy.negative_samples(x), model.negative_samples(x))


def test_bad_rbm_configuration_is_rejected():
    with pytest.raises(ValueError, match="one hidden layer"):
        build_method("rbm-cd", data_dim=8, layers=2)
    with pytest.raises(ValueError, match="hidden"):
        build_method("rbm-cd", data_dim=8, hidden=0)
    model = make_rbm(data_dim=8, hidden=3)
    with pytest.raises(RuntimeError, match=r"Scorer\(\).prepare"):
        model.bound(torch.zeros(2, 8))


def test_default_hidden_units_follow_the_data():
    assert build_method("rbm-cd", data_dim=784).rbm.weight.shape == (784, 500)
    assert build_method("rbm-pcd", data_dim=64).rbm.weight.shape == (64, 100)


@pytest.mark.parametrize("name", ["rbm-cd", "rbm-pcd"])
def test_training_and_scoring_on_toy_data_is_exact_where_it_can_be(name):
    """Trained on 4 patterns of 8 pixels, the RBM puts most of its mass on them; its test
    NLL (AIS log Z) agrees with the exact one, and the bound equals the NLL."""
    patterns = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                             [1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1]],
                            dtype=torch.float32)
    data = patterns.repeat(100, 1)
    model = make_rbm(name, data_dim=8, hidden=8, num_samples=5 if name == "rbm-cd" else 1)
    exact_nll = lambda: (rbm_partition.exact_log_z(*model.rbm.parameters_tuple)  # noqa: E731
                         - model.rbm.visible_log_marginal(patterns).double()).mean().item()
    before = exact_nll()
    train(model, data, get_profile("quick").scaled(40), seed=0, show_progress=False)
    after = exact_nll()
    assert after < before - 1.0, (before, after)
    if name == "rbm-cd":  # CD-5 gets close to the 4 patterns' log 4 in 800 updates
        assert after < math.log(4) + 0.5, (before, after)
    prepare_scoring(model, data, num_temperatures=2000)
    nll, estimator, terms = test_nll(model, patterns, eval_samples=1)
    assert estimator.startswith("AIS log Z (2000 temperatures, 100 runs)")
    assert nll.mean().item() == pytest.approx(after, abs=0.1)
    torch.testing.assert_close(model.bound(patterns), nll)
    torch.testing.assert_close(model.log_weights(patterns, 3), -nll.expand(3, -1))
    assert set(terms) == {"neg_free_energy", "cd_objective", "log_z", "log_z_low", "log_z_high"}
    samples = model.sample(50)
    assert samples.shape == (50, 8) and 0 <= samples.min() and samples.max() <= 1


def test_fused_and_reference_backends_train_identically_in_double_precision():
    data = load_dataset("digits").train[:300].double()
    models = []
    for backend in BACKENDS:
        model = make_rbm("rbm-pcd", hidden=16, num_samples=2, backend=backend).double()
        train(model, data, get_profile("quick").scaled(2), seed=0, show_progress=False)
        models.append(model)
    for (name, fused), (_, reference) in zip(models[0].state_dict().items(),
                                             models[1].state_dict().items()):
        if isinstance(fused, torch.Tensor):
            torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-9, equal_nan=True,
                                       msg=name)


def test_rbm_method_is_a_registered_method():
    assert isinstance(make_rbm(), RBMMethod)
