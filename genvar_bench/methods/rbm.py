"""Restricted Boltzmann machines trained by contrastive divergence (the paper's fifth
example), scored by annealed importance sampling.

The RBM: E(x, z) = -x'Wz - b'x - c'z over binary x [D] and z [H]. Writing
Z_x = log sum_z exp(-E(x, z)) = b'x + sum_j softplus(c_j + (W'x)_j) and
Z_z = log sum_x exp(-E(x, z)) = c'z + sum_d softplus(b_d + (Wz)_d), the
conditionals are log q(z|x) = -E(x, z) - Z_x and log p(x|z) = -E(x, z) - Z_z.

The paper's reading: q is the Gibbs chain started at data, x_0 ~ D, z_0 ~ q(z|x_0),
x_1 ~ p(x|z_0), ..., z_k ~ q(z|x_k); p runs it backwards from p(z_k) with the same
(tied) weights. Every conditional cancels except the ends:

    log q(x_0, z_0, ..., x_k, z_k) / p(x_0, z_0, ..., x_k, z_k)
        = log D(x_0) - log p(z_k) + Z_{z_k} - Z_{x_0}.

The "CD objective" column is the mean of Z_{z_k} - Z_{x_0} over chains from the
test set. With p(z_k) the RBM's own marginal, exp(Z_z) / Z, the chain's KL is
the model's: log q/p = log D(x_0) - (Z_{x_0} - log Z) for every chain, so the
bound the paper builds is the RBM's exact -log p(x) = log Z - Z_x, whatever k.
log Z comes from AIS (`rbm_partition.ais_log_z`) after training.

CD-k follows the gradient of F(x_0) - F(x_k) with F(x) = -Z_x the free energy
and x_k drawn (held fixed) by k Gibbs sweeps from the data: CD-k starts each
update's chains at the batch, PCD (Tieleman 2008) keeps persistent chains.
Here k (the run's `--k`) is the number of Gibbs sweeps per update.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genvar_bench.methods import rbm_partition
from genvar_bench.core import Draw, GenerativeModel, InferenceModel, Method
from genvar_bench.recipes import TrainingRecipe
from genvar_bench.registry import Option, family_defaults, register
from genvar_bench.scoring import Scorer
from genvar_bench.ops.rbm import next_offset

# Learning settings of the RBMs in Salakhutdinov & Murray (2008), after Hinton &
# Salakhutdinov (2006): minibatches of 100 (on MNIST-sized data; on small data such as
# digits, where 100 leaves 12 updates per epoch, the profile's 20), momentum 0.5 for the
# first 5 epochs and 0.9 after, weight decay 2e-4 on the weights. The learning rate
# starts at the method's `learning_rate` and falls linearly to a tenth of it by the last
# epoch. PCD takes a smaller rate: its persistent chains must keep up with the weights
# (the measurement behind 0.01: docs/results.md, "RBM learning rates").
BATCH_SIZE = 100
MOMENTUM_EPOCHS, INITIAL_MOMENTUM, FINAL_MOMENTUM = 5, 0.5, 0.9
WEIGHT_DECAY = 2e-4
FINAL_RATE_FRACTION = 0.1

# AIS for the test NLL, as Salakhutdinov & Murray (2008) ran it.
AIS_RUNS, AIS_TEMPERATURES = 100, 14500
# ... and at the stage ends of the budget curve (`genvar_bench.budget`), fewer.
STAGE_AIS_RUNS, STAGE_AIS_TEMPERATURES = 10, 1000

# Sweeps from the base-rate model to a sample shown in the grid.
SAMPLE_SWEEPS = 1000


def default_hidden_units(data_dim: int) -> int:
    """500 hidden units on MNIST-sized data (the paper's RBM), 100 on small data (digits)."""
    return 500 if data_dim > 256 else 100


class RBM(nn.Module):
    """The weights W [D, H], visible biases b [D] and hidden biases c [H]."""

    def __init__(self, visible_dim: int, hidden_dim: int):
        super().__init__()
        self.weight = nn.Parameter(0.01 * torch.randn(visible_dim, hidden_dim))
        self.visible_bias = nn.Parameter(torch.zeros(visible_dim))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_dim))

    @property
    def parameters_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weight, self.visible_bias, self.hidden_bias

    def visible_log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Z_x [B] = log sum_z exp(-E(x, z)): minus the free energy."""
        return rbm_partition.rbm_visible_log_marginal(x, *self.parameters_tuple)

    def hidden_log_marginal(self, z: torch.Tensor) -> torch.Tensor:
        """Z_z [B] = log sum_x exp(-E(x, z))."""
        return rbm_partition.rbm_hidden_log_marginal(z, *self.parameters_tuple)


class ChainStream:
    """The Philox stream of an RBM's Gibbs chains, shared by its q and p: a seed drawn
    from torch's generator (so fixed by the run's seed) and the next unused offset,
    saved with the model."""

    def __init__(self):
        self.seed = int(torch.randint(2**62, ()).item())
        self.offset = 0

    @torch.no_grad()
    def gibbs(self, ops, rbm: RBM, x: torch.Tensor, sweeps: int, beta: float = 1.0,
              base_visible_bias: torch.Tensor | None = None):
        """(x, z) after `sweeps` Gibbs sweeps from x [B, D] (z: the hidden draw the last x
        came from). Under data-parallel training each process has its own stream: the
        Philox key differs by rank."""
        from genvar_bench.parallel import rank_seed

        seed = rank_seed(self.seed)
        x_out, z = ops.rbm_gibbs(x, *rbm.parameters_tuple, beta, sweeps, seed, self.offset,
                                 base_visible_bias)
        self.offset = next_offset(self.offset, sweeps)
        return x_out, z


class GibbsChain(InferenceModel):
    """q: the Gibbs chain from data with the RBM's (tied) weights, x_0 = x, z_0 ~ q(z | x_0),
    x_1 ~ p(x | z_0), ..., z_k ~ q(z | x_k), k = `sweeps`. Its draw keeps the chain's end
    z_k: along the chain every other conditional cancels in log q / p (module docstring),
    so the chain's own density is not formed."""

    has_log_prob = False
    # Its chains run on the RBM's own conditionals: what RBMGenerative's log ratio is exact for.
    q_family = "rbm-gibbs-chain"

    def __init__(self, rbm: RBM, stream: ChainStream, sweeps: int, backend: str = "fused"):
        super().__init__(backend)
        self.rbm = rbm
        self.stream = stream
        self.sweeps = sweeps

    @torch.no_grad()
    def sample(self, x: torch.Tensor, num_samples: int, q_grad: str | None = None) -> Draw:
        """num_samples chains from each x: latents [z_k [k, B, H]]."""
        self.check_q_grad(q_grad)
        starts = x if num_samples == 1 else x.repeat(num_samples, 1)
        _, z_k = self.stream.gibbs(self.ops, self.rbm, starts, self.sweeps + 1)
        return Draw([z_k.reshape(num_samples, x.shape[0], -1)])


