"""`run --executor ray`: every configuration a Ray task on a local Ray (2 CPUs) started
here; rows written by the driver alone as tasks finish; reruns skip finished rows and retry
failed ones; a worker killed mid-task is rerun by Ray from its checkpoint and its row is the
row of an uninterrupted local run."""
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch

from genvar_bench import runner
from genvar_bench.cli import main
from genvar_bench.cli.run import build_configs, checked_settings
from genvar_bench.results import read_table

TINY = ["run", "--dataset", "digits", "--k", "1", "--eval-samples", "5", "--no-progress"]


FLAKY = """
import os
from genvar_bench import register
from genvar_bench.methods.vae import VAE


@register("flaky")
class Flaky(VAE):
    def prepare_training(self, train_data):
        if os.path.exists({flag!r}):
            raise RuntimeError("flag file present")
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def checked_specs(argv: list[str]) -> list:
    from genvar_bench.cli import build_parser

    args = build_parser().parse_args(argv)
    profile, data, _ = checked_settings(args)
    return [spec for spec, _ in build_configs(args, profile, data)]


def read_rows(out: Path) -> pd.DataFrame:
    return read_table(out / "digits" / "quick" / "results.csv").set_index("method")


def test_a_sweep_runs_as_ray_tasks_and_resumes(local_ray, tmp_path, capsys):
    out = tmp_path / "out"
    # A plug-in method that fails while a flag file exists: its task raises, which is a
    # failed row (not retried by Ray); the plug-in is loaded in each worker too.
    flag = tmp_path / "fail-now"
    flag.write_text("")
    plugin = tmp_path / "flaky_plugin.py"
    plugin.write_text(FLAKY.format(flag=str(flag)))
    command = TINY + ["--plugin", str(plugin), "--method", "vae,flaky", "--epochs", "1",
                      "--out", str(out), "--executor", "ray", "--cpus-per-run", "1"]
    assert main(command) == 1
    rows = read_rows(out)
    assert rows.loc["vae", "status"] == "ok" and rows.loc["vae", "test_nll"] > 0
    assert rows.loc["vae", "threads"] == 1 and rows.loc["vae", "processes"] == 1
    assert rows.loc["flaky", "status"] == "failed"
    assert "flag file present" in rows.loc["flaky", "error"], rows.loc["flaky", "error"]
    assert "submitted" in capsys.readouterr().err

    flag.unlink()
    assert main(command) == 0  # vae skipped, flaky retried
    assert "vae k=1 L=1 on digits (cpu, fused, seed 0): in results, skipped" in capsys.readouterr().err
    again = read_rows(out)
    assert again.loc["vae", "finished_at"] == rows.loc["vae", "finished_at"]
    assert list(again["status"]) == ["ok", "ok"]
    # flaky is vae under another name: the same row, from two tasks
    assert again.loc["flaky", "test_nll"] == again.loc["vae", "test_nll"]


def kill_worker_once(task_prefix: str, checkpoint: Path, killed: list, stop: threading.Event):
    """SIGKILLs the Ray worker running a task named task_prefix... once its checkpoint exists."""
    while not stop.is_set() and not killed:
        if checkpoint.exists():
            for entry in Path("/proc").iterdir():
                try:
                    command = (entry / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if entry.name.isdigit() and command.startswith(task_prefix):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                    return
        time.sleep(0.02)


def test_a_killed_worker_is_retried_and_its_row_is_the_uninterrupted_one(local_ray, tmp_path):
    out = tmp_path / "ray"
    command = TINY + ["--method", "vae", "--epochs", "20", "--checkpoint-minutes", "0"]
    spec = checked_specs(command + ["--out", str(out)])[0]
    checkpoint = runner.checkpoint_path(out / "digits" / "quick", spec)
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=kill_worker_once, daemon=True, args=(
        f"ray::genvar_bench:{spec.file_stem}", checkpoint, killed, stop))
    watcher.start()
    try:
        assert main(command + ["--out", str(out), "--executor", "ray", "--cpus-per-run", "1"]) == 0
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed: the task ended before its first checkpoint"
    row = read_rows(out).loc["vae"]
    assert row["status"] == "ok" and row["epochs"] == 20 and not checkpoint.exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray task (--cpus-per-run 1)
    try:
        assert main(command + ["--out", str(tmp_path / "local")]) == 0
    finally:
        torch.set_num_threads(threads)
    local = read_rows(tmp_path / "local").loc["vae"]
    for column in ("final_train_loss", "train_bound", "test_bound", "test_nll"):
        assert row[column] == local[column], (column, row[column], local[column])


def test_a_plugin_method_runs_in_ray_workers(local_ray, tmp_path):
    """Workers are fresh processes: they load the driver's plugins before the task."""
    from genvar_bench import plugins
    from genvar_bench.registry import METHODS

    methods, loaded = dict(METHODS), list(plugins.LOADED)
    plugin = Path(__file__).resolve().parents[1] / "examples" / "iwae_dreg.py"
    out = tmp_path / "out"
    assert main(TINY + ["--plugin", str(plugin), "--method", "iwae-dreg", "--epochs", "1",
                        "--out", str(out), "--executor", "ray", "--cpus-per-run", "1"]) == 0
    row = read_rows(out).loc["iwae-dreg"]
    assert row["status"] == "ok" and row["test_nll"] > 0
    METHODS.clear()
    METHODS.update(methods)
    plugins.LOADED[:] = loaded
