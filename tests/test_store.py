"""The results store and the run specification: a row is its spec's, whole or not at all;
the views cannot change it; a rerun swaps a row and its files together; damage to one
file or one row costs that row, never the table or the sweep."""
import errno
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genvar_bench import cli, results, runner, saved
from genvar_bench import tables as report
from genvar_bench.cli import run as run_command
from genvar_bench.data import load_dataset
from genvar_bench.profiles import get_profile
from genvar_bench.spec import RunSpec, from_json, make_spec
from genvar_bench.store import Store, legacy_spec
from helpers import build_specs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--no-progress"]


def run(out, *args):
    return cli.main(["run", *FAST, "--out", str(out), *args])


def folder_of(out) -> Path:
    return out / "digits" / "quick"


def fake_row(spec, data, device=None, **_):
    """A finished row without training, its NLL telling the budget apart."""
    return {"dataset": data.name, "profile": spec.profile, "status": "ok", "error": "",
            **spec.key_fields(), "spec_hash": spec.hash, "train_bound": 30.0,
            "test_bound": 31.0, "test_nll": 20.0 + spec.epochs + spec.seed / 100,
            "nll_estimator": f"IS k={spec.eval_samples}", "train_examples_per_s": 1.0,
            "eval_seconds": 0.1, "epochs": spec.epochs, "parameters": 1, "artifact": ""}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the spec

def test_a_spec_hash_is_stable_and_covers_every_field():
    data = load_dataset("digits")
    spec = make_spec("vae", (), 5, 1, 0, "cpu:0", "fused", get_profile("quick"), data)
    assert spec.device == "cpu" and from_json(spec.to_json()) == spec
    assert from_json(spec.to_json()).hash == spec.hash and len(spec.hash) == 16
    shorter = make_spec("vae", (), 5, 1, 0, "cpu", "fused", get_profile("quick").scaled(1), data)
    assert shorter.hash != spec.hash and shorter.epochs == 1
    changed = {RunSpec(**{**spec.__dict__, "batch_size": 100}).hash,
               RunSpec(**{**spec.__dict__, "adam_eps": 1e-8}).hash,
               RunSpec(**{**spec.__dict__, "scoring": (("eval_samples", 20),)}).hash,
               RunSpec(**{**spec.__dict__, "binarization": "dynamic"}).hash}
    assert len(changed) == 4 and spec.hash not in changed


def test_cpu_and_cpu0_are_one_run(capsys):
    args = cli.build_parser().parse_args(["run", "--method", "vae", "--k", "1", "--devices", "cpu,cpu:0"])
    assert len(build_specs(args, get_profile("quick"))) == 1
    assert "is the same run as on cpu; it runs once" in capsys.readouterr().err


def test_a_legacy_row_gets_the_spec_a_new_run_of_it_has():
    data = load_dataset("digits")
    profile = get_profile("quick")
    for method, options, k in (("vae", (), 5), ("dae", (("noise", 0.8),), 1),
                               ("rbm-cd", (("hidden", 100),), 25)):
        spec = make_spec(method, options, k, 1, 2, "cpu", "reference", profile, data)
        estimator = ("AIS log Z (14500 temperatures, 100 runs)" if method == "rbm-cd" else "IS k=5000")
        row = {"dataset": "digits", "profile": "quick", "binarization": data.binarization,
               "epochs": 121, "nll_estimator": estimator, **spec.key_fields()}
        assert legacy_spec(row) == spec


# ------------------------------------------------- two budgets are two rows

def test_two_budgets_are_two_rows_and_two_models_in_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "20") == 0
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "30", "--eval-samples", "500",
               "--seeds", "0,1") == 0
    assert "in results, skipped" not in capsys.readouterr().err  # the longer budget trains seed 0
    table = results.read_results(folder_of(tmp_path))
    assert len(table) == 3 and table["spec_hash"].nunique() == 3
    summary = report.summarize(table).set_index("model")
    assert summary.loc["vae k=1 (epochs=1, eval_samples=20)", "seeds"] == 1
    assert summary.loc["vae k=1 (epochs=1, eval_samples=20)", "test_nll"] == pytest.approx(21.0)
    assert summary.loc["vae k=1 (epochs=30, eval_samples=500)", "seeds"] == 2
    assert summary.loc["vae k=1 (epochs=30, eval_samples=500)", "test_nll"] == pytest.approx(50.005)


def test_a_published_figure_says_when_its_setting_is_not_the_rows():
    data = type("Data", (), {"name": "mnist", "binarization": report.FIXED_MNIST})()
    short = make_spec("iwae", (), 5, 1, 0, "cpu", "fused", get_profile("paper").scaled(1), data)
    text = report.published("mnist", "iwae", 5, 1, short)
    assert "87.63" in text and "another setting" in text and "same setting" not in text
    assert "epochs here 1" in text and "3280 epochs" in text
    profile = get_profile("paper")
    full = make_spec("iwae", (), 5, 1, 0, "cpu", "fused", profile, data)
    assert "87.63 (IWAE paper App. D; fixed binarization, IS k=5000, 3280 epochs; same setting)" in \
        report.published("mnist", "iwae", 5, 1, full)


