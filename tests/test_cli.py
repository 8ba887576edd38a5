"""`python -m genvar_bench run`: rows added, replaced and kept; errors and interrupts."""
import math
import subprocess
import sys

import pytest

from genvar_bench import cli
from genvar_bench import runner
from genvar_bench.results import read_table
from helpers import build_specs

FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress"]


def run(tmp_path, *args):
    return cli.main(["run", *FAST, "--out", str(tmp_path), *args])


def table(tmp_path):
    return read_table(tmp_path / "digits" / "quick" / "results.csv")


def test_run_writes_csv_and_markdown_with_the_expected_columns(tmp_path):
    assert run(tmp_path, "--method", "vae,iwae", "--k", "2") == 0
    rows = table(tmp_path)
    assert sorted(rows["method"]) == ["iwae", "vae"]
    for column in ["train_bound", "test_bound", "test_nll", "nll_estimator", "active_units",
                   "train_examples_per_s", "eval_seconds", "epochs", "parameters",
                   "torch_version", "git_commit", "binarization"]:
        assert column in rows.columns, column
    assert (rows["nll_estimator"] == "IS k=8").all()
    # bounds at k = 1, 5 computed; k = 8 is the NLL itself; k >= 50 exceed eval-samples
    assert rows["test_iw_bound_k1"].notna().all() and rows["test_iw_bound_k5"].notna().all()
    assert rows["test_iw_bound_k50"].isna().all() and rows["test_iw_bound_k5000"].isna().all()
    assert (rows["test_iw_bound_k1"] > rows["test_nll"]).all()
    assert (rows["test_nll"] > 0).all() and (rows["epochs"] == 1).all()
    markdown = (tmp_path / "digits" / "quick" / "results.md").read_text()
    assert "| iwae" in markdown and "test_nll" in markdown


def test_new_rows_are_added_done_ones_skipped_and_forced_ones_replaced(tmp_path, capsys):
    run(tmp_path, "--method", "iwae", "--k", "1")
    first = table(tmp_path)
    run(tmp_path, "--method", "iwae", "--k", "3", "--backend", "reference")
    run(tmp_path, "--method", "iwae", "--k", "1", "--seed", "0")  # done: skipped
    assert "in results, skipped" in capsys.readouterr().err
    rows = table(tmp_path)
    assert len(rows) == 2
    assert set(zip(rows["k"], rows["backend"])) == {(1, "fused"), (3, "reference")}
    assert rows[rows["k"] == 1].iloc[0]["finished_at"] == first.iloc[0]["finished_at"]
    run(tmp_path, "--method", "iwae", "--k", "1", "--force")
    replaced = table(tmp_path)
    assert len(replaced) == 2
    assert replaced[replaced["k"] == 1].iloc[0]["git_commit"] == first.iloc[0]["git_commit"]
    assert (replaced[replaced["k"] == 1].iloc[0]["finished_at"]
            >= first.iloc[0]["finished_at"])


def test_seeds_give_one_row_each(tmp_path):
    assert run(tmp_path, "--method", "vae", "--k", "1", "--seeds", "0,3") == 0
    rows = table(tmp_path)
    assert list(rows["seed"]) == [0, 3] and (rows["status"] == "ok").all()
    assert rows["test_nll"].nunique() == 2


def test_a_failing_method_is_a_failed_row_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    real_run_one = runner.run_one

    def iwae_fails(config, *args, **kwargs):
        if config.method == "iwae":
            raise RuntimeError("the decoder exploded")
        return real_run_one(config, *args, **kwargs)

    monkeypatch.setattr(runner, "run_one", iwae_fails)
    assert run(tmp_path, "--method", "iwae,vae", "--k", "1") == 1
    rows = table(tmp_path).set_index("method")
    assert rows.loc["iwae", "status"] == "failed"
    assert rows.loc["iwae", "error"] == "RuntimeError: the decoder exploded"
    assert rows.loc["vae", "status"] == "ok" and rows.loc["vae", "test_nll"] > 0
    assert "1 failed: iwae" in capsys.readouterr().err
    # A failed row is not done: the next run retries it.
    monkeypatch.setattr(runner, "run_one", real_run_one)
    assert run(tmp_path, "--method", "iwae,vae", "--k", "1") == 0
    rows = table(tmp_path).set_index("method")
    assert (rows["status"] == "ok").all() and rows.loc["iwae", "test_nll"] > 0


