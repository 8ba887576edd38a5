"""The method registry, VAE and IWAE: objectives, backends and a short training run."""
import pytest
import torch

from genvar_bench import build_method
from genvar_bench.registry import METHODS
from genvar_bench.data import load_dataset
from genvar_bench.profiles import get_profile
from genvar_bench.train import train
from helpers import prepare_scoring
from genvar_bench.registry import record_of


def make(name, layers=1, num_samples=5, backend="fused", data_dim=64, seed=0, **options):
    torch.manual_seed(seed)
    return build_method(name, data_dim=data_dim, layers=layers, num_samples=num_samples,
                        backend=backend, **options)


# Every registered method and variant, with the layer counts it supports.
VARIANTS = [
    ("vae", {}, [1, 2]), ("iwae", {}, [1, 2]),
    ("rws", {"latent": "gaussian", "q_update": "wake"}, [1, 2]),
    ("rws", {"latent": "gaussian", "q_update": "mix"}, [1]),
    ("rws", {"latent": "binary", "q_update": "wake"}, [1]),
    ("rws", {"latent": "binary", "q_update": "sleep"}, [1]),
    ("dae", {}, [1]),
    ("diffusion", {"diffusion_steps": 8}, [1]),
    ("diffusion", {"diffusion_steps": 8, "schedule": "linear", "network": "conv"}, [1]),
    ("diffusion-gauss", {"diffusion_steps": 8}, [1]),
    ("rbm-cd", {"hidden": 20}, [1]),
    ("rbm-pcd", {"hidden": 20}, [1]),
]
CASES = [pytest.param(name, options, layers, id=f"{name}-{'-'.join(map(str, options.values()))}-L{layers}")
         for name, options, all_layers in VARIANTS for layers in all_layers]


def binary_batch(batch=16, data_dim=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, data_dim, generator=generator) < 0.3).float()


def test_registry_lists_the_methods_and_rejects_unknown_names():
    make("vae")
    assert {"vae", "iwae", "rws", "dae"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method 'nope'.*iwae"):
        build_method("nope", data_dim=4)


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="layers"):
        make("iwae", layers=3)
    with pytest.raises(ValueError, match="num_samples"):
        make("iwae", num_samples=0)
    with pytest.raises(ValueError, match="backend"):
        make("iwae", backend="magic")


@pytest.mark.parametrize("layers", [1, 2])
def test_vae_and_iwae_agree_at_one_sample(layers):
    x = binary_batch()
    vae, iwae = make("vae", layers, 1), make("iwae", layers, 1)
    iwae.load_state_dict(vae.state_dict())
    torch.manual_seed(5)
    vae_loss = vae.loss(x)
    torch.manual_seed(5)
    torch.testing.assert_close(iwae.loss(x), vae_loss)


@pytest.mark.parametrize("layers", [1, 2])
def test_iwae_bound_is_tighter_than_the_vae_bound_on_the_same_samples(layers):
    x = binary_batch(batch=64)
    model = make("iwae", layers, 20)
    torch.manual_seed(2)
    log_w = model.log_weights(x, 20)
    elbo = -log_w.mean(0)
    importance = torch.log(torch.tensor(20.0)) - torch.logsumexp(log_w, 0)
    assert torch.all(importance <= elbo + 1e-5)


@pytest.mark.parametrize("name, options, layers",
                         # RBM chains draw binary units: float32 rounding can flip one, so
                         # tests/test_rbm.py compares the RBM backends in float64.
                         [case for case in CASES if not case.values[0].startswith("rbm")])
def test_fused_and_reference_backends_agree_with_gradients(name, options, layers):
    x = binary_batch()
    fused = make(name, layers, 5, "fused", **options)
    reference = make(name, layers, 5, "reference", **options)
    reference.load_state_dict(fused.state_dict())
    losses = []
    for model in (fused, reference):
        torch.manual_seed(7)
        loss = model.loss(x)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-4)
    for (name_f, param_f), (_, param_r) in zip(fused.named_parameters(),
                                               reference.named_parameters()):
        torch.testing.assert_close(param_f.grad, param_r.grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda text: f"{name_f}: {text}")


@pytest.mark.parametrize("name, options, layers", [case for case in CASES if case.values[2] == 1])
def test_training_lowers_the_bound_on_digits(name, options, layers):
    model = make(name, layers, 5, data_dim=64, **options)
    data = load_dataset("digits" if record_of(model).data_kind == "binary" else "digits-grey")
    profile = get_profile("quick").scaled(3)
    prepare_scoring(model, data.train)
    torch.manual_seed(0)
    before = model.importance_bound(data.valid, 5).mean().item()
    stats = train(model, data.train, profile, seed=0, show_progress=False)
    prepare_scoring(model, data.train)
    torch.manual_seed(0)
    after = model.importance_bound(data.valid, 5).mean().item()
    assert stats.epochs == 3 and stats.examples == 3 * data.train.shape[0]
    assert after < before - 5, (before, after)
    assert [epoch for epoch, _, _ in stats.history] == [1, 2, 3]
    samples = model.sample(7)
    assert samples.shape == (7, data.data_dim)
    if record_of(model).data_kind == "binary":
        assert samples.min() >= 0 and samples.max() <= 1


def test_profile_scaling_keeps_the_schedule_order():
    paper = get_profile("paper")
    assert paper.epochs == 3280
    cut = paper.scaled(5)
    assert cut.stages == ((1, paper.stages[0][1]), (3, paper.stages[1][1]), (1, paper.stages[2][1]))
    assert get_profile("quick").scaled(500).epochs == 500
    with pytest.raises(ValueError):
        paper.scaled(0)


def test_a_diverging_run_says_in_which_epoch():
    model = make("vae", 1, 1, data_dim=64)
    data = load_dataset("digits")
    profile = get_profile("quick").scaled(3)
    steps_per_epoch = -(-data.train.shape[0] // profile.batch_size)
    calls = []
    loss = model.loss

    def loss_that_diverges(x):  # finite through epoch 1, NaN from the second step of epoch 2
        calls.append(1)
        value = loss(x)
        return value * float("nan") if len(calls) > steps_per_epoch + 1 else value

    model.loss = loss_that_diverges
    with pytest.raises(FloatingPointError, match=r"^training loss became nan: the run diverged "
                                                 r"in epoch 2 of 3$"):
        train(model, data.train, profile, seed=0, show_progress=False)
