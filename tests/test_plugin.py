"""Methods from outside the suite: `run --plugin FILE|MODULE`, the `genvar_bench.methods`
entry-point group, declared options as flags, and the shipped IWAE-DReG example, whose
gradients are checked against their definition."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genvar_bench import cli
from genvar_bench import load_model
from genvar_bench.registry import METHODS
from genvar_bench.plugins import PluginError, load_plugin
from genvar_bench.results import read_table
from genvar_bench.saved import ModelFileError

ROOT = Path(__file__).resolve().parents[1]
DREG = ROOT / "examples" / "iwae_dreg.py"
FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress"]


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test's plugins leave the registry as it was: other tests see the built-ins."""
    from genvar_bench import plugins

    methods, loaded = dict(METHODS), list(plugins.LOADED)
    yield
    METHODS.clear()
    METHODS.update(methods)
    plugins.LOADED[:] = loaded


def dreg_method(backend, seed=0):
    load_plugin(str(DREG))
    torch.manual_seed(seed)
    return METHODS["iwae-dreg"](data_dim=64, num_samples=5, backend=backend).double()


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_dreg_gradients_are_their_definition(backend):
    """For the same draws: p gets IWAE's gradient -sum_i w~_i d log w_i, q gets
    -sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi), the loss's value is the bound."""
    from genvar_bench.data import load_dataset

    x = load_dataset("digits").train[:7].double()
    method = dreg_method(backend)
    torch.manual_seed(1)
    loss = method.loss(x)
    loss.backward()
    got = {name: parameter.grad.clone() for name, parameter in method.named_parameters()}

    method.zero_grad()
    torch.manual_seed(1)
    draw = method.q.sample(x, 5)
    (z,), ((mu, logvar),) = draw.latents, draw.params
    logits = method.p.logits(z)
    log_w = method.ops.iwae_log_weights(logits, x, z, mu.detach(), logvar.detach())
    weights = torch.softmax(log_w.detach(), 0)
    assert loss.item() == pytest.approx(
        -(torch.logsumexp(log_w.detach(), 0) - math.log(5)).mean().item(), abs=1e-10)
    q_params = [parameter for name, parameter in method.named_parameters() if name.startswith("q.")]
    p_params = [parameter for name, parameter in method.named_parameters() if name.startswith("p.")]
    expected_q = torch.autograd.grad(-(weights**2 * log_w).sum(0).mean(), q_params, retain_graph=True)
    # p's gradient with z fixed: IWAE's.
    log_w_fixed = method.ops.iwae_log_weights(method.p.logits(z.detach()), x, z.detach(),
                                              mu.detach(), logvar.detach())
    expected_p = torch.autograd.grad(-(weights * log_w_fixed).sum(0).mean(), p_params)
    q_names = [name for name, _ in method.named_parameters() if name.startswith("q.")]
    p_names = [name for name, _ in method.named_parameters() if name.startswith("p.")]
    for names, expected in ((q_names, expected_q), (p_names, expected_p)):
        for name, value in zip(names, expected):
            torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-12, msg=name)
    # DReG differs from IWAE's own q gradient (the score-function part is gone).
    iwae = method.importance_bound
    method.zero_grad()
    torch.manual_seed(1)
    iwae(x, 5).mean().backward()
    assert not torch.allclose(method.q.layers[0].net[0].weight.grad, got["q.layers.0.net.0.weight"])


