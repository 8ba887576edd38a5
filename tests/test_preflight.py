"""A p's fused log ratio holds only for the q family it declares, and `preflight.check_method`
refuses, before any training, a method whose log weights or bound are malformed or whose
p scores its q's draws otherwise than log p - log q.

The plug-in of these tests: q a diagonal Gaussian followed by two affine couplings (a
normalising flow, exact log q), p the built-in Gaussian-latent decoder."""
import pytest
import torch
from torch import nn

from genvar_bench import build_method
from genvar_bench.core import Draw, InferenceModel, Method
from genvar_bench.registry import METHODS, resolved_option_defaults
from genvar_bench.data import load_dataset
from genvar_bench.methods.latent import GaussianDecoder, GaussianLayer, gaussian_log_density
from genvar_bench.methods.vae import VAE
from genvar_bench.preflight import MethodCheckError, check_method
from genvar_bench.profiles import Profile, get_profile
from genvar_bench.train import train

DATA_DIM, LATENT_DIM, HIDDEN = 64, 4, 16


def digits(count=12, kind="binary"):
    data = load_dataset("digits" if kind == "binary" else "digits-grey")
    return data.train[:count].clone()


class AffineCoupling(nn.Module):
    """y = z with one half of the units scaled and shifted given the other half."""

    def __init__(self, dim: int, flip: bool):
        super().__init__()
        self.flip, self.half = flip, dim // 2
        self.net = nn.Sequential(nn.Linear(self.half, HIDDEN), nn.Tanh(),
                                 nn.Linear(HIDDEN, 2 * (dim - self.half)))

    def _split(self, z):
        first, second = z[..., :self.half], z[..., self.half:]
        return (second, first) if self.flip else (first, second)

    def _join(self, kept, changed):
        return torch.cat([changed, kept] if self.flip else [kept, changed], -1)

    def forward(self, z):
        """(y, log |det dy/dz|)."""
        kept, changed = self._split(z)
        log_scale, shift = self.net(kept).chunk(2, -1)
        log_scale = torch.tanh(log_scale)
        return self._join(kept, changed * torch.exp(log_scale) + shift), log_scale.sum(-1)

    def inverse(self, y):
        """(z, log |det dy/dz| at z)."""
        kept, changed = self._split(y)
        log_scale, shift = self.net(kept).chunk(2, -1)
        log_scale = torch.tanh(log_scale)
        return self._join(kept, (changed - shift) * torch.exp(-log_scale)), log_scale.sum(-1)