def test_run_all_covers_every_method_for_the_data(tmp_path):
    from genvar_bench.profiles import get_profile
    args = cli.build_parser().parse_args(["run", "--all", "--seeds", "0,1"])
    configs = build_specs(args, get_profile("quick"), 64, "binary")
    by_method = {}
    for config in configs:
        by_method.setdefault(config.method, set()).add(config.k)
    assert by_method == {"vae": {1, 5, 50}, "iwae": {1, 5, 50}, "rws": {5}, "dae": {1},
                         "diffusion": {10}, "rbm-cd": {1, 25}, "rbm-pcd": {1}}
    assert len(configs) == 2 * 12 and {config.seed for config in configs} == {0, 1}
    both = cli.build_parser().parse_args(["run", "--all", "--backends", "fused,reference"])
    assert {config.backend for config in build_specs(both, get_profile("quick"), 64)} == {
        "fused", "reference"}
    continuous = build_specs(args, get_profile("quick"), 64, "continuous")
    assert {config.method for config in continuous} == {"diffusion-gauss"}
    with pytest.raises(SystemExit, match="not both"):
        run(tmp_path, "--all", "--method", "vae")


def test_interrupt_keeps_the_finished_rows(tmp_path, monkeypatch):
    real_run_one = runner.run_one
    calls = []

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args, **kwargs)

    monkeypatch.setattr(runner, "run_one", interrupted_second_time)
    assert run(tmp_path, "--method", "vae", "--k", "1,2,3") == 130
    rows = table(tmp_path)
    assert list(rows["k"]) == [1]


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "positive integers"),
    (["--k", "a"], "integers"),
    (["--backend", "magic"], "backend must be among fused, reference"),
    (["--dataset", "cifar"], "invalid choice"),
])
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as error:
        run(tmp_path, *args)
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_method_names_the_known_ones(tmp_path):
    with pytest.raises(SystemExit, match="unknown method gan; known: .*iwae"):
        run(tmp_path, "--method", "gan")


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="sees no CUDA device"):
        run(tmp_path, "--device", "cuda")


def test_module_entry_point_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "genvar_bench", "run", *FAST, "--method", "iwae",
                             "--k", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "test NLL" in result.stderr


def test_rws_and_dae_rows_carry_their_options_and_sample_grids(tmp_path):
    assert run(tmp_path, "--method", "rws,dae", "--latent", "gaussian,binary",
               "--q-update", "mix", "--noise", "0.2") == 0
    rows = table(tmp_path).set_index("variant")
    assert sorted(rows.index) == ["latent=binary,q_update=mix", "latent=gaussian,q_update=mix",
                                  "noise=0.2"]
    assert (rows.loc[rows["method"] == "rws", "k"] == 5).all(), "rws trains at k = 5 by default"
    assert rows.loc["noise=0.2", "k"] == 1
    terms = rows["test_reconstruction"] + rows["test_kl"]
    assert ((terms - rows["test_iw_bound_k1"]).abs() < 3).all(), "both are one-sample bounds"
    assert (rows["test_reconstruction"] > 0).all()
    grids = sorted(path.name for path in (tmp_path / "digits" / "quick" / "samples").iterdir())
    assert grids == sorted(f"{artifact}.png" for artifact in rows["artifact"])
    assert [name.split("-")[:3] for name in grids] == [["dae", "0.2", "k1"], ["rws", "binary", "mix"],
                                                       ["rws", "gaussian", "mix"]]
    import matplotlib.image
    image = matplotlib.image.imread(tmp_path / "digits" / "quick" / "samples" / grids[0])
    assert image.shape[0] > 8 * 10 and image.std() > 0.05


def test_an_option_no_chosen_method_has_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="--noise applies to none of the methods vae"):
        run(tmp_path, "--method", "vae", "--noise", "0.3")
    with pytest.raises(SystemExit) as error:
        run(tmp_path, "--method", "rws", "--q-update", "dream")
    assert error.value.code == 2


