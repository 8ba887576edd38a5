"""scripts/gpu_check.sh on this CPU: its arguments, its one clear message where there is
no CUDA torch or no GPU (nothing run, no folder), and, on a pretended GPU (torch patched
at start-up through sitecustomize), that every stage's failure is recorded, the script goes
on to the summary and the total stays within --budget."""
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check_summary  # noqa: E402


def check(*arguments, env_patch: str | None = None, tmp_path: Path | None = None, timeout=120,
          extra_env: dict | None = None):
    import os

    env = {**os.environ, **(extra_env or {})}
    if env_patch is not None:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(textwrap.dedent(env_patch))
        env["PYTHONPATH"] = f"{site}:{ROOT}"
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_help_and_bad_arguments():
    result = check("--help")
    assert result.returncode == 0 and "--budget SECONDS" in result.stdout
    for arguments, message in ((["--frob"], "unknown argument '--frob'"),
                               (["--budget", "30"], "--budget needs an integer >= 60"),
                               (["--epochs", "0"], "--epochs needs an integer >= 1"),
                               (["--eval-samples", "x"], "--eval-samples needs an integer"),
                               (["--out"], "--out needs a value")):
        result = check(*arguments)
        assert result.returncode == 2 and message in result.stderr, (arguments, result.stderr)


def test_dry_run_lists_every_stage_with_its_limit():
    result = check("--dry-run", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names[:6] == ["packages", "build", "kernels", "cuda-tests", "run", "run-grey"]
    assert [name for name in names if name.startswith("bench-")] == [
        "bench-iwae_ops", "bench-sbn_ops", "bench-mixture_ops", "bench-diffusion_ops", "bench-rbm_ops"]
    assert names[-2:] == ["speedups", "compare"]
    assert "GENVAR_CUDA=1" in result.stdout and "--epochs 2" in result.stdout


CPU_ONLY = "import torch\ntorch.version.cuda = None\n"
NO_DEVICE = "import torch\ntorch.version.cuda = '12.8'\ntorch.cuda.device_count = lambda: 0\n"
NO_TORCH = "import sys\nsys.modules['torch'] = None\n"


def test_without_a_gpu_one_clear_message_and_nothing_run(tmp_path):
    out = tmp_path / "out"
    for patch, code, message in (
            (CPU_ONLY, 3, "is a CPU-only build (torch.version.cuda is None)"),
            (NO_DEVICE, 3, "(CUDA 12.8) sees no CUDA GPU"),
            (NO_TORCH, 3, "torch is not installed")):
        result = check("--out", str(out), "--no-install", env_patch=patch, tmp_path=tmp_path)
        assert result.returncode == code, result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not out.exists()


FAKE_GPU = """
    import torch
    torch.version.cuda = "12.8"
    torch.cuda.device_count = lambda: 1
    torch.cuda.get_device_name = lambda *args: "Fake GPU 9000"
    torch.cuda.get_device_capability = lambda *args: (9, 0)
"""


def test_on_a_pretended_gpu_failed_stages_are_recorded_within_the_budget(tmp_path):
    # torch says CUDA but has none: the kernels check and both runs fail, the budget of 60 s
    # (20 s kept for the summary) leaves the benchmarks no time; the summary still comes.
    out = tmp_path / "out"
    began = time.monotonic()
    result = check("--out", str(out), "--no-build", "--no-install", "--budget", "60",
                   env_patch=FAKE_GPU, tmp_path=tmp_path, timeout=300)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr[-2000:]
    assert elapsed < 60 + 10, elapsed
    folder = out / "cuda-fake-gpu-9000"
    stages = pd.read_csv(folder / "stages.tsv", sep="\t", header=None,
                         names=["stage", "status", "seconds", "limit"]).set_index("stage")
    assert stages.loc["kernels", "status"].startswith("FAILED")
    assert stages.loc["run", "status"].startswith("FAILED")
    # How many stages the 40 s leave time for depends on the machine's load: each one is
    # recorded either way, as run (ok, failed, cut) or as skipped for time.
    assert all(status == "ok" or status.startswith(("FAILED", "TIMEOUT", "skipped: out of time"))
               for status in stages["status"]), stages
    assert set(stages.index) >= {"kernels", "cuda-tests", "run", "speedups"}
    summary = (folder / "summary.txt").read_text()
    assert summary in result.stdout and "device: Fake GPU 9000" in summary
    assert "CUDA tests:" in summary and "of the 60 s budget" in summary
    with tarfile.open(out / "cuda-fake-gpu-9000.tar.gz") as archive:
        names = archive.getnames()
    assert {"cuda-fake-gpu-9000/summary.txt", "cuda-fake-gpu-9000/run.log"} <= set(names)


def test_summary_sets_cpu_rows_beside_cuda_rows_and_flags_a_gap(tmp_path):
    csv = tmp_path / "run" / "digits" / "quick" / "results.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame([
        {"dataset": "digits", "method": "vae", "variant": "", "k": 1, "device": "cpu",
         "status": "ok", "test_nll": 20.0, "train_examples_per_s": 9000.0},
        {"dataset": "digits", "method": "vae", "variant": "", "k": 1, "device": "cuda",
         "status": "ok", "test_nll": 20.3, "train_examples_per_s": 30000.0},
        {"dataset": "digits", "method": "dae", "variant": "noise=0.8", "k": 1, "device": "cpu",
         "status": "ok", "test_nll": 20.0, "train_examples_per_s": 9000.0},
        {"dataset": "digits", "method": "dae", "variant": "noise=0.8", "k": 1, "device": "cuda",
         "status": "ok", "test_nll": 21.0, "train_examples_per_s": 20000.0},
    ]).to_csv(csv, index=False)
    (tmp_path / "stages.tsv").write_text("build\tok\t90\t200\nrun\tTIMEOUT after 120 s\t120\t120\n")
    (tmp_path / "speedups.txt").write_text(
        "    2.00x  iwae | cuda / vs eager\n    4.00x  iwae | cuda / vs compiled\n"
        "    1.00x  sbn | cuda / vs eager\n    3.00x  rbm | cuda / vs eager\n")
    text = gpu_check_summary.summary(tmp_path)
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("  digits")}
    assert "20.00    20.30" in lines["vae"] and "CHECK" not in lines["vae"]
    assert "CHECK" in lines["dae"]  # 5% apart
    assert "TIMEOUT after 120 s" in text
    assert "fused vs eager   : 3 groups, min 1.00x, median 2.00x, max 3.00x" in text