# ------------------------------------------------ the views cannot change a row

def test_a_truncated_or_edited_csv_changes_no_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1") == 0
    csv = folder_of(tmp_path) / "results.csv"
    stored = results.read_results(folder_of(tmp_path)).iloc[0]
    text = csv.read_text()
    nll = repr(float(stored["test_nll"]))
    assert nll in text
    csv.write_text(text[:text.index(nll) + 1])  # cut inside test_nll: "21.0..." -> "2"
    again = results.read_results(folder_of(tmp_path)).iloc[0]
    assert again["test_nll"] == stored["test_nll"] and again["status"] == "ok"
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1") == 0
    assert "in results, skipped" in capsys.readouterr().err
    cli.main(["report", "--out", str(tmp_path)])
    assert results.read_table(csv).iloc[0]["test_nll"] == stored["test_nll"]  # rendered again


def test_rows_are_stored_whole_in_a_transaction(tmp_path):
    data = load_dataset("digits")
    spec = make_spec("vae", (), 1, 1, 0, "cpu", "fused", get_profile("quick"), data)
    store = Store(tmp_path)
    row = {"status": "ok", "test_nll": 1.5, "bad": object()}  # cannot be encoded: nothing stored
    with pytest.raises(TypeError):
        store.write([(spec, {"status": "ok", "test_nll": 2.5}), (spec.with_seed(1), row)])
    assert store.rows() == []
    store.write([(spec, {"status": "ok", "test_nll": 2.5})])
    assert [entry["test_nll"] for entry in store.rows()] == [2.5]
    assert not (tmp_path / "results.sqlite-wal").exists() or \
        (tmp_path / "results.sqlite-wal").stat().st_size == 0  # checkpointed: the file is whole


# ------------------------------------------ a rerun swaps row and files together

def test_a_killed_force_rerun_leaves_the_row_and_its_model_together(tmp_path, monkeypatch):
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "8") == 0
    before = results.read_results(folder_of(tmp_path)).iloc[0]
    model = folder_of(tmp_path) / "models" / f"{before['artifact']}.safetensors"
    assert sha256(model) == before["model_sha256"]

    def killed(*args, **kwargs):  # the rerun's files are written; it dies before its row
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "record_row", killed)
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "8",
               "--force", "--seeds", "0") == 130
    after = results.read_results(folder_of(tmp_path)).iloc[0]
    assert after["artifact"] == before["artifact"] and sha256(model) == after["model_sha256"]
    assert len(list((folder_of(tmp_path) / "models").glob("*.safetensors"))) == 2  # the rerun's beside
    monkeypatch.undo()
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "8",
               "--force") == 0
    final = results.read_results(folder_of(tmp_path)).iloc[0]
    assert final["artifact"] != before["artifact"] and not model.exists()
    method, info = saved.load_model(folder_of(tmp_path) / "models" / f"{final['artifact']}.safetensors")
    assert info["spec"].hash == final["spec_hash"]


# ------------------------------------------------------------ damage contained

def test_a_damaged_per_example_file_costs_its_intervals_not_the_report_or_the_sweep(tmp_path):
    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "8") == 0
    first = results.read_results(folder_of(tmp_path)).iloc[0]
    (folder_of(tmp_path) / "per_example" / f"{first['artifact']}.npz").write_bytes(b"PK\x03\x04 cut")
    with pytest.warns(UserWarning, match="damaged"):
        assert cli.main(["report", "--out", str(tmp_path)]) == 0
    with pytest.warns(UserWarning, match="damaged"):
        assert run(tmp_path, "--method", "vae,iwae", "--k", "1,2", "--epochs", "1",
                   "--eval-samples", "8") == 0
    table = results.read_results(folder_of(tmp_path))
    assert len(table) == 4 and (table["status"] == "ok").all()
    assert "iwae k=2" in (folder_of(tmp_path) / "results.md").read_text()


def test_a_full_disk_is_a_failed_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = saved.save_model

    def full_for_iwae(method, spec, *args, **kwargs):
        if spec.method == "iwae":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(method, spec, *args, **kwargs)

    monkeypatch.setattr(saved, "save_model", full_for_iwae)
    assert run(tmp_path, "--method", "iwae,vae", "--k", "1", "--epochs", "1", "--eval-samples", "8") == 1
    table = results.read_results(folder_of(tmp_path)).set_index("method")
    assert table.loc["iwae", "status"] == "failed"
    assert "No space left on device" in table.loc["iwae", "error"]
    traceback = folder_of(tmp_path) / table.loc["iwae", "traceback"]
    assert "OSError" in traceback.read_text()
    assert table.loc["vae", "status"] == "ok"


# ------------------------------------------------------- the committed tables

def committed_folders():
    return report.results_folders(ROOT / "results")


