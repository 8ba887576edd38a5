"""Test NLL against the training budget: evaluated at the stage ends of the IWAE schedule
on a fixed test subset, kept with the row, and without any effect on the trained model or
the row's final figures."""
import json
import math

import pytest
import torch

from genvar_bench import runner
from genvar_bench import train as training
from genvar_bench.budget import STAGE_ENDS, BudgetCurve
from genvar_bench.data import load_dataset
from genvar_bench.profiles import get_profile
from genvar_bench.spec import make_spec

# Figures that measure the machine, not the model.
TIMINGS = {"train_examples_per_s", "train_seconds", "eval_seconds", "finished_at",
           "budget_curve", "budget_curve_estimator", "budget_curve_seconds"}


def spec_of(method, options=(), epochs=5):
    profile = get_profile("quick").scaled(epochs)
    profile = type(profile)(**{**profile.__dict__, "eval_samples": 20})
    return make_spec(method, options, 1, 1, 0, "cpu", "fused", profile, load_dataset("digits"))


@pytest.mark.parametrize("method, options", [("vae", ()), ("rbm-pcd", (("hidden", 16),)),
                                             ("dae", (("noise", 0.8),))])
def test_the_curve_changes_no_figure_of_the_row(method, options):
    data = load_dataset("digits")
    spec = spec_of(method, options)
    without = runner.run_one(spec, data, show_progress=False, budget_curve=False)
    with_curve = runner.run_one(spec, data, show_progress=False)
    for name, value in without.items():
        if name in TIMINGS:
            continue
        other = with_curve[name]
        same = (value == other) or (isinstance(value, float) and math.isnan(value) and math.isnan(other))
        assert same, f"{name}: {value!r} without the curve, {other!r} with it"
    points = json.loads(with_curve["budget_curve"])
    assert [point["epochs"] for point in points] == [1, 4]  # the stage ends within 5 epochs
    assert all(math.isfinite(point["test_nll"]) and point["test_nll"] > 0 for point in points)
    assert with_curve["budget_curve_seconds"] > 0


def test_the_curve_is_at_the_stage_ends_and_survives_a_checkpoint(tmp_path):
    assert STAGE_ENDS[:4] == (1, 4, 13, 40)
    data = load_dataset("digits")
    torch.manual_seed(0)
    method = spec_of("vae").build_method(data.data_dim)
    curve = BudgetCurve(method, data.train, data.test, seed=0)
    checkpoint = tmp_path / "vae.pt"
    stats = training.train(method, data.train, get_profile("quick").scaled(4), seed=0,
                           show_progress=False, checkpoint=checkpoint, checkpoint_seconds=0,
                           on_epoch=curve)
    assert [point[0] for point in stats.curve] == [1, 4]
    fresh = spec_of("vae").build_method(data.data_dim)
    optimizer = torch.optim.Adam(fresh.parameters())
    resumed = training._resume(checkpoint, fresh, optimizer, torch.Generator(), 4)
    assert resumed is not None and resumed.curve == stats.curve