class FlowEncoder(InferenceModel):
    """q(z | x): z_0 ~ N(mu(x), diag e^logvar(x)), z = f_2(f_1(z_0)), exact log q. Its draw
    hands on the base Gaussian's (mu, logvar), as a plug-in author naturally would: they
    are not the parameters of q(z | x)."""

    q_grads = ("reparameterize", "none")

    def __init__(self, data_dim=DATA_DIM, latent_dim=LATENT_DIM):
        super().__init__()
        self.base = GaussianLayer(data_dim, [HIDDEN], latent_dim)
        self.couplings = nn.ModuleList([AffineCoupling(latent_dim, False),
                                        AffineCoupling(latent_dim, True)])

    def params(self, mu, logvar):
        return (mu, logvar)

    def sample(self, x, num_samples, q_grad=None):
        q_grad = self.check_q_grad(q_grad)
        mu, logvar = self.base(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(num_samples, *mu.shape, dtype=mu.dtype)
        for coupling in self.couplings:
            z, _ = coupling(z)
        if q_grad == "none":
            z, mu, logvar = z.detach(), mu.detach(), logvar.detach()
        return Draw([z], [self.params(mu, logvar)])

    def log_prob(self, x, latents):
        z, log_det = latents[0], 0
        for coupling in reversed(self.couplings):
            z, step = coupling.inverse(z)
            log_det = log_det + step
        return gaussian_log_density(z, *self.base(x)) - log_det


class FlowWithWideParams(FlowEncoder):
    """The same q, handing on (mu, logvar, log-scales) per layer."""

    def params(self, mu, logvar):
        return (mu, logvar, torch.zeros_like(mu))


class FlowWithoutDensity(FlowEncoder):
    """A q that draws but cannot score its draws."""

    has_log_prob = False

    def log_prob(self, x, latents):
        return InferenceModel.log_prob(self, x, latents)


class FlowIWAE(Method):
    name = "flow-iwae"

    def __init__(self, encoder=FlowEncoder, backend="fused", num_samples=5):
        super().__init__(encoder(), GaussianDecoder(DATA_DIM, [LATENT_DIM], [[HIDDEN]]),
                         num_samples, backend)

    def bound(self, x):
        return self.importance_bound(x, self.num_samples)


def flow_method(encoder=FlowEncoder, backend="fused"):
    torch.manual_seed(0)
    return FlowIWAE(encoder, backend)


# --------------------------------------------------------------- the q family of a fused p

@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("encoder", [FlowEncoder, FlowWithWideParams])
def test_a_flow_q_is_scored_exactly_by_the_gaussian_decoder(encoder, backend):
    """Before: the decoder's fused op scored log q as the base Gaussian's at the flow's z
    (FlowEncoder: wrong by nats, silently) or failed on the params (FlowWithWideParams:
    "too many values to unpack"). Now q's family is not p's: log p - log q, exactly."""
    method, x = flow_method(encoder, backend), digits()
    torch.manual_seed(3)
    log_w = method.log_weights(x, 5)
    torch.manual_seed(3)
    draw = method.q.sample(x, 5)
    expected = method.p.log_prob(x, draw.latents) - method.q.log_prob(x, draw.latents)
    torch.testing.assert_close(log_w, expected)
    # ... and the base Gaussian's log density at the flow's z is not log q (the test bites)
    mu, logvar = draw.params[0][:2]
    assert (gaussian_log_density(draw.latents[0], mu, logvar)
            - method.q.log_prob(x, draw.latents)).abs().max() > 0.1
    check_method(method, x)


def test_the_built_in_qs_declare_the_family_their_ps_fuse_for():
    for name, options in [("iwae", {}), ("vae", {"layers": 2}), ("dae", {}),
                          ("rws", {"latent": "binary"}), ("rbm-cd", {"hidden": 5})]:
        method = build_method(name, data_dim=DATA_DIM, **options)
        assert method.p.fused_for_q is not None
        assert method.q.q_family == method.p.fused_for_q
    # a subclass that redefines how q draws or scores is of no declared family until it says so
    from genvar_bench.methods.latent import GaussianEncoder

    class Redrawn(GaussianEncoder):
        def sample(self, x, num_samples, q_grad=None):
            return super().sample(x, num_samples, q_grad)

    class Declared(Redrawn):
        q_family = "diagonal-gaussian"

    assert GaussianEncoder.q_family == "diagonal-gaussian"
    assert Redrawn.q_family is None and Declared.q_family == "diagonal-gaussian"


def test_a_q_without_a_density_outside_ps_family_is_refused_by_name():
    method, x = flow_method(FlowWithoutDensity), digits()
    with pytest.raises(TypeError, match=r"FlowWithoutDensity.*log_prob"):
        method.log_weights(x, 3)
    with pytest.raises(MethodCheckError, match=r"flow-iwae.*FlowWithoutDensity.*log_prob"):
        check_method(method, x)


def test_a_q_that_claims_ps_family_falsely_is_caught_by_the_check():
    """The situation before the fix, recreated: the flow claims to be a diagonal Gaussian,
    p takes its fused path, and log w is wrong; check_method refuses it."""
    class Lying(FlowEncoder):
        q_family = "diagonal-gaussian"

    method, x = flow_method(Lying), digits()
    with pytest.raises(MethodCheckError, match=r"flow-iwae.*log_ratio.*differs"):
        check_method(method, x)


# --------------------------------------------------------------- broken methods are refused

class WrongShapeWeights(VAE):
    name = "broken-shape"

    def log_weights(self, x, num_samples, q_grad=None):
        return super().log_weights(x, num_samples, q_grad).unsqueeze(-1)


class TransposedWeights(VAE):
    name = "broken-transposed"

    def log_weights(self, x, num_samples, q_grad=None):
        return super().log_weights(x, num_samples, q_grad).T


class NaNBound(VAE):
    name = "broken-nan"

    def bound(self, x):
        bound = super().bound(x).clone()
        bound[1] = float("nan")
        return bound


class WrongShapeBound(VAE):
    name = "broken-bound"

    def bound(self, x):
        return super().bound(x).sum()


class InfiniteWeights(VAE):
    name = "broken-inf"

    def log_weights(self, x, num_samples, q_grad=None):
        return super().log_weights(x, num_samples, q_grad) - float("inf")


@pytest.mark.parametrize("broken, message", [
    (WrongShapeWeights,
     r"broken-shape.*log_weights\(batch, 3\) has shape \[3, 12, 1\], expected \[k, B\] = \[3, 12\]"),
    (TransposedWeights, r"broken-transposed.*log_weights.*shape \[12, 3\]"),
    (NaNBound, r"broken-nan.*bound\(batch\).*1 non-finite.*nan"),
    (WrongShapeBound, r"broken-bound.*bound\(batch\) has shape \[\], expected \[B\] = \[12\]"),
    (InfiniteWeights, r"broken-inf.*log_weights.*36 non-finite.*-inf"),
])
def test_a_broken_method_is_refused_with_the_reason(broken, message):
    torch.manual_seed(0)
    method = broken(DATA_DIM, num_samples=2)
    with pytest.raises(MethodCheckError, match=message) as caught:
        check_method(method, digits())
    assert isinstance(caught.value, RuntimeError) and "\n" not in str(caught.value)


def test_an_error_inside_the_method_is_reported_as_the_check_failing():
    class Raising(VAE):
        name = "broken-raise"

        def bound(self, x):
            raise ValueError("too many values to unpack (expected 2)")

    torch.manual_seed(0)
    with pytest.raises(MethodCheckError, match=r"broken-raise.*bound\(batch\) raised ValueError"):
        check_method(Raising(DATA_DIM), digits())


# --------------------------------------------------------------- every built-in method passes

BUILT_IN = [("vae", {}, 1), ("vae", {}, 2), ("iwae", {}, 1), ("rws", {}, 1),
            ("rws", {"latent": "binary", "q_update": "sleep"}, 1), ("dae", {}, 1),
            ("diffusion", {"diffusion_steps": 20}, 1), ("diffusion-gauss", {"diffusion_steps": 20}, 1),
            ("rbm-cd", {}, 1), ("rbm-pcd", {}, 1)]


def test_the_cases_cover_every_registered_built_in_method():
    built_in = {name for name, builder in METHODS.items() if builder.plugin is None}
    assert built_in <= {name for name, _, _ in BUILT_IN}


@pytest.mark.parametrize("name, options, layers", BUILT_IN,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}-L{l}" for n, o, l in BUILT_IN])
def test_every_built_in_method_passes_and_is_left_as_it_was(name, options, layers):
    profile = get_profile("quick")
    options = {**resolved_option_defaults(name, profile, DATA_DIM), **options}
    torch.manual_seed(0)
    method = build_method(name, data_dim=DATA_DIM, layers=layers, num_samples=2, **options)
    x = digits(profile.batch_size, METHODS[name].data_kind)
    method.train()
    before = state(method)
    rng = torch.get_rng_state()
    check_method(method, x)
    assert method.training and all(module.training for module in method.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(state(method), before)
    # the check runs on its own generator: the same result whatever the caller's state
    torch.manual_seed(123)
    check_method(method, x)


# --------------------------------------------------------------- the check leaves no trace

def state(method):
    return {key: value.clone() if torch.is_tensor(value) else value
            for key, value in method.state_dict().items()}


def assert_same_state(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        if torch.is_tensor(expected[key]):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, equal_nan=True,
                                       msg=key)  # bit for bit (an unset log Z is NaN)
        else:
            assert got[key] == expected[key], key


TINY = Profile("tiny", "digits", (2,), ((2, 1e-3),), batch_size=10, diffusion_steps=10)


@pytest.mark.parametrize("name, copyable", [("iwae", True), ("dae", True), ("rbm-pcd", True),
                                            ("diffusion", True), ("dae", False), ("rbm-pcd", False)])
def test_training_is_the_same_with_and_without_the_check(name, copyable):
    """A row's numbers do not depend on whether the check ran: same seed, same training,
    bit for bit, with the check before the first step or without it; also for a method that
    cannot be copied, checked in place and put back."""
    x = digits(40)
    options = {**resolved_option_defaults(name, TINY, DATA_DIM)}
    if name.startswith("rbm"):
        options["hidden"] = 10
    trained = []
    for checked in (False, True):
        torch.manual_seed(7)
        method = build_method(name, data_dim=DATA_DIM, num_samples=2, **options)
        if not copyable:
            method.uncopyable = (value for value in ())  # a generator: deepcopy fails
        if checked:
            check_method(method, x[:TINY.batch_size])
            assert method.training
        stats = train(method, x, TINY, seed=7, show_progress=False)
        trained.append((state(method), stats.history[-1][2]))
    assert_same_state(trained[1][0], trained[0][0])
    assert trained[1][1] == trained[0][1]