def test_tables_written_before_the_variant_column_still_merge(tmp_path):
    run(tmp_path, "--method", "vae", "--k", "1")
    path = tmp_path / "digits" / "quick" / "results.csv"
    old = read_table(path).drop(columns=["variant"])
    old.to_csv(path, index=False)
    run(tmp_path, "--method", "vae", "--k", "1")
    run(tmp_path, "--method", "dae")
    rows = table(tmp_path)
    assert len(rows) == 2 and sorted(rows["method"]) == ["dae", "vae"]


def test_diffusion_rows_report_their_bound_trajectory_bounds_and_a_trajectory_strip(tmp_path):
    assert run(tmp_path, "--method", "diffusion", "--diffusion-steps", "6", "--k", "2",
               "--schedule", "paper,linear") == 0
    rows = table(tmp_path).set_index("variant")
    assert sorted(rows.index) == ["diffusion_steps=6,network=mlp,schedule=linear",
                                  "diffusion_steps=6,network=mlp,schedule=paper"]
    assert (rows["nll_estimator"] == "bound, 6 exact-KL steps").all()
    terms = rows["test_reconstruction"] + rows["test_kl"]
    assert ((terms - rows["test_nll"]).abs() < 1e-6).all()
    # k-trajectory bounds at every k within the budget: 1, 5, 50 and 500 here (T = 6)
    assert rows[["test_iw_bound_k1", "test_iw_bound_k500"]].notna().all().all()
    assert rows["test_iw_bound_k5000"].isna().all() and rows["active_units"].isna().all()
    assert (rows["test_iw_bound_k500"] < rows["test_iw_bound_k1"]).all()
    samples = tmp_path / "digits" / "quick" / "samples"
    paper = rows.loc["diffusion_steps=6,network=mlp,schedule=paper", "artifact"]
    assert paper.startswith("diffusion-6-mlp-paper-k2-L1-s0-cpu-fused-")
    assert (samples / f"{paper}-trajectory.png").exists()


def test_diffusion_steps_default_to_the_profiles():
    from genvar_bench.profiles import get_profile
    args = cli.build_parser().parse_args(["run", "--method", "diffusion,vae"])
    configs = build_specs(args, get_profile("quick"), 64)
    assert [dict(config.options).get("diffusion_steps") for config in configs] == [100, None, None]
    assert configs[0].k == 10


def test_gaussian_diffusion_on_continuous_data_reports_bits_per_dim(tmp_path):
    args = ["--dataset", "digits-grey", "--epochs", "1", "--no-progress", "--out", str(tmp_path),
            "--method", "diffusion-gauss", "--diffusion-steps", "5"]
    assert cli.main(["run", *args]) == 0
    row = read_table(tmp_path / "digits-grey" / "quick" / "results.csv").iloc[0]
    expected = (row["test_nll"] + 64 * math.log(17 / 2)) / (64 * math.log(2))
    assert abs(row["test_bits_per_dim"] - expected) < 1e-9 and expected > 0
    assert cli.main(["run", *args[:1], "swissroll", *args[2:], "--network", "mlp"]) == 0
    artifact = read_table(tmp_path / "swissroll" / "quick" / "results.csv").iloc[0]["artifact"]
    assert (tmp_path / "swissroll" / "quick" / "samples" / f"{artifact}.png").exists()


@pytest.mark.parametrize("method, dataset", [("diffusion-gauss", "digits"), ("vae", "swissroll"),
                                             ("diffusion", "digits-grey")])
def test_a_method_on_the_wrong_kind_of_data_is_an_error(tmp_path, method, dataset):
    with pytest.raises(SystemExit, match=f"{method} cannot model {dataset}"):
        cli.main(["run", "--dataset", dataset, "--method", method, "--out", str(tmp_path)])


