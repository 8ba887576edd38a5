"""The posterior gap, the test estimator's effective sample size and the gradient
signal-to-noise ratio, on cases whose answers are known."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from genvar_bench import cli, diagnostics, estimators, runner
from genvar_bench.results import read_results

FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "20", "--no-progress"]


# ---------------------------------------------------------------- effective sample size

def test_ess_of_constructed_weights():
    equal = torch.zeros(10, 1)
    assert estimators.effective_sample_size(equal).item() == pytest.approx(10)
    one_holds_all = torch.tensor([[0.0], [-1e4], [-1e4], [-1e4]])
    assert estimators.effective_sample_size(one_holds_all).item() == pytest.approx(1)
    two_of_four = torch.tensor([[3.0], [3.0], [-math.inf], [-math.inf]])
    assert estimators.effective_sample_size(two_of_four).item() == pytest.approx(2)
    # weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    assert estimators.effective_sample_size(torch.tensor([[0.0], [math.log(3)]])).item() == pytest.approx(1.6)


class LogNormalWeights:
    """log w ~ N(0, s^2) per draw: E[w]^2 / E[w^2] = exp(-s^2), so ESS / K -> exp(-s^2)."""

    def __init__(self, scale):
        self.scale = scale

    def log_weights(self, x, num_samples):
        return self.scale * torch.randn(num_samples, x.shape[0], dtype=torch.float64)


@pytest.mark.parametrize("scale", [0.3, 0.8])
def test_ess_of_log_normal_weights_is_exp_minus_variance(scale):
    torch.manual_seed(0)
    k = 20000
    _, ess = estimators.importance_nll_and_ess(LogNormalWeights(scale), torch.zeros(20, 1), k)
    assert ess.mean().item() / k == pytest.approx(math.exp(-scale**2), rel=0.02)


class CountingModel:
    """log w of draw i for example b is a fixed function of (i, b): chunking must not matter."""

    def __init__(self):
        self.drawn = 0

    def log_weights(self, x, num_samples):
        index = torch.arange(self.drawn, self.drawn + num_samples, dtype=torch.float64)
        self.drawn += num_samples
        column = torch.arange(x.shape[0], dtype=torch.float64)
        return torch.sin(index[:, None] * 0.37 + column[None, :]) * 3


@pytest.mark.parametrize("max_elements", [3, 7, 64, 10**6])
def test_ess_is_exact_under_chunking_and_leaves_the_estimate_bit_for_bit(max_elements):
    x = torch.zeros(1, 1, dtype=torch.float64)  # one example: chunks split its draws
    nll, ess = estimators.importance_nll_and_ess(CountingModel(), x, 40, max_elements=max_elements)
    expected = estimators.effective_sample_size(CountingModel().log_weights(x, 40))
    torch.testing.assert_close(ess, expected)
    assert torch.equal(nll, estimators.importance_nll(CountingModel(), x, 40, max_elements=max_elements))


# ---------------------------------------------------------------- posterior gap

def test_posterior_gaps_are_paired_means_with_intervals():
    rng = np.random.default_rng(0)
    nll = rng.normal(90, 5, 400)
    elbo = nll + rng.exponential(3.0, 400)
    bound5 = nll + rng.exponential(1.0, 400)
    gaps = diagnostics.posterior_gaps({"test_nll": nll, "test_iw_bound_k1": elbo,
                                       "test_iw_bound_k5": bound5}, own_k=5)
    assert gaps["elbo_gap"] == pytest.approx(np.mean(elbo - nll))
    assert gaps["elbo_gap_ci"] == pytest.approx(1.96 * np.std(elbo - nll, ddof=1) / 20)
    assert gaps["k_gap"] == pytest.approx(np.mean(bound5 - nll))
    # a file without the k-sample bound: no gap, never a wrong one
    assert math.isnan(diagnostics.posterior_gaps({"test_nll": nll, "test_iw_bound_k1": elbo},
                                                 own_k=50)["k_gap"])


# ---------------------------------------------------------------- gradient SNR

class LinearGaussian(nn.Module):
    """p(z) = N(0, 1), p(x | z) = N(z + b, 1), q(z | x) = N(mu, sigma^2), the loss the
    negative one-sample ELBO with z = mu + sigma eps. Its gradients are analytic:
      d loss / d mu = -(x - 2 mu - b) + 2 sigma eps  (mean -(x - 2 mu - b), sd 2 sigma)
      d loss / d b  = -(x - mu - b) + sigma eps      (mean -(x - mu - b),   sd sigma)
    so SNR_q = |x - 2 mu - b| / (2 sigma), SNR_p = |x - mu - b| / sigma."""

    def __init__(self, mu, sigma, b):
        super().__init__()
        self.q = nn.Module()
        self.q.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.q.log_sigma = nn.Parameter(torch.tensor(math.log(sigma), dtype=torch.float64),
                                        requires_grad=False)
        self.p = nn.Module()
        self.p.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def loss(self, x):
        sigma = self.q.log_sigma.exp()
        z = self.q.mu + sigma * torch.randn((), dtype=torch.float64)
        log_joint = -0.5 * z**2 - 0.5 * (x - z - self.p.b) ** 2
        log_q = -0.5 * ((z - self.q.mu) / sigma) ** 2 - self.q.log_sigma
        return -(log_joint - log_q).sum()


def test_snr_of_a_linear_gaussian_model_matches_its_analytic_value():
    x, mu, sigma, b = torch.tensor(2.0, dtype=torch.float64), 0.3, 0.7, 0.4
    model = LinearGaussian(mu, sigma, b)
    snr = diagnostics.gradient_snr(model, x, repeats=20000)
    assert snr.q == pytest.approx(abs(2.0 - 2 * mu - b) / (2 * sigma), rel=0.03)
    assert snr.p == pytest.approx(abs(2.0 - mu - b) / sigma, rel=0.03)
    assert (snr.q_parameters, snr.p_parameters, snr.repeats) == (1, 1, 20000)


def test_snr_leaves_the_callers_generator_and_gradients_alone():
    model = LinearGaussian(0.1, 1.0, 0.0)
    model.q.mu.grad = torch.tensor(7.0, dtype=torch.float64)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    first = diagnostics.gradient_snr(model, torch.tensor(1.0, dtype=torch.float64), repeats=50)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model.q.mu.grad.item() == 7.0 and model.p.b.grad is None
    again = diagnostics.gradient_snr(model, torch.tensor(1.0, dtype=torch.float64), repeats=50)
    assert (first.q, first.p) == (again.q, again.p)  # its own seeded draws


def test_snr_needs_two_draws():
    with pytest.raises(ValueError, match="repeats"):
        diagnostics.gradient_snr(LinearGaussian(0.0, 1.0, 0.0), torch.tensor(1.0), repeats=1)


def test_iwae_q_snr_falls_with_k_where_dregs_does_not():
    """Rainforth et al. 2018: the IWAE gradient's SNR for q falls with k, p's rises; DReG's
    q SNR does not fall (Tucker et al. 2019). Measured on an untrained digits model."""
    from genvar_bench.methods import build_method
    from genvar_bench.plugins import load_plugin
    from genvar_bench.data import load_dataset
    from pathlib import Path

    load_plugin(str(Path(__file__).resolve().parent.parent / "examples" / "iwae_dreg.py"))
    batch = load_dataset("digits").train[:20]
    snr = {}
    for name in ("iwae", "iwae-dreg"):
        for k in (1, 64):
            torch.manual_seed(0)
            method = build_method(name, data_dim=batch.shape[1], layers=1, num_samples=k,
                                  backend="reference")
            snr[name, k] = diagnostics.gradient_snr(method, batch, repeats=200)
    assert snr["iwae", 64].q < 0.7 * snr["iwae", 1].q
    assert snr["iwae", 64].p > snr["iwae", 1].p
    assert snr["iwae-dreg", 64].q > snr["iwae", 64].q


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_iwae_at_k1_is_the_vae_bit_for_bit(backend):
    """The figure draws IWAE's k = 1 SNR from the VAE k = 1 row (figures.SAME_AT_K1): the
    two losses and their gradients are equal bit for bit under the same draws."""
    from genvar_bench.data import load_dataset
    from genvar_bench.figures import SAME_AT_K1
    from genvar_bench.methods import build_method

    batch = load_dataset("digits").train[:20]
    results = {}
    for name in ("iwae", SAME_AT_K1["iwae"]):
        torch.manual_seed(0)
        method = build_method(name, data_dim=batch.shape[1], layers=2, num_samples=1, backend=backend)
        torch.manual_seed(1)
        loss = method.loss(batch)
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in method.parameters()])
    (loss_a, grads_a), (loss_b, grads_b) = results.values()
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def test_snr_lines_lend_the_vaes_k1_to_iwae_and_nothing_else():
    import pandas as pd

    from genvar_bench.figures import snr_lines

    def row(method, k, layers=1, q=1.0):
        model = f"{method} k={k}" + (f" L={layers}" if layers != 1 else "")
        return dict(model=model, method=method, k=k, grad_snr_q=q, grad_snr_p=2 * q,
                    grad_snr_q_init=q, grad_snr_p_init=q)

    summary = pd.DataFrame([row("vae", 1, q=0.5), row("vae", 5), row("iwae", 50, q=0.2),
                            row("iwae", 5, q=0.3), row("iwae-dreg", 5), row("vae", 1, 2, q=0.9),
                            row("iwae", 5, 2)])
    lines = snr_lines(summary)
    assert set(lines) == {"vae", "iwae", "iwae-dreg", "vae L=2", "iwae L=2"}
    assert list(lines["iwae"]["k"]) == [1, 5, 50]
    assert list(lines["iwae"]["grad_snr_q"]) == [0.5, 0.3, 0.2]
    assert list(lines["iwae"]["shared_k1"]) == [True, False, False]
    assert set(lines["iwae"]["method"]) == {"iwae"}                # drawn in IWAE's colour
    assert list(lines["iwae L=2"]["grad_snr_q"]) == [0.9, 1.0]   # its own layers' twin
    assert list(lines["iwae-dreg"]["k"]) == [5]                   # no twin
    assert not lines["vae"]["shared_k1"].any()
    assert not any(line["failed"].any() for line in lines.values())


def test_snr_lines_draw_a_diverged_model_at_initialisation_only():
    """A model whose runs all failed keeps its SNR at initialisation (the mean over its
    failed seeds) on its estimator's line; one with a finished row is not doubled."""
    import math

    import pandas as pd

    from genvar_bench.figures import snr_lines

    summary = pd.DataFrame([dict(model="rws k=5", method="rws", k=5, grad_snr_q=0.2,
                                 grad_snr_p=1.9, grad_snr_q_init=0.25, grad_snr_p_init=1.1)])
    nan = math.nan
    failed = pd.DataFrame([
        dict(method="rws", variant="", k=1, layers=1, seed=seed, grad_snr_q=nan, grad_snr_p=nan,
             grad_snr_q_init=q, grad_snr_p_init=0.8) for seed, q in enumerate((0.02, 0.04))] + [
        dict(method="rws", variant="", k=5, layers=1, seed=3, grad_snr_q=nan, grad_snr_p=nan,
             grad_snr_q_init=9.0, grad_snr_p_init=9.0)])
    line = snr_lines(summary, failed)["rws"]
    assert list(line["k"]) == [1, 5] and list(line["failed"]) == [True, False]
    assert line["grad_snr_q_init"].iloc[0] == pytest.approx(0.03)
    assert math.isnan(line["grad_snr_q"].iloc[0]) and line["grad_snr_q_init"].iloc[1] == 0.25