def test_merge_joins_benchmark_files_and_skips_unfinished_ones(tmp_path):
    for name, groups in (("a", ["x"]), ("b", ["y", "z"])):
        (tmp_path / f"{name}.json").write_text(
            '{"machine_info": {}, "benchmarks": [%s]}' % ", ".join(f'{{"group": "{group}"}}' for group in groups))
    (tmp_path / "cut.json").write_text('{"benchmarks": [')  # killed while writing
    out = tmp_path / "merged.json"
    assert gpu_check_summary.merge(out, [tmp_path / "a.json", tmp_path / "cut.json", tmp_path / "b.json"]) == 0
    import json
    assert [bench["group"] for bench in json.loads(out.read_text())["benchmarks"]] == ["x", "y", "z"]
    assert gpu_check_summary.merge(out, [tmp_path / "cut.json"]) == 1


def test_stages_past_the_budget_are_skipped_and_recorded(tmp_path):
    # 58 of the 60 s kept for the summary: no stage has the 5 s it needs to start.
    out = tmp_path / "out"
    result = check("--out", str(out), "--no-build", "--no-install", "--budget", "60",
                   env_patch=FAKE_GPU, tmp_path=tmp_path, timeout=120,
                   extra_env={"GPU_CHECK_RESERVE": "58"})
    assert result.returncode == 1, result.stderr[-2000:]
    stages = pd.read_csv(out / "cuda-fake-gpu-9000" / "stages.tsv", sep="\t", header=None,
                         names=["stage", "status", "seconds", "limit"]).set_index("stage")
    assert set(stages["status"]) == {"skipped: out of time"}
    assert set(stages.index) >= {"kernels", "cuda-tests", "run", "speedups"}
    assert "of the 60 s budget" in (out / "cuda-fake-gpu-9000" / "summary.txt").read_text()