def test_rbm_rows_report_ais_log_z_and_the_cd_objective(tmp_path):
    args = ["--dataset", "digits", "--epochs", "2", "--no-progress", "--out", str(tmp_path),
            "--method", "rbm-cd,rbm-pcd", "--hidden", "16"]
    assert cli.main(["run", *args]) == 0
    rows = read_table(tmp_path / "digits" / "quick" / "results.csv")
    assert list(rows["method"]) == ["rbm-cd", "rbm-cd", "rbm-pcd"]
    assert list(rows["k"]) == [1, 25, 1] and (rows["variant"] == "hidden=16").all()
    assert rows["nll_estimator"].str.startswith("AIS log Z (14500 temperatures, 100 runs)").all()
    # -log p(x) = log Z - Z_x, and the bound is the NLL itself (the chain's KL is exact).
    assert ((rows["test_log_z"] - rows["test_neg_free_energy"] - rows["test_nll"]).abs()
            < 1e-6).all()
    assert ((rows["test_bound"] - rows["test_nll"]).abs() < 1e-6).all()
    assert (rows["test_log_z_low"] <= rows["test_log_z"]).all()
    assert (rows["test_log_z"] <= rows["test_log_z_high"]).all()
    assert rows["test_cd_objective"].notna().all() and rows["test_iw_bound_k1"].isna().all()
    assert "test_cd_objective" in (tmp_path / "digits" / "quick" / "results.md").read_text()


def test_rbm_hidden_units_default_to_the_data():
    from genvar_bench.profiles import get_profile
    args = cli.build_parser().parse_args(["run", "--method", "rbm-cd"])
    assert [config.variant for config in build_specs(args, get_profile("quick"), 784)] == [
        "hidden=500", "hidden=500"]
    assert build_specs(args, get_profile("quick"), 64)[0].variant == "hidden=100"


def test_a_killed_training_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    """Checkpoints every epoch; the run is killed in its third epoch; the next run resumes
    and ends with exactly the parameters of an uninterrupted run."""
    import torch

    from genvar_bench import train as training
    from genvar_bench import build_method
    from genvar_bench.data import load_dataset
    from genvar_bench.profiles import get_profile

    data = load_dataset("digits")
    profile = get_profile("quick").scaled(4)

    def fresh(name):
        torch.manual_seed(0)
        return build_method(name, data_dim=64, num_samples=2, hidden=16) if name.startswith(
            "rbm") else build_method(name, data_dim=64, num_samples=2)

    for name in ("vae", "rbm-pcd"):
        reference = fresh(name)
        torch.manual_seed(1)
        full = training.train(reference, data.train, profile, seed=0, show_progress=False)
        checkpoint = tmp_path / f"{name}.pt"
        real_epoch, calls = training._train_epoch, []

        def dies_in_epoch_3(*args):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real_epoch(*args)

        monkeypatch.setattr(training, "_train_epoch", dies_in_epoch_3)
        killed = fresh(name)
        torch.manual_seed(1)
        with pytest.raises(KeyboardInterrupt):
            training.train(killed, data.train, profile, seed=0, show_progress=False,
                           checkpoint=checkpoint, checkpoint_seconds=0)
        monkeypatch.setattr(training, "_train_epoch", real_epoch)
        assert checkpoint.exists()
        torch.manual_seed(123)  # whatever the process did since: the checkpoint restores it
        resumed_model = fresh(name)
        resumed = training.train(resumed_model, data.train, profile, seed=0, show_progress=False,
                                 checkpoint=checkpoint, checkpoint_seconds=0)
        assert resumed.epochs == 4 and [entry[0] for entry in resumed.history] == [1, 2, 3, 4]
        assert [entry[2] for entry in resumed.history] == [entry[2] for entry in full.history]
        for (key, value), (_, expected) in zip(resumed_model.state_dict().items(),
                                               reference.state_dict().items()):
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, expected) or (
                    value.isnan().all() and expected.isnan().all()), key


def test_a_checkpoint_of_another_length_is_not_resumed(tmp_path):
    import torch

    from genvar_bench import build_method
    from genvar_bench.data import load_dataset
    from genvar_bench.profiles import get_profile
    from genvar_bench.train import train

    data = load_dataset("digits")
    checkpoint = tmp_path / "vae.pt"
    train(build_method("vae", data_dim=64), data.train, get_profile("quick").scaled(1), seed=0,
          show_progress=False, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=False)["num_epochs"] == 1
    with pytest.warns(UserWarning, match="starts afresh"):
        stats = train(build_method("vae", data_dim=64), data.train,
                      get_profile("quick").scaled(2), seed=0, show_progress=False,
                      checkpoint=checkpoint)
    assert stats.epochs == 2 and torch.load(checkpoint, weights_only=False)["num_epochs"] == 2