def test_a_plugin_method_is_trained_scored_kept_and_rescored_beside_the_built_ins(tmp_path):
    assert cli.main(["run", *FAST, "--plugin", str(DREG), "--method", "iwae-dreg,iwae", "--k", "3",
                     "--out", str(tmp_path)]) == 0
    rows = read_table(tmp_path / "digits" / "quick" / "results.csv").set_index("method")
    assert set(rows.index) == {"iwae", "iwae-dreg"} and (rows["status"] == "ok").all()
    row = rows.loc["iwae-dreg"]
    assert row["nll_estimator"] == "IS k=8" and row["test_iw_bound_k1"] > row["test_nll"] > 0
    model = tmp_path / "digits" / "quick" / "models" / f"{row['artifact']}.safetensors"
    method, info = load_model(model)
    assert info["plugin"] == str(DREG.resolve()) and type(method).__name__ == "IWAEDReG"
    # Another process, which never saw --plugin, is told which plug-in the model needs and
    # loads nothing on the model's say-so; named with --plugin, the model re-scores.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "genvar_bench", "score", str(model), "--no-progress",
               "--csv", str(tmp_path / "scored.csv")]
    refused = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"--plugin {DREG.resolve()}" in refused.stderr.strip().splitlines()[-1]
    result = subprocess.run(command + ["--plugin", str(DREG)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_table(tmp_path / "scored.csv").iloc[0]["test_nll"] == pytest.approx(row["test_nll"], abs=1e-4)


def test_a_kept_model_never_imports_the_plugin_it_names(tmp_path):
    """A model file from elsewhere that names a plug-in file runs none of its code."""
    assert cli.main(["run", *FAST, "--method", "vae", "--k", "1", "--out", str(tmp_path)]) == 0
    row = read_table(tmp_path / "digits" / "quick" / "results.csv").iloc[0]
    model = tmp_path / "digits" / "quick" / "models" / f"{row['artifact']}.safetensors"
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile_plugin.py"
    hostile.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    metadata = json.loads(model.with_suffix(".json").read_text())
    metadata["spec"]["method"], metadata["plugin"] = "hostile-method", str(hostile)
    model.with_suffix(".json").write_text(json.dumps(metadata))
    for command in (["score", str(model), "--no-progress"],
                    ["sample", str(model), "--out", str(tmp_path / "x.png")]):
        with pytest.raises(SystemExit, match=f"--plugin {hostile}"):
            cli.main(command)
    with pytest.raises(ModelFileError, match="is not registered"):
        load_model(model)
    assert not marker.exists()


def test_plugin_errors_are_one_line_and_name_the_plugin(tmp_path):
    with pytest.raises(SystemExit, match="plugin file .*nowhere.py not found"):
        cli.main(["run", "--plugin", str(tmp_path / "nowhere.py"), "--method", "x"])
    empty = tmp_path / "empty_plugin.py"
    empty.write_text("x = 1\n")
    with pytest.raises(SystemExit, match="registered no method"):
        cli.main(["run", "--plugin", str(empty), "--method", "x"])
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('half written')\n")
    with pytest.raises(SystemExit, match="failed to load: RuntimeError: half written"):
        cli.main(["run", "--plugin", str(broken)])
    with pytest.raises(SystemExit, match="no such file or module"):
        cli.main(["run", "--plugin", "not_a_module_anywhere"])
    with pytest.raises(PluginError, match="registered no method"):
        load_plugin(str(empty))


PACKAGE = textwrap.dedent('''
    import torch
    from genvar_bench import Method, Option, register
    from genvar_bench.methods.latent import GaussianLatentMethod


    @register("vae-beta", options=(Option("beta", float, 1.0, "weight of the KL term",
                                          low=0.0, high=10.0),))
    class BetaVAE(GaussianLatentMethod):
        def __init__(self, data_dim, layers=1, num_samples=1, backend="fused", beta=1.0):
            super().__init__(data_dim, layers, num_samples, backend)
            self.beta = beta

        def bound(self, x):
            return -self.log_weights(x, self.num_samples).mean(0)

        def loss(self, x):
            draw = self.q.sample(x, self.num_samples)
            log_w = self.p.log_ratio(x, draw, self.q)
            reconstruction = -self.p.log_likelihood(x, draw.latents)
            return (reconstruction + self.beta * (-log_w - reconstruction)).mean()
''')


def test_an_installed_entry_point_registers_a_method_and_its_option_flag(tmp_path):
    site = tmp_path / "site"
    (site / "beta_methods-0.1.dist-info").mkdir(parents=True)
    (site / "beta_methods.py").write_text(PACKAGE)
    (site / "beta_methods-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beta-methods\nVersion: 0.1\n")
    (site / "beta_methods-0.1.dist-info" / "entry_points.txt").write_text(
        "[genvar_bench.methods]\nbeta = beta_methods\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    command = [sys.executable, "-m", "genvar_bench", "run", *FAST, "--method", "vae-beta",
               "--k", "1", "--out", str(tmp_path / "out")]
    bad = subprocess.run([*command, "--beta", "11"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--beta takes values from 0.0 to 10.0" in bad.stderr
    good = subprocess.run([*command, "--beta", "0.5,1"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert good.returncode == 0, good.stderr[-2000:]
    rows = read_table(tmp_path / "out" / "digits" / "quick" / "results.csv")
    assert sorted(rows["variant"]) == ["beta=0.5", "beta=1.0"] and (rows["status"] == "ok").all()


def test_declared_options_must_fit_their_builder():
    from genvar_bench.registry import Option, register

    with pytest.raises(TypeError, match="does not take as a keyword"):
        @register("test-misdeclared", options=(Option("depth", int, 2, "layers"),))
        def build(data_dim, layers=1, num_samples=1, backend="fused"):
            raise AssertionError("never built")
    with pytest.raises(ValueError, match="declared otherwise by"):
        @register("test-clashing", options=(Option("noise", int, 1, "another noise"),))
        def build_clash(data_dim, layers=1, num_samples=1, backend="fused", noise=1):
            raise AssertionError("never built")
    assert "test-misdeclared" not in METHODS and "test-clashing" not in METHODS
