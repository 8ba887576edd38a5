"""`python -m genvar_bench bench`: speed-up ratios against a stored baseline."""
import json

import pytest

from genvar_bench import cli
from genvar_bench import bench


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
