"""`python -m genvar_bench report`: summary tables over seeds and the figures."""
import json
import math

import pandas as pd
import pytest

from genvar_bench import cli
from genvar_bench import figures
from genvar_bench import tables as report


def rows(**columns):
    base = dict(method="vae", variant="", k=1, layers=1, seed=0, device="cpu", backend="fused",
                test_nll=90.0, test_bound=95.0, nll_estimator="IS k=5000",
                train_examples_per_s=1000.0, status="ok", error="")
    return [{**base, **dict(zip(columns, values))} for values in zip(*columns.values())]


def test_summary_is_mean_and_sd_over_seeds_with_throughput_per_device_and_backend():
    table = pd.DataFrame(
        rows(seed=[0, 1, 2, 0, 0, 3], test_nll=[90.0, 92.0, 94.0, 99.0, 80.0, math.nan],
             backend=["fused", "fused", "fused", "reference", "fused", "fused"],
             device=["cpu", "cpu", "cpu", "cpu", "cuda", "cpu"],
             train_examples_per_s=[1000.0, 1100.0, 900.0, 500.0, 20000.0, math.nan],
             status=["ok", "ok", "ok", "ok", "ok", "failed"],
             error=["", "", "", "", "", "RuntimeError: boom"]))
    summary = report.summarize(table).iloc[0]
    # fused rows of one device (the CPU's: 90, 92, 94), each seed once; the CUDA row's
    # figure is the same model's, shown by its throughput; the failed row is out.
    assert summary["test_nll"] == pytest.approx(92.0)
    assert summary["test_nll_sd"] == pytest.approx(pd.Series([90.0, 92, 94]).std())
    assert summary["seeds"] == 3
    assert summary["ex/s cpu fused"] == pytest.approx(1000.0)
    assert summary["ex/s cuda fused"] == pytest.approx(20000.0)
    assert summary["cpu fused/reference"] == pytest.approx(2.0)
    markdown = report.summary_markdown(table, "t")
    assert "| vae k=1 | 92.00 ± " in markdown and "RuntimeError: boom" in markdown


def test_kernel_speedups_are_ratios_of_medians_in_one_file(tmp_path):
    def bench(group, implementation, median):
        return {"group": group, "extra_info": {"implementation": implementation},
                "stats": {"median": median}}

    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"benchmarks": [
        bench("op a", "fused", 1.0), bench("op a", "eager", 4.0), bench("op a", "compiled", 2.0),
        bench("op b", "eager", 3.0)]}))
    speedups = report.kernel_speedups(path).set_index(["group", "baseline"])["speedup"]
    assert speedups.to_dict() == {("op a", "eager"): 4.0, ("op a", "compiled"): 2.0}
    assert figures.speedup_figure(path, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_report_command_writes_tables_and_figures(tmp_path):
    args = ["run", "--dataset", "digits", "--epochs", "1", "--eval-samples", "5",
            "--no-progress", "--out", str(tmp_path), "--method", "vae", "--k", "1",
            "--seeds", "0,1"]
    assert cli.main(args) == 0
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    directory = tmp_path / "digits" / "quick"
    markdown = (directory / "results.md").read_text()
    assert "| vae k=1 |" in markdown and " ± " in markdown and "## All rows" in markdown
    for name in ("test_nll", "bound_vs_k", "training_curves", "throughput"):
        assert (directory / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert len(list((directory / "histories").glob("*.csv"))) == 2
    history = pd.read_csv(next((directory / "histories").glob("*.csv")))
    assert list(history.columns) == ["epoch", "seconds", "loss"] and len(history) == 1


def test_report_without_results_says_so(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path)]) == 1
    assert "no results under" in capsys.readouterr().err