@pytest.mark.parametrize("folder", committed_folders(), ids=lambda path: str(path.relative_to(ROOT)))
def test_each_committed_table_is_its_stores_rendering(folder):
    assert (folder / "results.sqlite").is_file()
    stored = results.read_results(folder)
    view = results.read_table(folder / "results.csv")
    assert list(view["spec_hash"]) == list(stored["spec_hash"])
    numeric = [name for name in view.columns if name not in results.TEXT_COLUMNS]
    pd.testing.assert_frame_equal(view[numeric].reset_index(drop=True),
                                  stored[numeric].reset_index(drop=True), check_dtype=False)
    for _, row in stored.iterrows():
        spec = from_json(row["spec"])
        assert spec.hash == row["spec_hash"] and spec.seed == row["seed"]


CREATE_AND_WRITE = """
import sys
from genvar_bench.spec import RunSpec
from genvar_bench.store import Store
spec = RunSpec(dataset="digits", binarization="b", profile="quick", method="vae", options=(), k=1,
               layers=1, seed=int(sys.argv[2]), device="cpu", backend="fused", epochs=1,
               stages=((1, 0.001),), batch_size=20, adam_eps=1e-4, scoring=(("eval_samples", 5),))
Store(sys.argv[1]).write([(spec, {"status": "ok", "test_nll": 1.0})])
"""


def test_writers_that_create_the_store_at_once_all_land(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "new"
    writers = [subprocess.Popen([sys.executable, "-c", CREATE_AND_WRITE, str(folder), str(seed)],
                                cwd=ROOT, stderr=subprocess.PIPE) for seed in range(6)]
    errors = [writer.communicate(timeout=300)[1].decode() for writer in writers]
    assert all(writer.returncode == 0 for writer in writers), errors
    assert sorted(row["spec_hash"] for row in Store(folder).rows()) == sorted(
        {json.loads(row["spec"])["seed"]: row["spec_hash"] for row in Store(folder).rows()}.values())
    assert len(Store(folder).rows()) == 6


def test_a_migration_killed_midway_leaves_the_older_table_to_migrate_again(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_one", fake_row)
    assert run(tmp_path, "--method", "vae", "--k", "1", "--seeds", "0,1", "--epochs", "1") == 0
    folder = folder_of(tmp_path)
    (folder / "results.sqlite").unlink()  # as a table written before the store
    real_replace = results.os.replace

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        results.read_results(folder)
    assert not (folder / "results.sqlite").exists()  # no empty store that would hide the rows
    monkeypatch.setattr(results.os, "replace", real_replace)
    assert sorted(results.read_results(folder)["seed"]) == [0, 1]
    assert [path.name for path in folder.iterdir() if "migrating" in path.name] == []


def test_a_failed_row_never_replaces_a_finished_one_in_the_store(tmp_path):
    data = load_dataset("digits")
    spec = make_spec("vae", (), 1, 1, 0, "cpu", "fused", get_profile("quick"), data)
    store = Store(tmp_path)
    store.write([(spec, {"status": "ok", "test_nll": 2.5})])
    store.write([(spec, {"status": "failed", "error": "later"})])
    assert [(row["status"], row["test_nll"]) for row in store.rows()] == [("ok", 2.5)]
    store.write([(spec, {"status": "ok", "test_nll": 3.5})])
    assert [row["test_nll"] for row in store.rows()] == [3.5]


def test_a_damaged_stored_row_costs_that_row_only(tmp_path):
    import sqlite3

    data = load_dataset("digits")
    spec = make_spec("vae", (), 1, 1, 0, "cpu", "fused", get_profile("quick"), data)
    store = Store(tmp_path)
    store.write([(spec, {"status": "ok", "test_nll": 2.5}),
                 (spec.with_seed(1), {"status": "ok", "test_nll": 4.5})])
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE rows SET row = '{not json' WHERE spec_hash = ?", (spec.hash,))
    with pytest.warns(UserWarning, match="not readable"):
        assert [row["test_nll"] for row in store.rows()] == [4.5]


@pytest.fixture
def read_only_models(tmp_path):
    """A results folder whose models/ cannot be written: a read-only bind mount as root
    (where chmod does not stop writes), chmod 500 otherwise."""
    import os
    import subprocess

    assert run(tmp_path, "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "8") == 0
    models = folder_of(tmp_path) / "models"
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(models), str(models)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(models)], check=True)
    else:
        models.chmod(0o500)
    try:
        yield models
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(models)], check=True)
        else:
            models.chmod(0o700)


def test_an_unwritable_models_folder_is_refused_before_any_training(tmp_path, read_only_models, capsys):
    with pytest.raises(OSError):  # the mount is real: nothing can be written there
        (read_only_models / "probe").write_text("x")
    before = {path: sha256(path) for path in folder_of(tmp_path).rglob("*") if path.is_file()}
    with pytest.raises(SystemExit, match=r"models is not a writable folder"):
        run(tmp_path, "--method", "iwae", "--k", "2", "--epochs", "1", "--eval-samples", "8")
    after = {path: sha256(path) for path in folder_of(tmp_path).rglob("*") if path.is_file()}
    assert after == before
