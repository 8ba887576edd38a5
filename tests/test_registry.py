"""The registry's records, the thin Method, and the earlier API kept: a method class that
defines its own optimizer, schedule or scoring (as plug-ins did) still trains and scores
by them; class attributes of the earlier API still declare what `run` needs."""
import torch

from genvar_bench import Method, register
from genvar_bench.core import Method as CoreMethod
from genvar_bench.data import load_dataset
from genvar_bench.methods.latent import GaussianLatentMethod
from genvar_bench.methods.rbm import RBMRecipe, RBMScorer
from genvar_bench.profiles import get_profile
from genvar_bench.recipes import LegacyRecipe, TrainingRecipe
from genvar_bench.registry import METHODS, record_of
from genvar_bench.scoring import LegacyScorer, Scorer
from genvar_bench.train import train

# What a Method is (q, p, the objective and the bounds built from them), and no more.
METHOD_MEMBERS = {"log_weights", "bound", "loss", "bound_terms", "sample", "trajectory",
                  "importance_bound"}


def test_a_method_holds_q_p_and_the_objective_and_nothing_else():
    public = {name for name, value in vars(CoreMethod).items()
              if not name.startswith("_") and callable(value)}
    assert public == METHOD_MEMBERS
    assert Method is CoreMethod


def test_each_built_in_family_has_its_recipe_and_scorer():
    for name in ("rbm-cd", "rbm-pcd"):
        assert isinstance(METHODS[name].recipe, RBMRecipe) and isinstance(METHODS[name].scorer, RBMScorer)
        assert METHODS[name].scoring_settings == {"ais_runs": 100, "ais_temperatures": 14500}
    for name in ("vae", "iwae", "rws"):
        assert type(METHODS[name].recipe) is TrainingRecipe and type(METHODS[name].scorer) is Scorer
    assert type(METHODS["dae"].scorer).__name__ == "DAEScorer"
    assert type(METHODS["diffusion"].scorer).__name__ == "DiffusionScorer"
    assert METHODS["rbm-cd"].k_meaning.startswith("Gibbs sweeps")
    assert "data_kind" not in vars(METHODS["vae"].builder)  # nothing set on the class


class EarlierAPI(GaussianLatentMethod):
    """A plug-in written to the earlier API: its recipe and scoring as its own members,
    its declarations as class attributes."""

    k_meaning = "importance samples, of the earlier API"
    default_num_samples = (3,)
    scored_with: list = []

    def bound(self, x):
        return self.importance_bound(x, self.num_samples)

    def make_optimizer(self, profile):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def epoch_settings(self, profile):
        return [{"lr": 0.01}] * profile.epochs

    def prepare_scoring(self, train_data):
        self.scored_with.append(train_data.shape[0])

    def test_nll(self, x, eval_samples, progress=None):
        return torch.full((x.shape[0],), 42.0), "constant", None


def test_a_class_of_the_earlier_api_trains_and_scores_by_its_own_members():
    register("earlier-api")(EarlierAPI)
    try:
        record = METHODS["earlier-api"]
        assert isinstance(record.recipe, LegacyRecipe) and isinstance(record.scorer, LegacyScorer)
        assert record.k_meaning == "importance samples, of the earlier API"
        assert record.default_num_samples == (3,)
        torch.manual_seed(0)
        method = EarlierAPI(64, num_samples=2)
        data = load_dataset("digits")
        train(method, data.train[:40], get_profile("quick").scaled(1), seed=0, show_progress=False)
        optimizer = record_of(method).recipe.optimizer(method, get_profile("quick"))
        assert isinstance(optimizer, torch.optim.SGD)
        record_of(method).scorer.prepare(method, data.train[:40])
        assert method.scored_with == [40]
        nll, estimator, _ = record_of(method).scorer.test_nll(method, data.test[:5], 10)
        assert estimator == "constant" and torch.equal(nll, torch.full((5,), 42.0))
        assert record.scorer.bound_samples(method, 5, (1, 5)) == (1, 5)  # not defined: the default
    finally:
        del METHODS["earlier-api"]


def test_a_subclass_or_a_function_keeps_what_its_family_has():
    from genvar_bench import build_method
    from genvar_bench.methods.binomial_diffusion import BinomialDiffusion
    from genvar_bench.methods.rbm import ContrastiveDivergenceRBM

    class LongerDiffusion(BinomialDiffusion):
        pass

    def small_rbm(data_dim, layers=1, num_samples=1, backend="fused"):
        return ContrastiveDivergenceRBM(data_dim, layers, num_samples, backend, hidden=8)

    register("longer-diffusion")(LongerDiffusion)
    register("small-rbm")(small_rbm)
    try:
        longer = METHODS["longer-diffusion"]
        assert longer.options == METHODS["diffusion"].options
        assert longer.option_defaults is METHODS["diffusion"].option_defaults
        assert longer.k_meaning == METHODS["diffusion"].k_meaning
        assert type(longer.scorer).__name__ == "DiffusionScorer"
        method = build_method("small-rbm", data_dim=64)
        assert isinstance(record_of(method).recipe, RBMRecipe)
        assert isinstance(record_of(method).scorer, RBMScorer)
        assert record_of(method).name == "small-rbm"
    finally:
        del METHODS["longer-diffusion"], METHODS["small-rbm"]


def test_a_true_or_false_option_reads_as_written():
    from genvar_bench.registry import Option

    flag = Option("center", bool, False, "center the data")
    assert flag.parse("false,true,0,yes") == [False, True, False, True]
    try:
        flag.check("maybe")
    except ValueError as error:
        assert "true or false" in str(error)
    else:
        raise AssertionError("maybe was accepted")
