"""The q/p contract (genvar_bench.core) held by every built-in family: what each q and p
declares it has works, and p's fused log ratio equals its two densities apart."""
import pytest
import torch

from genvar_bench import Draw, GenerativeModel, InferenceModel, build_method
from genvar_bench.core import Q_GRADS
from genvar_bench.registry import METHODS
from helpers import prepare_scoring

DATA_DIM = 6
FAMILIES = {
    "gaussian, 1 layer": ("iwae", dict(layers=1)),
    "gaussian, 2 layers": ("vae", dict(layers=2)),
    "sigmoid belief network": ("rws", dict(latent="binary")),
    "dae": ("dae", dict(noise=0.5)),
    "binomial diffusion": ("diffusion", dict(diffusion_steps=4)),
    "gaussian diffusion": ("diffusion-gauss", dict(diffusion_steps=4)),
    "rbm": ("rbm-cd", dict(hidden=3)),
}


def family(name, backend="fused", num_samples=3):
    method_name, options = FAMILIES[name]
    torch.manual_seed(0)
    method = build_method(method_name, data_dim=DATA_DIM, num_samples=num_samples,
                          backend=backend, **options).double()
    train = (torch.rand(40, DATA_DIM, dtype=torch.float64) < 0.4).double()
    if METHODS[method_name].data_kind == "continuous":
        train = torch.randn(40, DATA_DIM, dtype=torch.float64) * 0.5
    if method_name.startswith("rbm"):
        prepare_scoring(method, train, num_runs=4, num_temperatures=50)
    else:
        prepare_scoring(method, train)
    return method, train[:5]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_a_q_and_a_p_with_declared_abilities(name):
    method, x = family(name)
    q, p = method.q, method.p
    assert isinstance(q, InferenceModel) and isinstance(p, GenerativeModel)
    assert q.q_grads and set(q.q_grads) <= set(Q_GRADS)
    assert q.ops is method.ops and p.ops is method.ops
    assert q.backend == p.backend == method.backend  # given at construction, not after

    with pytest.raises(ValueError, match="q_grad"):
        q.check_q_grad("teleport")
    if q.can_sample:
        draw = q.sample(x, 4)
        assert isinstance(draw, Draw)
        assert all(latent.shape[:2] == (4, x.shape[0]) for latent in draw.latents)
    if q.has_units:
        means = q.unit_means(x, 4)
        assert [mean.shape[0] for mean in means] == [x.shape[0]] * len(means)
    else:
        with pytest.raises(NotImplementedError):
            q.unit_means(x, 4)
    if not q.has_log_prob:
        with pytest.raises(NotImplementedError):
            q.log_prob(x, [x])
    if p.can_sample:
        samples, latents = p.sample(7)
        assert samples.shape == (7, DATA_DIM) and latents[0].shape[0] == 7
        mean = p.data_mean(latents)
        assert mean.shape == (7, DATA_DIM) and torch.isfinite(mean).all()
        if q.has_log_prob and q.can_sample:  # the sleep phase's log q at a dream of p
            assert torch.isfinite(q.log_prob(samples, latents)).all()
    log_w = method.log_weights(x, 4)
    assert log_w.shape == (4, x.shape[0]) and torch.isfinite(log_w).all()


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("name", [name for name in sorted(FAMILIES) if "diffusion" not in name
                                  and name != "rbm"])
def test_the_fused_log_ratio_is_log_p_minus_log_q(name, backend):
    """The one place log w is formed: p.log_ratio at q's draw equals
    p.log_prob(x, tau) - q.log_prob(tau | x), the contract's default, on both backends."""
    method, x = family(name, backend)
    draw = method.q.sample(x, 5)
    torch.testing.assert_close(method.p.log_ratio(x, draw, method.q),
                               method.p.log_prob(x, draw.latents) - method.q.log_prob(x, draw.latents))
    torch.manual_seed(3)
    log_w = method.log_weights(x, 5)
    torch.manual_seed(3)
    again = method.q.sample(x, 5)
    torch.testing.assert_close(log_w, method.p.log_prob(x, again.latents)
                               - method.q.log_prob(x, again.latents))


@pytest.mark.parametrize("name", ["binomial diffusion", "gaussian diffusion"])
def test_a_diffusion_draw_is_scored_as_log_p_minus_log_q_of_its_trajectory(name):
    """q's trajectories are drawn as p reads them; their log ratio is the densities apart."""
    method, x = family(name)
    drawn = []
    draw = method.q.sample(x, 3)
    chunks = draw.chunks

    def recording():
        for start, states in chunks():
            drawn.extend(states[1:])
            yield start, states
    draw.chunks = recording
    log_w = method.p.log_ratio(x, draw, method.q)
    latents = list(drawn)
    assert len(latents) == method.num_steps
    expected = method.p.log_prob(x, latents) - method.q.log_prob(x, latents)
    torch.testing.assert_close(log_w, expected.to(log_w.dtype))


def test_the_rbm_log_ratio_is_its_exact_log_likelihood_for_every_chain():
    method, x = family("rbm")
    draw = method.q.sample(x, 4)
    assert draw.latents[0].shape == (4, x.shape[0], 3)
    expected = method.rbm.visible_log_marginal(x) - method.p.log_z[0]
    torch.testing.assert_close(method.p.log_ratio(x, draw, method.q), expected.expand(4, -1))


def test_a_method_needs_a_q_and_a_p():
    from genvar_bench import Method

    class Broken(Method):
        def bound(self, x):
            return x.sum(-1)

    with pytest.raises(TypeError, match="InferenceModel"):
        Broken(torch.nn.Identity(), torch.nn.Identity(), 1, "reference")


def test_a_q_or_p_built_alone_has_its_op_set():
    from genvar_bench.methods.latent import GaussianDecoder, GaussianEncoder
    from genvar_bench.ops import REFERENCE

    q = GaussianEncoder.of_sizes(6, [3], [[8, 8]], backend="reference")
    p = GaussianDecoder(6, [3], [[8, 8]], backend="reference")
    assert q.ops is REFERENCE and p.ops is REFERENCE
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert p.log_ratio(x, q.sample(x, 2), q).shape == (2, 4)