# ---------------------------------------------------------------- rows and the diagnose command

def test_a_row_keeps_its_estimators_ess_and_per_example_bounds(tmp_path):
    assert cli.main(["run", *FAST, "--out", str(tmp_path), "--method", "iwae", "--k", "5"]) == 0
    folder = tmp_path / "digits" / "quick"
    row = read_results(folder).iloc[0]
    assert 1 <= row["test_ess_p1"] <= row["test_ess_mean"] <= 20
    arrays = runner.read_per_example(folder / "per_example" / f"{row['artifact']}.npz")
    assert arrays["test_ess"].mean() == pytest.approx(row["test_ess_mean"])
    assert arrays["test_iw_bound_k1"].mean() == pytest.approx(row["test_iw_bound_k1"])
    assert arrays["test_iw_bound_k5"].mean() == pytest.approx(row["test_iw_bound_k5"])
    np.testing.assert_array_equal(arrays["test_iw_bound_k50"] if "test_iw_bound_k50" in arrays
                                  else arrays["test_nll"], arrays["test_nll"])
    gaps = diagnostics.posterior_gaps(arrays, own_k=5)
    assert gaps["elbo_gap"] > gaps["k_gap"] > 0  # the k-sample bound is tighter than the ELBO


def test_diagnose_stores_the_snr_in_each_eligible_row_and_nothing_else(tmp_path, capsys):
    assert cli.main(["run", *FAST, "--out", str(tmp_path), "--method", "vae,rbm-cd", "--k", "5"]) == 0
    folder = tmp_path / "digits" / "quick"
    before = read_results(folder).set_index("method")
    capsys.readouterr()
    assert cli.main(["diagnose", str(folder), "--draws", "20"]) == 0
    assert "] vae k=5 L=1 seed 0: SNR q " in capsys.readouterr().err  # its layers named
    after = read_results(folder).set_index("method")
    assert after.loc["vae", "grad_snr_q"] > 0 and after.loc["vae", "grad_snr_p_init"] > 0
    assert after.loc["vae", "grad_snr_draws"] == 20
    assert math.isnan(after.loc["rbm-cd", "grad_snr_q"])  # tied q and p: no ratio of its own
    for column in before.columns:
        assert before[column].equals(after[column]), column
    capsys.readouterr()
    assert cli.main(["diagnose", str(folder), "--draws", "20"]) == 0  # done rows are kept
    assert "SNR" not in capsys.readouterr().err
    figure = folder / "figures" / "gradient_snr.png"
    assert not figure.exists()
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    assert figure.stat().st_size > 10_000


