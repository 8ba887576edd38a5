"""Dynamic binarization: a fresh Bernoulli draw of every training image on every pass,
the test split's fixed bits kept, and its own row."""
import os

import pytest
import torch

from genvar_bench import cli, data
from genvar_bench.profiles import get_profile
from genvar_bench.results import read_results
from genvar_bench.train import train

FAST = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress"]


def test_dynamic_keeps_the_fixed_test_bits_and_trains_on_grey_levels():
    fixed = data.load_dataset("digits")
    dynamic = data.with_binarization(fixed, "dynamic")
    assert data.with_binarization(fixed, "fixed") is fixed
    assert dynamic.dynamic and not fixed.dynamic
    assert torch.equal(dynamic.test, fixed.test) and torch.equal(dynamic.train, fixed.train)
    grey = dynamic.training_data
    assert grey.shape == fixed.train.shape and 0 <= grey.min() and grey.max() <= 1
    assert ((grey > 0) & (grey < 1)).any(), "grey levels, not bits"
    assert fixed.training_data is fixed.train
    assert dynamic.binarization.startswith("dynamic") and fixed.binarization in dynamic.binarization


@pytest.mark.parametrize("name, message", [("digits-grey", "continuous"),
                                           ("swissroll", "continuous")])
def test_data_without_grey_bits_cannot_be_dynamic(name, message):
    with pytest.raises(ValueError, match=message):
        data.with_binarization(data.load_dataset(name), "dynamic")
    with pytest.raises(ValueError, match="unknown binarization"):
        data.with_binarization(data.load_dataset("digits"), "random")


@pytest.mark.skipif(not os.environ.get("GENVAR_DATA_DIR"), reason="needs GENVAR_DATA_DIR")
def test_fixed_mnist_has_no_grey_levels_to_draw_from():
    with pytest.raises(ValueError, match="no grey levels"):
        data.with_binarization(data.load_dataset("mnist"), "dynamic")


class Recorder(torch.nn.Module):
    """A loss that keeps every batch it was given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches = []

    def loss(self, x):
        self.batches.append(x.clone())
        return self.weight * x.sum()


def batches(binarize, seed=0, epochs=2):
    from genvar_bench.recipes import TrainingRecipe

    model = Recorder()
    grey = torch.full((6, 5), 0.5)
    grey[:, 0], grey[:, 1] = 0.0, 1.0
    profile = get_profile("quick").scaled(epochs)
    profile = type(profile)(**{**profile.__dict__, "batch_size": 3})
    train(model, grey, profile, seed, show_progress=False, recipe=TrainingRecipe(), binarize=binarize)
    return model.batches


def test_each_pass_draws_fresh_bits_from_the_training_generator():
    drawn = batches(binarize=True)
    assert len(drawn) == 4
    every = torch.cat(drawn)
    assert set(every.unique().tolist()) == {0.0, 1.0}
    assert (every[:, 0] == 0).all() and (every[:, 1] == 1).all()  # grey 0 and 1 are certain
    first_pass, second_pass = torch.cat(drawn[:2]), torch.cat(drawn[2:])
    assert not torch.equal(first_pass[:, 2:].sum(0), second_pass[:, 2:].sum(0)) or \
        not torch.equal(first_pass, second_pass)
    assert all(torch.equal(a, b) for a, b in zip(drawn, batches(binarize=True)))  # seeded
    assert not all(torch.equal(a, b) for a, b in zip(drawn, batches(binarize=True, seed=1)))
    assert torch.cat(batches(binarize=False)).unique().numel() == 3  # the grey levels as given


def test_a_dynamic_row_is_its_own_row_beside_the_fixed_one(tmp_path):
    out = str(tmp_path)
    assert cli.main(["run", *FAST, "--out", out, "--method", "vae", "--k", "1"]) == 0
    assert cli.main(["run", *FAST, "--out", out, "--method", "vae", "--k", "1", "--binarization", "dynamic"]) == 0
    table = read_results(tmp_path / "digits" / "quick")
    assert len(table) == 2 and table["spec_hash"].nunique() == 2
    dynamic = table[table["binarization"].str.startswith("dynamic")]
    assert len(dynamic) == 1 and dynamic["test_nll"].iloc[0] != table["test_nll"].iloc[0]
    # rerunning skips it, as any done configuration
    assert cli.main(["run", *FAST, "--out", out, "--method", "vae", "--k", "1", "--binarization", "dynamic"]) == 0
    assert len(read_results(tmp_path / "digits" / "quick")) == 2


def test_dynamic_on_continuous_data_is_one_line_before_any_work(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--dataset", "digits-grey", "--method", "diffusion-gauss",
                  "--binarization", "dynamic", "--out", str(tmp_path)])
    assert "continuous" in str(exit_.value) and not any(tmp_path.iterdir())
