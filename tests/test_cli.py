"""`python -m genvar_bench run`: rows added, replaced and kept; errors and interrupts."""
import subprocess
import sys

import pandas as pd
import pytest

from genvar_bench import __main__ as cli
from genvar_bench import runner

FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress"]


def run(tmp_path, *args):
    return cli.main(["run", *FAST, "--out", str(tmp_path), *args])


def table(tmp_path):
    return pd.read_csv(tmp_path / "digits" / "quick" / "results.csv")


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


def test_new_rows_are_added_and_same_configuration_replaced(tmp_path):
    run(tmp_path, "--method", "iwae", "--k", "1")
    first = table(tmp_path)
    run(tmp_path, "--method", "iwae", "--k", "3", "--backend", "reference")
    run(tmp_path, "--method", "iwae", "--k", "1", "--seed", "0")
    rows = table(tmp_path)
    assert len(rows) == 2
    assert set(zip(rows["k"], rows["backend"])) == {(1, "fused"), (3, "reference")}
    replaced = rows[rows["k"] == 1].iloc[0]
    assert replaced["finished_at"] >= first.iloc[0]["finished_at"]


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
    (["--backend", "magic"], "invalid choice"),
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
    assert grids == ["dae-0.2-k1-L1-s0-cpu-fused.png", "rws-binary-mix-k5-L1-s0-cpu-fused.png",
                     "rws-gaussian-mix-k5-L1-s0-cpu-fused.png"]
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
    old = pd.read_csv(path).drop(columns=["variant"])
    old.to_csv(path, index=False)
    run(tmp_path, "--method", "vae", "--k", "1")
    run(tmp_path, "--method", "dae")
    rows = table(tmp_path)
    assert len(rows) == 2 and sorted(rows["method"]) == ["dae", "vae"]