def test_diagnose_measures_a_failed_row_at_initialisation_only(tmp_path, capsys):
    """A run that diverged has no trained weights; its estimator's SNR at initialisation is
    measured from its spec (the same as a finished row of that spec would get)."""
    import dataclasses

    from genvar_bench import results, spec as specs

    assert cli.main(["run", *FAST, "--out", str(tmp_path), "--method", "iwae", "--k", "5"]) == 0
    folder = tmp_path / "digits" / "quick"
    finished = specs.from_json(read_results(folder).iloc[0]["spec"])
    failed = dataclasses.replace(finished, k=7)
    results.update_folder(folder, [(failed, results.failed_row(
        failed, "FloatingPointError: training loss became nan", "abc"))])
    assert cli.main(["diagnose", str(folder), "--draws", "20"]) == 0
    assert "no trained weights" in capsys.readouterr().err
    rows = read_results(folder).set_index("k")
    assert rows.loc[7, "status"] == "failed" and math.isnan(rows.loc[7, "grad_snr_q"])
    assert rows.loc[7, "grad_snr_q_init"] > 0 and rows.loc[7, "grad_snr_p_init"] > 0
    assert rows.loc[5, "grad_snr_q"] > 0
    from genvar_bench.cli.diagnose import initial_method
    from genvar_bench.data import load_dataset

    data = load_dataset("digits")
    direct = diagnostics.gradient_snr(initial_method(failed, data), data.train[:diagnostics.SNR_BATCH], 20)
    assert (rows.loc[7, "grad_snr_q_init"], rows.loc[7, "grad_snr_p_init"]) == (direct.q, direct.p)


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "no results"),
    (["{folder}", "--draws", "1"], "at least 2"),
    (["{folder}", "--method", "diffusion"], "no rows of diffusion"),
])
def test_diagnose_bad_input_is_one_line(tmp_path, capsys, args, message):
    folder = tmp_path / "digits" / "quick"
    if "{folder}" in args:
        assert cli.main(["run", *FAST, "--out", str(tmp_path), "--method", "vae"]) == 0
    args = [arg.format(folder=folder) if "{" in arg else str(tmp_path / arg) if arg == "nowhere"
            else arg for arg in args]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["diagnose", *args])
    assert message in str(exit_.value)
