"""Numbers a user can trust: kept and re-scorable models, per-example figures and their
intervals, rows never lost between concurrent runs, impossible or damaged rows never
counted as ok, and bad input refused before any training."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from genvar_bench import cli
from genvar_bench import load_model, results, runner
from genvar_bench import tables as report
from genvar_bench.cli import bench
from genvar_bench.results import read_table

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress"]


def run(out, *args):
    return cli.main(["run", *FAST, "--out", str(out), *args])


def table(out):
    return read_table(out / "digits" / "quick" / "results.csv")


def vae_spec():
    """The spec `run(out, "--method", "vae", "--k", "1")` trains."""
    from genvar_bench.data import load_dataset
    from genvar_bench.profiles import get_profile
    from genvar_bench.spec import make_spec

    profile = get_profile("quick").scaled(1)
    profile = type(profile)(**{**profile.__dict__, "eval_samples": 8})
    return make_spec("vae", (), 1, 1, 0, "cpu", "fused", profile, load_dataset("digits"))


def fake_row(spec, data, device=None, **_):
    """A finished row without training: what `run` records, fast."""
    return {"dataset": data.name, "profile": spec.profile, "status": "ok", "error": "",
            **spec.key_fields(), "spec_hash": spec.hash, "train_bound": 30.0, "test_bound": 31.0,
            "test_nll": 29.0 + spec.seed / 100, "nll_estimator": "IS k=8",
            "train_examples_per_s": 1.0, "eval_seconds": 0.1, "epochs": 1, "parameters": 1,
            "binarization": data.binarization}


# ------------------------------------------------------------------ kept models

def test_a_kept_model_rescores_to_its_row_and_samples(tmp_path, capsys):
    assert run(tmp_path, "--method", "vae,dae", "--k", "1") == 0
    rows = table(tmp_path).set_index("method")
    folder = tmp_path / "digits" / "quick"
    for method in ("vae", "dae"):
        model_path = folder / "models" / f"{rows.loc[method, 'artifact']}.safetensors"
        method_object, info = load_model(model_path)
        assert info["method"] == method and info["seed"] == 0 and info["dataset"] == "digits"
        assert info["data_dim"] == 64 and info["git_commit"] == rows.loc[method, "git_commit"]
        capsys.readouterr()
        scored_csv = tmp_path / "scored.csv"
        assert cli.main(["score", str(model_path), "--no-progress", "--csv", str(scored_csv)]) == 0
        assert "test_nll" in capsys.readouterr().out
        scored = read_table(scored_csv).iloc[-1]
        # The same model, seed and draws: the row's figure within the estimator's noise
        # (here exactly, up to float rounding).
        assert abs(scored["test_nll"] - rows.loc[method, "test_nll"]) < 1e-4
        assert abs(scored["test_bound"] - rows.loc[method, "test_bound"]) < 1e-4
        per_example = runner.read_per_example(folder / "per_example" / f"{rows.loc[method, 'artifact']}.npz")
        assert per_example["test_nll"].shape == (300,)
        assert abs(per_example["test_nll"].mean() - rows.loc[method, "test_nll"]) < 1e-9
        out_png = tmp_path / f"{method}-samples.png"
        assert cli.main(["sample", str(model_path), "--num", "9", "--out", str(out_png)]) == 0
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with torch.no_grad():
            assert method_object.sample(4).shape == (4, 64)


def test_an_rbm_rescores_within_the_ais_uncertainty(tmp_path):
    assert run(tmp_path, "--method", "rbm-cd", "--k", "1", "--hidden", "16") == 0
    row = table(tmp_path).iloc[0]
    model_path = tmp_path / "digits" / "quick" / "models" / f"{row['artifact']}.safetensors"
    scored_csv = tmp_path / "scored.csv"
    assert cli.main(["score", str(model_path), "--no-progress", "--csv", str(scored_csv)]) == 0
    scored = read_table(scored_csv).iloc[0]
    # log Z comes from a fresh AIS run: the NLL moves by its noise only, within the 3-sigma
    # range of the row's AIS estimate.
    width = max(row["test_log_z_high"] - row["test_log_z"], row["test_log_z"] - row["test_log_z_low"])
    assert abs(scored["test_nll"] - row["test_nll"]) <= max(width, 0.05)


def test_a_damaged_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="not a readable model file"):
        cli.main(["score", str(bad)])
    torch.save({"something": 1}, bad)
    with pytest.raises(SystemExit, match="not a genvar-bench model file"):
        cli.main(["sample", str(bad), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="not a readable model file"):
        cli.main(["score", str(tmp_path / "absent.pt")])
    with pytest.raises(SystemExit, match="no such model"):
        cli.main(["score", str(tmp_path / "absent.safetensors")])


# ------------------------------------------------------ intervals over examples

def test_report_gives_intervals_and_paired_differences_from_per_example_files(tmp_path):
    folder = tmp_path / "digits" / "quick"
    rng = np.random.default_rng(0)
    base = rng.normal(20.0, 3.0, size=400)
    # b is a worse by exactly 0.5 per example on seed 0 and 0.7 on seed 1: its paired
    # difference is 0.6 with no spread, while the unpaired interval is wide.
    files = {"a-s0": base, "a-s1": base + 0.2, "b-s0": base + 0.5, "b-s1": base + 0.9}
    rows = []
    for name, values in files.items():
        runner.save_per_example({"test_nll": values, "test_bound": values + 1},
                                folder / "per_example" / f"{name}.npz")
        method, seed = name.split("-s")
        rows.append({"method": method, "variant": "", "k": 1, "layers": 1, "seed": int(seed),
                     "device": "cpu", "backend": "fused", "test_nll": values.mean(),
                     "test_bound": values.mean() + 1, "train_bound": 1.0, "status": "ok",
                     "nll_estimator": "IS k=8", "train_examples_per_s": 1.0, "artifact": name})
    summary = report.summarize(pd.DataFrame(rows), folder).set_index("method")
    averaged = (base + base + 0.2) / 2
    assert summary.loc["a", "test_nll_ci95"] == pytest.approx(
        1.959964 * averaged.std(ddof=1) / math.sqrt(400), rel=1e-5)
    assert summary.loc["a", "best_model"] == "a k=1"
    assert summary.loc["b", "vs_best"] == pytest.approx(0.6)
    assert summary.loc["b", "vs_best_ci95"] == pytest.approx(0.0, abs=1e-9)
    assert summary.loc["a", "test_nll_sd"] == pytest.approx(np.std([base.mean(), base.mean() + 0.2], ddof=1))
    markdown = report.summary_markdown(pd.DataFrame(rows), "t", folder)
    assert "+0.60 ± 0.00" in markdown and "vs best" in markdown


# -------------------------------------------------------- concurrent writers

WRITER = textwrap.dedent("""
    import sys
    from genvar_bench import cli, runner
    from tests.test_trust import fake_row
    runner.run_one = fake_row
    seeds = ",".join(str(seed) for seed in range(int(sys.argv[2]), int(sys.argv[2]) + 12))
    sys.exit(cli.main(["run", "--dataset", "digits", "--method", "vae", "--k", "1", "--no-progress",
                       "--seeds", seeds, "--out", sys.argv[1]]))
