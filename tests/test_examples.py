"""The example plug-ins of a custom q (examples/flow_q.py: a normalising flow) and a custom
p (examples/mixture_prior.py: a learned mixture prior) on the built-in Gaussian-latent
family: exact log-weights, the check before training, and rows beside the built-ins."""
import math
from pathlib import Path

import pytest
import torch

from genvar_bench import cli
from genvar_bench.methods.latent import gaussian_log_density
from genvar_bench.plugins import load_plugin
from genvar_bench.preflight import check_method
from genvar_bench.registry import METHODS
from genvar_bench.results import read_table

ROOT = Path(__file__).resolve().parents[1]
FLOW, MIXTURE = ROOT / "examples" / "flow_q.py", ROOT / "examples" / "mixture_prior.py"


@pytest.fixture(scope="module", autouse=True)
def plugins():
    load_plugin(str(FLOW))
    load_plugin(str(MIXTURE))


def digits(batch=12):
    from genvar_bench.data import load_dataset

    return load_dataset("digits").train[:batch]


def scramble(module):
    """Random weights everywhere (the couplings start as the identity)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_the_flow_q_is_not_taken_for_a_gaussian_and_scores_its_own_draws(backend):
    torch.manual_seed(0)
    method = METHODS["iwae-flow"](64, num_samples=4, backend=backend)
    scramble(method.q)
    assert method.q.q_family is None and method.q.backend == backend
    x = digits()
    torch.manual_seed(1)
    draw = method.q.sample(x, 4)
    assert torch.allclose(draw.log_q, method.q.log_prob(x, draw.latents), atol=1e-4)
    as_gaussian = gaussian_log_density(draw.latents[0], *draw.params[0])
    assert (as_gaussian - draw.log_q).abs().max() > 0.1  # the base Gaussian is not q
    log_w = method.p.log_ratio(x, draw, method.q)
    exact = method.p.log_prob(x, draw.latents) - method.q.log_prob(x, draw.latents)
    assert torch.allclose(log_w, exact, atol=1e-4)
    check_method(method, x)


def test_the_mixture_prior_is_scored_exactly_and_one_standard_component_is_the_gaussian():
    torch.manual_seed(0)
    method = METHODS["vae-mixture"](64, num_samples=3)
    assert method.p.fused_for_q is None  # its prior is not the fused op's N(0, I)
    x = digits()
    draw = method.q.sample(x, 3)
    log_w = method.p.log_ratio(x, draw, method.q)
    assert torch.allclose(log_w, method.p.log_prob(x, draw.latents) - method.q.log_prob(x, draw.latents))
    z = draw.latents[0]
    weights = torch.softmax(method.p.logit_weights, 0)
    by_hand = torch.log(sum(weight.double() * torch.exp(gaussian_log_density(
        z.double(), mean.double(), log_variance.double()))
        for weight, mean, log_variance in zip(weights, method.p.means, method.p.log_variances)))
    assert torch.allclose(method.p.log_prior([z]).double(), by_hand, rtol=1e-5)
    with torch.no_grad():  # one component at N(0, I): the family's own prior
        method.p.means.zero_()
        method.p.log_variances.zero_()
    standard = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    assert torch.allclose(method.p.log_prior([z]), standard, atol=1e-4)
    assert method.sample(5).shape == (5, 64)
    check_method(method, x)


def test_both_plugins_train_and_score_beside_iwae(tmp_path):
    args = ["run", "--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress",
            "--out", str(tmp_path), "--plugin", str(FLOW), "--plugin", str(MIXTURE),
            "--method", "iwae-flow,vae-mixture,iwae", "--k", "2"]
    assert cli.main(args) == 0
    rows = read_table(tmp_path / "digits" / "quick" / "results.csv").set_index("method")
    assert set(rows.index) == {"iwae", "iwae-flow", "vae-mixture"} and (rows["status"] == "ok").all()
    assert (rows["test_nll"] > 0).all() and (rows["test_bound"] >= rows["test_nll"] - 1).all()
