"""`python -m genvar_bench bench`: speed-up ratios against a stored baseline."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from genvar_bench import cli
from genvar_bench.cli import bench


def write_run(path, fused, eager, compiled):
    def entry(implementation, median):
        return {"group": "op | forward | cpu", "extra_info": {"implementation": implementation},
                "stats": {"median": median}}
    path.write_text(json.dumps({"benchmarks": [entry("fused", fused), entry("eager", eager),
                                               entry("compiled", compiled)]}))
    return path


def test_compare_fails_only_below_the_tolerance():
    stored = {"a": 2.0, "b": 2.0, "c": 2.0}
    results = bench.compare({"a": 1.61, "b": 1.59, "d": 9.0}, stored)
    assert [(name, ok) for name, _, _, ok in results] == [("a", True), ("b", False), ("c", False)]


def test_update_then_compare_against_the_baseline(tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    first = write_run(tmp_path / "first.json", fused=1.0, eager=4.0, compiled=2.0)
    common = ["bench", "--baseline", str(baseline)]
    assert cli.main([*common, "--update-baseline", "--json", str(first)]) == 0
    stored = json.loads(baseline.read_text())
    assert stored["speedups"] == {"op | forward | cpu / vs compiled": 2.0,
                                  "op | forward | cpu / vs eager": 4.0}
    assert stored["torch"] and stored["device"]
    # Slower overall but the same ratios: passes (times are not compared).
    same_ratios = write_run(tmp_path / "same.json", fused=3.0, eager=12.0, compiled=6.0)
    assert cli.main([*common, "--compare", "--json", str(same_ratios)]) == 0
    # The fused op lost 25% against compile: fails, and says which.
    slower = write_run(tmp_path / "slower.json", fused=1.0, eager=4.0, compiled=1.5)
    capsys.readouterr()
    assert cli.main([*common, "--compare", "--json", str(slower)]) == 1
    assert "SLOW     1.50x (baseline 2.00x)  op | forward | cpu / vs compiled" in capsys.readouterr().out


def test_compare_without_a_baseline_says_how_to_make_one(tmp_path):
    run = write_run(tmp_path / "run.json", fused=1.0, eager=4.0, compiled=2.0)
    with pytest.raises(SystemExit, match="--update-baseline"):
        cli.main(["bench", "--compare", "--json", str(run), "--baseline", str(tmp_path / "none.json")])


def test_baseline_files_are_named_after_the_device():
    path = bench.baseline_path("cpu")
    assert path.parent.name == "baselines" and path.name.startswith("cpu-")
    assert path.suffix == ".json" and " " not in path.name


def write_baseline(path, speedups):
    path.write_text(json.dumps({"device": "test", "speedups": speedups}))
    return path


def refusal(*args):
    """`bench ARGS` in-process: its SystemExit message is what stderr shows."""
    with pytest.raises(SystemExit) as exit:
        cli.main(["bench", *args])
    message = exit.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


def bench_stderr(*args):
    """`python -m genvar_bench bench ARGS` as a user runs it, expecting a refusal."""
    result = subprocess.run([sys.executable, "-m", "genvar_bench", "bench", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("tolerance", ["1", "1.5", "-0.1", "nan"])
def test_tolerance_must_be_a_fraction_below_one(tmp_path, tolerance):
    # 0.01x against 35x: any tolerance of 1 or more would pass it.
    baseline = write_baseline(tmp_path / "baseline.json", {"op | forward | cpu / vs eager": 35.0})
    run = write_run(tmp_path / "run.json", fused=1.0, eager=0.01, compiled=0.01)
    message = refusal("--compare", "--tolerance", tolerance, "--json", str(run),
                      "--baseline", str(baseline))
    assert "--tolerance" in message
    with pytest.raises(ValueError):
        bench.compare({"a": 0.01}, {"a": 35.0}, float(tolerance))


def test_a_tolerance_just_below_one_still_fails_a_collapse():
    [(_, _, _, ok)] = bench.compare({"a": 0.01}, {"a": 35.0}, tolerance=0.99)
    assert not ok


@pytest.mark.parametrize("value", [0, -2.0, float("nan"), float("inf"), "35", None, True])
@pytest.mark.parametrize("mode", ["--compare", "--update-baseline"])
def test_a_baseline_entry_that_is_no_positive_number_is_refused(tmp_path, value, mode):
    name = "op | forward | cpu / vs eager"
    baseline = write_baseline(tmp_path / "baseline.json", {name: value, "other / vs eager": 2.0})
    before = baseline.read_text()
    run = write_run(tmp_path / "run.json", fused=1.0, eager=0.01, compiled=0.01)
    message = refusal(mode, "--json", str(run), "--baseline", str(baseline))
    assert str(baseline) in message and name in message
    assert baseline.read_text() == before


def test_update_refuses_to_store_a_zero_speedup(tmp_path):
    baseline = tmp_path / "baseline.json"
    run = write_run(tmp_path / "run.json", fused=1.0, eager=0.0, compiled=2.0)
    message = refusal("--update-baseline", "--json", str(run), "--baseline", str(baseline))
    assert "vs eager" in message and not baseline.exists()


@pytest.mark.parametrize("content, problem", [
    (None, "no benchmark results"),
    ("{not json", "not JSON"),
    ('{"machine_info": {}}', "benchmarks"),
    ("[1, 2]", "benchmarks"),
    ('{"benchmarks": [{"extra_info": {"implementation": "fused"}}]}', "benchmarks"),
])
def test_an_unusable_json_file_is_a_one_line_error(tmp_path, content, problem):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    message = refusal("--json", str(path))
    assert problem in message and str(path) in message


def test_a_missing_json_file_is_one_line_on_stderr(tmp_path):
    line = bench_stderr("--json", str(tmp_path / "none.json"))
    assert "none.json" in line and "--json" in line


def test_a_selection_of_no_benchmark_is_one_line_on_stderr(tmp_path):
    baseline = write_baseline(tmp_path / "baseline.json", {"op | forward | cpu / vs eager": 2.0})
    line = bench_stderr("--compare", "-k", "no_such_benchmark", "--baseline", str(baseline))
    assert "no_such_benchmark" in line


def test_machine_info_names_the_cuda_device(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmarks_conftest", bench.ROOT / "benchmarks" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    machine_info = {}
    conftest.pytest_benchmark_update_machine_info(None, machine_info)
    assert machine_info["cuda_device"] == "NVIDIA H100 80GB HBM3"
