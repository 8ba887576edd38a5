"""Data-parallel training through torch.distributed, on the CPU with the gloo backend and
two processes (torchrun): the same seed gives the same model and bound as one process
with the same global batch."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from genvar_bench.results import read_table

ROOT = Path(__file__).resolve().parents[1]

# Trains a DAE for one epoch (60 global batches of 20) and saves, from process 0, its
# parameters, its training curve and its reconstruction bound on the test set. The DAE's
# code noise is set to 1e-8, below float32 resolution for most codes, so the two runs draw
# (almost) no randomness that depends on how a batch is split.
SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    import torch.distributed as dist
    from genvar_bench import build_method
    from genvar_bench.data import load_dataset
    from genvar_bench.profiles import get_profile
    from genvar_bench.train import train

    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_method("dae", data_dim=64, noise=1e-8)
    stats = train(model, data.train, get_profile("quick").scaled(1), seed=0, show_progress=False)
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.manual_seed(1)
        with torch.no_grad():
            bound = model.loss(data.test).item()
        torch.save({"state": model.state_dict(), "history": stats.history, "bound": bound,
                    "examples": stats.examples}, sys.argv[1])
""")


def launch(tmp_path, processes):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"result-{processes}.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(out)] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", str(script), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_two_processes_train_the_same_model_as_one_with_the_same_global_batch(tmp_path):
    one, two = launch(tmp_path, 1), launch(tmp_path, 2)
    assert one["examples"] == two["examples"] == 1197
    assert abs(one["bound"] - two["bound"]) < 1e-4, (one["bound"], two["bound"])
    assert abs(one["history"][0][2] - two["history"][0][2]) < 1e-4
    for name, value in one["state"].items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_torchrun_run_writes_one_row_from_process_zero(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "genvar_bench", "run", "--dataset", "digits", "--method", "vae", "--k", "1",
               "--epochs", "1", "--eval-samples", "5", "--no-progress", "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_table(tmp_path / "digits" / "quick" / "results.csv")
    assert len(rows) == 1 and rows.iloc[0]["processes"] == 2 and rows.iloc[0]["status"] == "ok"
    assert rows.iloc[0]["test_nll"] > 0


# Runs `run` under torchrun with failures injected on one process: k=1 fails in its loss on
# process 1 (third batch), k=2 fails before training on process 1 (building the model),
# k=3 fails in its loss on process 0; k=4 is untouched.
FAILING = textwrap.dedent("""
    import os, sys
    import genvar_bench.methods as methods
    from genvar_bench.cli import main

    rank, real_build = int(os.environ["RANK"]), methods.build_method

    def build(name, **config):
        k = config["num_samples"]
        if (k, rank) == (2, 1):
            raise RuntimeError("injected: no model on process 1")
        method = real_build(name, **config)
        if (k, rank) in ((1, 1), (3, 0)):
            real_loss, calls = method.loss, []
            def loss(batch):
                calls.append(batch)
                if len(calls) == 3:
                    raise RuntimeError(f"injected: loss fails on process {rank}")
                return real_loss(batch)
            method.loss = loss
        return method

    methods.build_method = build
    sys.exit(main(sys.argv[1:]))
""")


def test_a_configuration_failing_on_one_process_is_a_failed_row_and_the_group_goes_on(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), "run", "--dataset", "digits", "--method", "vae", "--k", "1,2,3,4",
               "--epochs", "1", "--eval-samples", "5", "--no-progress", "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # failed rows: exit 1, not a crash
    rows = read_table(tmp_path / "digits" / "quick" / "results.csv").set_index("k")
    assert list(rows["status"].sort_index()) == ["failed", "failed", "failed", "ok"]
    assert "process 1: RuntimeError: injected: loss fails on process 1" in rows.loc[1, "error"]
    assert "process 1: RuntimeError: injected: no model on process 1" in rows.loc[2, "error"]
    assert "process 0: RuntimeError: injected: loss fails on process 0" in rows.loc[3, "error"]
    assert "process 1" not in rows.loc[3, "error"]
    assert rows.loc[4, "processes"] == 2 and rows.loc[4, "test_nll"] > 0