""")


def test_two_runs_on_one_folder_lose_no_row(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), str(first)],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for first in (0, 100)]
    for process in processes:
        _, error = process.communicate(timeout=300)
        failures = [line for line in error.decode().splitlines() if "FAILED" in line]
        assert process.returncode == 0, failures or error.decode()[-2000:]
    rows = table(tmp_path / "out")
    assert len(rows) == 24 and sorted(rows["seed"]) == [*range(12), *range(100, 112)]


# ------------------------------------------------ impossible and damaged rows

@pytest.mark.parametrize("change, message", [
    ({"test_nll": math.nan}, "test_nll is missing or NaN"),
    ({"test_bound": math.inf}, "test_bound is inf"),
    ({"test_nll": -6934579.0, "test_bound": -6934570.0}, "negative NLL"),
    ({"test_bound": 20.0, "test_nll": 29.0, "test_bound_gap_se": 0.1}, "below its own NLL"),
])
def test_an_impossible_result_is_a_failed_row_and_is_retried(tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(runner, "run_one", lambda *args, **kwargs: {**fake_row(*args, **kwargs), **change})
    assert run(tmp_path, "--method", "vae", "--k", "1") == 1
    row = table(tmp_path).iloc[0]
    assert row["status"] == "failed" and message in row["error"]
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1") == 0  # not skipped as done
    assert table(tmp_path).iloc[0]["status"] == "ok"


def test_a_bound_below_its_nll_within_the_noise_is_fine():
    row = {"train_bound": 1.0, "test_bound": 28.9, "test_nll": 29.0, "test_bound_gap_se": 0.05}
    assert results.row_problem(row) is None
    assert "below" in results.row_problem({**row, "test_bound_gap_se": 0.01})
    assert results.row_problem({**row, "test_nll": -1.0, "test_bound": -0.5}, binary_data=False) is None


def test_truncated_or_empty_rows_of_an_older_table_read_back_invalid_and_rerun(tmp_path, monkeypatch, capsys):
    """A results.csv written before the store (no results.sqlite) is moved into it once;
    its damaged rows come back invalid and are run again. Once the store exists, edits of
    the CSV change nothing (tests/test_store.py)."""
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1", "--seeds", "0,1,2") == 0
    csv = tmp_path / "digits" / "quick" / "results.csv"
    (csv.parent / "results.sqlite").unlink()
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    emptied = lines[2].split(",")
    emptied[header.index("test_nll")] = ""
    lines[2] = ",".join(emptied)
    lines[3] = lines[3][: len(lines[3]) // 2]  # a row cut short mid-write
    csv.write_text("\n".join(lines) + "\n")
    read = results.read_results(csv)
    assert list(read["status"]) == ["ok", "invalid", "invalid"]
    assert "test_nll is missing or NaN" in read.iloc[1]["error"]
    capsys.readouterr()
    assert run(tmp_path, "--method", "vae", "--k", "1", "--seeds", "0,1,2") == 0
    assert capsys.readouterr().err.count("in results, skipped") == 1  # only seed 0 was done
    rows = table(tmp_path)
    assert sorted(rows.loc[rows["status"] == "ok", "seed"]) == [0, 1, 2]


@pytest.mark.parametrize("commit", ["6420729", "12e4567", "0012345"])
def test_text_that_looks_like_a_number_reads_back_as_written(tmp_path, monkeypatch, commit):
    monkeypatch.setattr(runner, "run_one", lambda *args, **kw: {**fake_row(*args, **kw),
                                                                "git_commit": commit})
    assert run(tmp_path, "--method", "vae", "--k", "1") == 0
    csv = tmp_path / "digits" / "quick" / "results.csv"
    assert results.read_results(csv).iloc[0]["git_commit"] == commit
    assert table(tmp_path).iloc[0]["git_commit"] == commit
    assert run(tmp_path, "--method", "vae", "--k", "1", "--seeds", "1") == 0  # read, merged, rewritten
    assert list(table(tmp_path)["git_commit"]) == [commit, commit]


def test_a_garbage_results_file_is_a_one_line_error(tmp_path):
    csv = tmp_path / "digits" / "quick" / "results.csv"
    csv.parent.mkdir(parents=True)
    csv.write_bytes(b"\x00\xff garbage \"unterminated\n,,,\n")
    with pytest.raises(SystemExit) as error:
        run(tmp_path, "--method", "vae", "--k", "1")
    assert str(csv) in str(error.value) and "\n" not in str(error.value)
    assert not (csv.parent / "models").exists()  # refused before training


# ------------------------------------------------------ refused before training

@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "positive integer"),
    (["--eval-samples", "0"], "positive integer"),
    (["--eval-samples", "x"], "positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--method", "dae", "--noise", "1e6"], "--noise takes values from 0.001 to 100"),
    (["--method", "dae", "--noise", "1e-30"], "--noise takes values from 0.001 to 100"),
    (["--method", "dae", "--noise", "nan"], "--noise takes finite numbers"),
    (["--method", "diffusion", "--diffusion-steps", "1"], "--diffusion-steps takes values from 2"),
    (["--method", "rws", "--q-update", "dream"], "--q-update must be among wake, sleep, mix"),
])
def test_bad_arguments_are_argparse_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as error:
        run(tmp_path, *args)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_an_out_that_is_not_a_writable_folder_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_one", lambda *a, **k: pytest.fail("trained anyway"))
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        run(a_file, "--method", "vae")
    # /proc refuses new folders even to root, who can write into read-only folders.
    with pytest.raises(SystemExit, match="not a writable folder"):
        run(Path("/proc/genvar-bench-results"), "--method", "vae")


def test_repeated_seeds_and_k_run_once_with_a_warning(capsys):
    from genvar_bench.profiles import get_profile

    args = cli.build_parser().parse_args(["run", "--method", "vae", "--k", "5,1,5", "--seeds", "2,2,0"])
    assert "repeats 5" in capsys.readouterr().err
    from helpers import build_specs

    configs = build_specs(args, get_profile("quick"), 64)
    assert [(config.k, config.seed) for config in configs] == [(5, 2), (5, 0), (1, 2), (1, 0)]


# -------------------------------------------------------------- checkpoints

def test_a_corrupt_checkpoint_is_set_aside_and_training_starts_afresh(tmp_path):
    folder = tmp_path / "digits" / "quick" / "checkpoints"
    folder.mkdir(parents=True)
    checkpoint = runner.checkpoint_path(folder.parent, vae_spec())
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match=f"checkpoint {checkpoint} is unreadable"):
        assert run(tmp_path, "--method", "vae", "--k", "1") == 0
    assert table(tmp_path).iloc[0]["status"] == "ok"
    assert len(list(folder.glob(f"{checkpoint.name}.bad-*"))) == 1 and not checkpoint.exists()


def test_force_never_resumes_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1") == 0
    checkpoint = runner.checkpoint_path(tmp_path / "digits" / "quick", vae_spec())
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"left by an earlier run")
    seen = []
    monkeypatch.setattr(runner, "run_one", lambda spec, *a, checkpoint=None, **k: (
        seen.append(checkpoint.exists()), fake_row(spec, *a, **k))[1])
    assert run(tmp_path, "--method", "vae", "--k", "1", "--force") == 0
    assert seen == [False]


# -------------------------------------------------------------------- bench

def test_bench_compare_refuses_an_empty_or_unrelated_baseline_before_running(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmarks", lambda *a: pytest.fail("benchmarks ran"))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"speedups": {}}))
    with pytest.raises(SystemExit, match="holds no speed-ups"):
        cli.main(["bench", "--compare", "--baseline", str(baseline)])
    baseline.write_text("{not json")
    with pytest.raises(SystemExit, match="not a baseline file"):
        cli.main(["bench", "--compare", "--baseline", str(baseline)])
    baseline.write_text(json.dumps({"speedups": {"another op / vs eager": 2.0}}))
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"benchmarks": [
        {"group": "op", "extra_info": {"implementation": name}, "stats": {"median": median}}
        for name, median in (("fused", 1.0), ("eager", 3.0))]}))
    with pytest.raises(SystemExit, match="compared nothing"):
        cli.main(["bench", "--compare", "--baseline", str(baseline), "--json", str(run_json)])
