"""Concurrent writers into one results folder: several `python -m genvar_bench run`
processes (two of them on the same configurations), an `--executor ray` sweep where Ray
starts, and one run SIGKILLed mid-row. Every row that finished is in the store exactly
once, with its kept model (sha256 as recorded); results.csv is the store's rendering; the
killed run left nothing of its unfinished row, and its command, run again, adds it."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from genvar_bench.results import as_table, read_results
from genvar_bench.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("GENVAR_DATA_DIR") or str(REPO.parent / "shared" / "data")
COMMON = ["run", "--dataset", "digits", "--epochs", "1", "--eval-samples", "20"]
QUIET = ["--no-progress"]
# (method, k, seed) of each process's rows, in the order it runs them. "killed" is
# SIGKILLed once the training of its second configuration has begun (its progress bar,
# in its stderr: so it alone shows progress), k=300 making that training last a few
# seconds (about 3 s alone, a row of small k takes under one); "overlap-*" train
# configurations that another process trains at the same time.
LOCAL = {
    "killed": ["--method", "vae", "--k", "1,300", "--seeds", "1"],              # vae k1 s1, k300 s1
    "overlap-vae": ["--method", "vae", "--k", "1", "--seeds", "0,1", *QUIET],   # vae k1 s0, k1 s1
    "iwae": ["--method", "iwae", "--k", "2", "--seeds", "0", *QUIET],           # iwae k2 s0
    "overlap-iwae": ["--method", "iwae", "--k", "2", "--seeds", "0", *QUIET],   # iwae k2 s0 again
}
KILLED_TRAINING = "vae k=300 L=1:"  # the progress bar of the killed run's second training
RAY = ["--method", "iwae", "--k", "1", "--seeds", "0", "--executor", "ray", "--cpus-per-run", "1",
       *QUIET]
# Seconds from the start of that training to the kill: well inside it.
KILL_DELAY_SECONDS = 0.3
DEADLINE_SECONDS = 200  # for all the concurrent runs together
RAY_START_SECONDS = 90  # a Ray that has not started a task by then is given up on
TITLE = re.compile(r"^\[\d+/\d+\] (?P<method>\S+) k=(?P<k>\d+) L=1 on digits "
                   r"\(cpu, fused, seed (?P<seed>\d+)\)")
FINISHED = re.compile(r"^\s+test NLL -?\d")  # a row's line (the progress bar's is "test NLL:")


class Run:
    """A `run` subprocess in its own session, its stderr in a file."""

    def __init__(self, name: str, args: list[str], out: Path, logs: Path):
        self.name, self.args = name, [*COMMON, *args, "--out", str(out)]
        self.log = logs / f"{name}.log"
        env = {**os.environ, "GENVAR_DATA_DIR": DATA_DIR, "OMP_NUM_THREADS": "1"}
        with open(self.log, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "genvar_bench", *self.args],
                                            cwd=logs, env=env, stdout=subprocess.DEVNULL,
                                            stderr=stderr, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def finished_rows(self) -> list[tuple[str, int, int]]:
        """(method, k, seed) of each row this run reported finished ("test NLL")."""
        rows, current = [], None
        for line in self.text().splitlines():  # progress bars' \r ends a line too
            title = TITLE.match(line)
            if title:
                current = (title["method"], int(title["k"]), int(title["seed"]))
            elif FINISHED.match(line):
                assert current is not None, self.text()
                rows.append(current)
        return rows

    def wait(self, deadline: float) -> int:
        try:
            return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} did not finish in time:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        """Ends this run and what it started (a local Ray), by its session."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


def wait_for(condition, seconds: float, step: float = 0.05) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return False


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_concurrent_runs_and_a_killed_one_leave_each_finished_row_once(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    folder = out / "digits" / "quick"
    runs = {name: Run(name, args, out, logs) for name, args in LOCAL.items()}
    if ray_available():
        runs["ray"] = Run("ray", RAY, out, logs)
    killed = runs["killed"]
    try:
        # The killed run: SIGKILL once its second configuration is training, mid-row.
        assert wait_for(lambda: KILLED_TRAINING in killed.text() or killed.process.poll() is not None,
                        DEADLINE_SECONDS, step=0.02), killed.text()
        time.sleep(KILL_DELAY_SECONDS)
        assert killed.process.poll() is None, f"it ended before the kill:\n{killed.text()}"
        os.kill(killed.process.pid, signal.SIGKILL)
        assert killed.process.wait(timeout=30) == -signal.SIGKILL
        assert killed.finished_rows() == [("vae", 1, 1)], killed.text()
        assert ("vae", 300, 1) not in {(row["method"], row["k"], row["seed"])
                                     for _, row in read_results(folder).iterrows()}

        deadline = time.monotonic() + DEADLINE_SECONDS
        if "ray" in runs:
            ray = runs["ray"]
            started = wait_for(lambda: "submitted" in ray.text() or ray.process.poll() is not None,
                               RAY_START_SECONDS, step=0.5)
            if not started or "submitted" not in ray.text():
                ray.stop()
                warnings.warn(f"Ray did not start here; the sweep without it:\n{ray.text()[-2000:]}")
                del runs["ray"]
        for name, run in runs.items():
            if run is not killed:
                assert run.wait(deadline) == 0, f"{name}:\n{run.text()[-3000:]}"
    finally:
        for run in runs.values():
            run.stop()

    # The killed command, run again: its finished row skipped, the killed one added.
    again = Run("killed-again", LOCAL["killed"], out, logs)
    try:
        assert again.wait(time.monotonic() + 120) == 0, again.text()
    finally:
        again.stop()
    assert "in results, skipped" in again.text() and again.finished_rows() == [("vae", 300, 1)]

    finished = [row for run in [*runs.values(), again] for row in run.finished_rows()]
    expected = {("vae", 1, 0), ("vae", 1, 1), ("vae", 300, 1), ("iwae", 2, 0)}
    if "ray" in runs:
        assert runs["ray"].finished_rows() == [("iwae", 1, 0)], runs["ray"].text()
        expected.add(("iwae", 1, 0))
    assert set(finished) == expected
    assert finished.count(("vae", 1, 1)) == 2 and finished.count(("iwae", 2, 0)) == 2  # overlapped

    table = read_results(folder)
    keys = [(row["method"], int(row["k"]), int(row["seed"])) for _, row in table.iterrows()]
    assert sorted(keys) == sorted(expected), table[["method", "k", "seed", "status", "error"]]
    assert table["spec_hash"].is_unique and len(table) == len(expected)
    assert (table["status"] == "ok").all(), table[["method", "k", "seed", "status", "error"]]
    for _, row in table.iterrows():
        model = folder / "models" / f"{row['artifact']}.safetensors"
        assert model.is_file() and model.with_suffix(".json").is_file(), row["artifact"]
        assert file_sha256(model) == row["model_sha256"], row["artifact"]

    # results.csv is the rendering of the store, byte for byte; the database is whole.
    rendered = as_table(Store(folder).rows(), folder).drop(columns=["spec"], errors="ignore")
    assert (folder / "results.csv").read_text() == rendered.to_csv(index=False)
    connection = sqlite3.connect(folder / "results.sqlite")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == len(expected)
    finally:
        connection.close()