class RBMGenerative(GenerativeModel):
    """p: the RBM, its chain run backwards from p(z_k) = exp(Z_{z_k}) / Z; the same weights
    as q. Holds log Z (from AIS, `RBMScorer.prepare`) and the base-rate model that
    AIS and sampling start from. The joint density of a chain is not formed: `log_ratio`
    is exact without it."""

    has_log_prob = False
    # Exact only for chains of the RBM's own conditionals (the module docstring).
    fused_for_q = "rbm-gibbs-chain"

    # buffers, registered in __init__
    base_visible_bias: torch.Tensor
    log_z: torch.Tensor

    def __init__(self, rbm: RBM, stream: ChainStream, backend: str = "fused"):
        super().__init__(backend)
        self.rbm = rbm
        self.stream = stream
        self.register_buffer("base_visible_bias", torch.zeros(rbm.visible_bias.shape[0]))
        # AIS estimate of log Z: value, low and high 3-sigma values.
        self.register_buffer("log_z", torch.full((3,), math.nan, dtype=torch.float64))

    def log_partition(self) -> float:
        value = self.log_z[0].item()
        if math.isnan(value):
            raise RuntimeError("log Z is not estimated: call RBMScorer().prepare(method, train_data) "
                               "after training, before any bound or NLL")
        return value

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """[B] log p(x) = Z_x - log Z."""
        return self.rbm.visible_log_marginal(x) - self.log_partition()

    def log_ratio(self, x: torch.Tensor, draw: Draw, q: InferenceModel) -> torch.Tensor:
        """[k, B] log p(x, tau) - log q(tau | x) along chains from x with p(z_k) the RBM's
        marginal: Z_x - log Z for every chain (see the module docstring). Another q's
        chain does not cancel so: it needs log p and log q apart, which p lacks."""
        if not self.fuses(q):
            return self.exact_log_ratio(x, draw, q)
        return self.log_marginal(x).expand(draw.latents[0].shape[0], -1)

    @torch.no_grad()
    def sample_latents(self, num_samples: int) -> list[torch.Tensor]:
        """[z [n, H]] after SAMPLE_SWEEPS sweeps from the base-rate model."""
        base = self.base_visible_bias
        x = torch.bernoulli(torch.sigmoid(base).expand(num_samples, -1).contiguous())
        return [self.stream.gibbs(self.ops, self.rbm, x, SAMPLE_SWEEPS)[1]]

    def data_mean(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """p(x = 1 | z)."""
        return torch.sigmoid(latents[0] @ self.rbm.weight.T + self.rbm.visible_bias)

    @torch.no_grad()
    def sample(self, num_samples: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        latents = self.sample_latents(num_samples)
        return torch.bernoulli(self.data_mean(latents)), latents


class RBMMethod(Method):
    """Shared by rbm-cd and rbm-pcd: the RBM, its Philox chain stream, AIS scoring; the
    objective is CD-k (`loss`)."""


    persistent: bool = False
    learning_rate: float = 0.05
    # log Z and the base-rate model were kept on the method before they moved into p.
    moved_state = {"log_z": "p.log_z", "base_visible_bias": "p.base_visible_bias"}
    q: GibbsChain
    p: RBMGenerative
    persistent_chains: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, data_dim: int, layers: int = 1, num_samples: int = 1,
                 backend: str = "fused", hidden: int | None = None):
        if layers != 1:
            raise ValueError(f"an RBM has one hidden layer, got layers={layers}")
        hidden = default_hidden_units(data_dim) if hidden is None else hidden
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        rbm = RBM(data_dim, hidden)
        stream = ChainStream()
        super().__init__(GibbsChain(rbm, stream, num_samples, backend),
                         RBMGenerative(rbm, stream, backend), num_samples, backend)
        self.rbm = rbm
        self.stream = stream
        self.register_buffer("persistent_chains", torch.empty(0, data_dim))
        self.ais_settings = ""

    @property
    def sweeps(self) -> int:
        """Gibbs sweeps per update: what this family's k (`num_samples`) counts."""
        return self.num_samples

    @property
    def chain_seed(self) -> int:
        return self.stream.seed

    @property
    def chain_offset(self) -> int:
        return self.stream.offset

    @chain_offset.setter
    def chain_offset(self, offset: int) -> None:
        self.stream.offset = offset

    def get_extra_state(self):
        return {"chain_seed": self.stream.seed, "chain_offset": self.stream.offset,
                "ais_settings": self.ais_settings}

    def set_extra_state(self, state):
        self.stream.seed = state["chain_seed"]
        self.stream.offset = state["chain_offset"]
        self.ais_settings = state["ais_settings"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "persistent_chains")
        if saved is not None:
            self.persistent_chains = self.persistent_chains.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- the chains ---------------------------------------------------------------

    def gibbs(self, x: torch.Tensor, sweeps: int, beta: float = 1.0,
              base_visible_bias: torch.Tensor | None = None):
        """(x, z) after `sweeps` Gibbs sweeps from x [B, D], on the method's stream."""
        return self.stream.gibbs(self.ops, self.rbm, x, sweeps, beta, base_visible_bias)

    def negative_samples(self, x: torch.Tensor) -> torch.Tensor:
        """x_k: k sweeps from the batch (CD) or from the persistent chains (PCD)."""
        if not self.persistent:
            return self.gibbs(x, self.sweeps)[0]
        if self.persistent_chains.shape[0] == 0:
            # The first update's batch starts the chains; their number stays fixed.
            self.persistent_chains = x.detach().clone()
        self.persistent_chains = self.gibbs(self.persistent_chains, self.sweeps)[0]
        return self.persistent_chains

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """F(x_0) - F(x_k) averaged over the batch: its gradient is the CD-k update
        (x_k held fixed), -<x z'>_data + <x z'>_model with z at its conditional mean."""
        negative = self.negative_samples(x)
        return (self.rbm.visible_log_marginal(negative).mean()
                - self.rbm.visible_log_marginal(x).mean())

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[B] log Z - Z_x: the chain's KL is exact, so the bound is -log p(x) itself
        (with log Z from AIS, an estimate)."""
        return -self.p.log_marginal(x)

    @torch.no_grad()
    def cd_objective(self, x: torch.Tensor) -> torch.Tensor:
        """[B] Z_{z_k} - Z_{x_0} along one chain of q from each x_0 in x: x_k after k
        sweeps, then z_k ~ q(z | x_k) (the hidden draw of sweep k + 1)."""
        z_k = self.q.sample(x, 1).latents[0][0]
        return self.rbm.hidden_log_marginal(z_k) - self.rbm.visible_log_marginal(x)


class RBMRecipe(TrainingRecipe):
    """SGD with momentum (Hinton 2010's guide): weight decay on the weights only, the
    learning rate falling linearly to FINAL_RATE_FRACTION of the method's, the momentum
    raised after MOMENTUM_EPOCHS; batches of BATCH_SIZE on MNIST-sized RBMs."""

    def prepare(self, method, train_data: torch.Tensor) -> None:
        """Visible biases start at the log-odds of the training pixel means (Hinton 2010)."""
        with torch.no_grad():
            method.rbm.visible_bias.copy_(rbm_partition.base_rate_visible_bias(train_data))

    def optimizer(self, method, profile) -> torch.optim.Optimizer:
        return torch.optim.SGD([
            {"params": [method.rbm.weight], "weight_decay": WEIGHT_DECAY},
            {"params": [method.rbm.visible_bias, method.rbm.hidden_bias], "weight_decay": 0.0},
        ], lr=method.learning_rate, momentum=INITIAL_MOMENTUM)

    def epoch_settings(self, method, profile) -> list[dict[str, float]]:
        epochs = profile.epochs
        rate = method.learning_rate
        return [{"lr": rate * (1 - (1 - FINAL_RATE_FRACTION) * epoch / max(1, epochs - 1)),
                 "momentum": INITIAL_MOMENTUM if epoch < MOMENTUM_EPOCHS else FINAL_MOMENTUM}
                for epoch in range(epochs)]

    def batch_size(self, method, profile) -> int:
        return BATCH_SIZE if method.rbm.weight.shape[0] > 256 else profile.batch_size


class RBMScorer(Scorer):
    """log Z by AIS from the base-rate model of the training data (Salakhutdinov & Murray
    2008: 14,500 temperatures, 100 runs); the test NLL is log Z - Z_x, with the free
    energy, the CD objective and log Z's 3-sigma range as its terms."""

    settings = {"ais_runs": AIS_RUNS, "ais_temperatures": AIS_TEMPERATURES}

    @torch.no_grad()
    def prepare(self, method: RBMMethod, train_data: torch.Tensor, show_progress: bool = False, *,
                num_runs: int = AIS_RUNS, num_temperatures: int = AIS_TEMPERATURES) -> None:
        from tqdm.auto import tqdm

        p = method.p
        p.base_visible_bias = rbm_partition.base_rate_visible_bias(train_data).to(p.base_visible_bias)
        with tqdm(total=num_temperatures, desc="AIS", unit="beta", disable=not show_progress,
                  leave=False, dynamic_ncols=True) as bar:
            result = rbm_partition.ais_log_z(
                *method.rbm.parameters_tuple, p.base_visible_bias, num_runs=num_runs,
                num_temperatures=num_temperatures, seed=method.chain_seed, backend=method.backend,
                progress=bar.update)
        p.log_z = torch.tensor([result.log_z, result.log_z_low, result.log_z_high],
                               dtype=torch.float64, device=p.log_z.device)
        method.ais_settings = f"{num_temperatures} temperatures, {num_runs} runs"

    def prepare_check(self, method, batch: torch.Tensor) -> None:
        """A rough log Z (AIS, 2 runs of 100 temperatures) for the check before training."""
        self.prepare(method, batch, num_runs=2, num_temperatures=100)

    def prepare_stage(self, method, train_data: torch.Tensor) -> None:
        """log Z by a shorter AIS (10 runs of 1,000 temperatures) at a budget-curve stage."""
        self.prepare(method, train_data, num_runs=STAGE_AIS_RUNS, num_temperatures=STAGE_AIS_TEMPERATURES)

    def bound_samples(self, method, num_examples, candidates):
        return ()  # every k-sample bound equals the NLL: the weights do not vary

    @torch.no_grad()
    def test_nll(self, method, x: torch.Tensor, eval_samples: int, progress=None):
        log_z = method.p.log_partition()
        chunks: dict[str, list[torch.Tensor]] = {"neg_free_energy": [], "cd_objective": []}
        for start in range(0, x.shape[0], 1000):
            batch = x[start:start + 1000]
            chunks["neg_free_energy"].append(method.rbm.visible_log_marginal(batch))
            chunks["cd_objective"].append(method.cd_objective(batch))
            if progress is not None:
                progress(batch.shape[0])
        terms = {name: torch.cat(values) for name, values in chunks.items()}
        constant = torch.ones_like(terms["neg_free_energy"])
        terms["log_z"] = constant * log_z
        terms["log_z_low"] = constant * method.p.log_z[1].item()
        terms["log_z_high"] = constant * method.p.log_z[2].item()
        return (log_z - terms["neg_free_energy"], f"AIS log Z ({method.ais_settings})", terms)


family_defaults(RBMMethod, recipe=RBMRecipe(), scorer=RBMScorer())


OPTIONS = (Option("hidden", int, None, "hidden units (default 500 on MNIST-sized data, 100 "
                  "on digits)", low=1, high=100_000),)


def option_defaults(profile, data_dim: int) -> dict[str, object]:
    return {"hidden": default_hidden_units(data_dim)}


@register("rbm-cd", default_num_samples=(1, 25), options=OPTIONS, option_defaults=option_defaults,
          k_meaning="Gibbs sweeps per update (CD-k)")
class ContrastiveDivergenceRBM(RBMMethod):
    """CD-k: each update's chains start at the batch (k = 1, 3, 25 in the paper)."""


@register("rbm-pcd", default_num_samples=(1,), options=OPTIONS, option_defaults=option_defaults,
          k_meaning="Gibbs sweeps per update (PCD-k)")
class PersistentContrastiveDivergenceRBM(RBMMethod):
    """PCD-k (Tieleman 2008): one set of chains persists across updates."""

    persistent = True
    learning_rate = 0.01
