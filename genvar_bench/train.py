"""Training loop shared by every method: minibatches, the method's optimizer and
per-epoch settings (Adam with staged learning rates unless the method says otherwise)."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from genvar_bench.atomic import remove_stale_temporaries, write_atomic
from genvar_bench import parallel
from genvar_bench.profiles import Profile
from genvar_bench.recipes import TrainingRecipe
from genvar_bench.registry import record_of


@dataclass
class TrainStats:
    epochs: int = 0
    seconds: float = 0.0
    examples: int = 0
    # (epoch, wall-clock seconds, mean training loss over the epoch)
    history: list[tuple[int, float, float]] = field(default_factory=list)
    # (epochs, test bound, test NLL, evaluation seconds) at the budget curve's stage ends
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")


def train(method, train_data: torch.Tensor, profile: Profile, seed: int,
          show_progress: bool = True, description: str = "train",
          checkpoint: Path | None = None, checkpoint_seconds: float = 300.0,
          recipe: TrainingRecipe | None = None,
          on_epoch: Callable[[TrainStats], None] | None = None,
          binarize: bool = False) -> TrainStats:
    """Trains `method` in place on `train_data` [N, D] (already on the method's device)
    by its training recipe (`recipes.TrainingRecipe`; default: the one it was registered
    with, e.g. Adam on the profile's staged learning rates and batch size).

    With `checkpoint`, the state (model, optimizer, random generators, statistics) is
    saved there at the end of an epoch once `checkpoint_seconds` have passed since the
    last save, and at the end; a checkpoint left by an interrupted run of the same
    length is resumed from, and the run then ends as the uninterrupted one would have
    (on the CPU: bit for bit). `on_epoch(stats)` is called after each epoch (the budget
    curve's evaluations); its time is not training time. With `binarize`, train_data
    holds probabilities (grey levels in [0, 1]) and every batch of every pass is a fresh
    Bernoulli draw from them, from the training generator (dynamic binarization)."""
    parallel.training_started()
    generator = torch.Generator().manual_seed(seed)
    stats, error = TrainStats(), None
    try:
        recipe = recipe or record_of(method).recipe
        recipe.prepare(method, train_data)
        optimizer = recipe.optimizer(method, profile)
        settings = recipe.epoch_settings(method, profile)
        batch_size = recipe.batch_size(method, profile)
        if checkpoint is not None:
            remove_stale_temporaries(checkpoint.parent)  # left by saves killed mid-write
        if checkpoint is not None and checkpoint.exists():
            stats = _resume(checkpoint, method, optimizer, generator, len(settings)) or stats
    except Exception as caught:
        error = caught
    parallel.agree(error, train_data.device, stats.epochs)
    # Under torch.distributed, DistributedDataParallel (which starts every process from
    # process 0's parameters) averages the gradients; alone, the method's loss.
    model = parallel.data_parallel(method, train_data.device) if parallel.world()[1] > 1 else method.loss
    num_examples = train_data.shape[0]
    steps_per_epoch = -(-num_examples // batch_size)
    bar = tqdm(total=len(settings) * steps_per_epoch, initial=stats.epochs * steps_per_epoch,
               desc=description, unit="step", disable=not show_progress, leave=False,
               dynamic_ncols=True)
    start = time.perf_counter() - stats.seconds
    last_save = time.perf_counter()
    for epoch_settings in settings[stats.epochs:]:
        for group in optimizer.param_groups:
            group.update(epoch_settings)
        try:
            epoch_loss = _train_epoch(model, optimizer, train_data, batch_size, generator, bar, binarize)
        except FloatingPointError as error:
            raise FloatingPointError(f"{error} in epoch {stats.epochs + 1} of {len(settings)}") from None
        stats.epochs += 1
        stats.examples += num_examples
        stats.seconds = time.perf_counter() - start
        stats.history.append((stats.epochs, stats.seconds, epoch_loss))
        if on_epoch is not None:
            evaluation_start = time.perf_counter()
            on_epoch(stats)
            start += time.perf_counter() - evaluation_start
        bar.set_postfix(epoch=stats.epochs, loss=f"{epoch_loss:.2f}")
        if checkpoint is not None and parallel.world()[0] == 0 and (
                time.perf_counter() - last_save >= checkpoint_seconds
                or stats.epochs == len(settings)):
            _save_checkpoint(checkpoint, method, optimizer, generator, stats, len(settings))
            last_save = time.perf_counter()
    bar.close()
    return stats


def _save_checkpoint(path: Path, method, optimizer, generator, stats: TrainStats,
                     num_epochs: int) -> None:
    """Written atomically: a crash never leaves half a file. Tensors and plain containers
    only, which torch.load(weights_only=True) reads back."""
    state = {"num_epochs": num_epochs, **_training_state(method, optimizer, generator),
             "stats": dataclasses.asdict(stats)}
    write_atomic(path, lambda temporary: torch.save(state, temporary))


def _training_state(method, optimizer, generator) -> dict:
    """What a resumed run needs besides its statistics (its tensors alias the live ones)."""
    return {"method": method.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _load_training_state(state: dict, method, optimizer, generator) -> None:
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    _check_optimizer_state(optimizer)
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _resume(path: Path, method, optimizer, generator, num_epochs: int) -> TrainStats | None:
    """Loads a checkpoint into the training state. None, with a warning, when it belongs
    to a run of another length (left for that run); also None when it cannot be resumed
    for any reason, which the warning names: it is set aside, and the training state is
    left as it was, so that the run starts afresh rather than failing on every rerun."""
    try:
        # Plain data only: unpickling a planted or foreign file must not run its code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, foreign, or one that would run code
        _discard(path, "is unreadable", error)
        return None
    try:
        _check_checkpoint(state)
    except Exception as error:  # ValueError naming the field, or one a check tripped on
        _discard(path, "cannot be resumed", error)
        return None
    if state["num_epochs"] != num_epochs:
        warnings.warn(f"{path} is from a run of {state['num_epochs']} epochs, not "
                      f"{num_epochs}: training starts afresh")
        return None
    fresh = copy.deepcopy(_training_state(method, optimizer, generator))
    try:
        _check_model_state(state["method"], fresh["method"])
        _load_training_state(state, method, optimizer, generator)
    except Exception as error:  # another model's state, or one a step would fail on
        _load_training_state(fresh, method, optimizer, generator)  # undo a partial load
        _discard(path, "cannot be resumed", error)
        return None
    stats = TrainStats(**{"curve": [], **state["stats"]})  # checkpoints from before the curve
    stats.history = [(epoch, seconds, loss) for epoch, seconds, loss in stats.history]
    stats.curve = [(epochs, bound, nll, seconds) for epochs, bound, nll, seconds in stats.curve]
    return stats


def _discard(path: Path, problem: str, error: Exception) -> None:
    aside = _set_aside(path)
    warnings.warn(f"checkpoint {path} {problem} ({type(error).__name__}: {_reason(error)}); "
                  f"moved to {aside.name}, training starts afresh")


def _reason(error: Exception) -> str:
    """The message on one line (load_state_dict's first line only says that it failed),
    without torch.load's advice to retry with weights_only=False, which would run the
    file's code: its next line names what the file would have run."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = lines[1:2]
    message = "; ".join(lines)
    return message if len(message) <= 300 else message[:297] + "..."


_CHECKPOINT_FIELDS = {"num_epochs", "method", "optimizer", "generator", "torch_rng",
                      "cuda_rng", "stats"}
_STATS_FIELDS = {field.name for field in dataclasses.fields(TrainStats)}


def _check_checkpoint(state) -> None:
    """Raises ValueError naming the first field that `_save_checkpoint` could not have
    written; the model and optimizer states are checked by their own load_state_dict."""
    _check_fields("checkpoint", state, _CHECKPOINT_FIELDS)
    _require(_is_int(state["num_epochs"]) and state["num_epochs"] >= 1,
             f"num_epochs is {state['num_epochs']!r}, not a positive int")
    for name in ("method", "optimizer"):
        _require(isinstance(state[name], dict), f"{name} is a {type(state[name]).__name__}, not a dict")
    for name in ("generator", "torch_rng"):
        _require(_is_byte_tensor(state[name]), f"{name} is not a uint8 tensor")
    _require(isinstance(state["cuda_rng"], list) and all(map(_is_byte_tensor, state["cuda_rng"])),
             "cuda_rng is not a list of uint8 tensors")
    _check_stats(state["stats"], state["num_epochs"])


def _check_stats(stats, num_epochs: int) -> None:
    _check_fields("stats", {"curve": [], **stats} if isinstance(stats, dict) else stats, _STATS_FIELDS)
    epochs, history = stats["epochs"], stats["history"]
    _require(_is_int(epochs) and 0 <= epochs <= num_epochs,
             f"stats.epochs is {epochs!r}, not an int from 0 to num_epochs {num_epochs}")
    _require(_is_int(stats["examples"]) and stats["examples"] >= 0,
             f"stats.examples is {stats['examples']!r}, not an int >= 0")
    _require(_is_real(stats["seconds"]) and stats["seconds"] >= 0,
             f"stats.seconds is {stats['seconds']!r}, not a number >= 0")
    # One (epoch, seconds, loss) per epoch done, numbered from 1, as `train` appends them.
    _require(isinstance(history, list) and len(history) == epochs and all(
        isinstance(entry, (tuple, list)) and len(entry) == 3 and _is_int(entry[0])
        and entry[0] == number and _is_real(entry[1]) and _is_real(entry[2])
        for number, entry in enumerate(history, 1)),
        "stats.history is not one (epoch, seconds, loss) per epoch done")
    _require(isinstance(stats.get("curve", []), list) and all(
        isinstance(entry, (tuple, list)) and len(entry) == 4 and _is_int(entry[0])
        and all(_is_real(value) for value in entry[1:]) for entry in stats.get("curve", [])),
        "stats.curve is not a list of (epochs, bound, NLL, seconds)")


def _check_fields(where: str, found, expected: set[str]) -> None:
    _require(isinstance(found, dict), f"{where} is a {type(found).__name__}, not a dict")
    missing, unknown = expected - found.keys(), found.keys() - expected
    _require(not missing, f"{where} lacks fields {sorted(map(str, missing))}")
    _require(not unknown, f"{where} has unknown fields {sorted(map(str, unknown))}")


def _check_model_state(saved: dict, expected: dict) -> None:
    """Methods size their empty buffers (persistent chains, prior codes) as loaded; any
    other difference from this model's shapes would fail at the first step, on every rerun.
    (load_state_dict itself reports missing, unknown and misshapen parameters.)"""
    for key, value in saved.items():
        want = expected.get(key)
        if isinstance(want, torch.Tensor) and isinstance(value, torch.Tensor):
            _require(value.dim() == want.dim() and all(
                size in (0, got) for got, size in zip(value.shape, want.shape)),
                f"method state {key} has shape {tuple(value.shape)}, not {tuple(want.shape)}")


def _check_optimizer_state(optimizer) -> None:
    """load_state_dict checks only the number of parameters per group: a moment or
    momentum of another shape would fail at the first step, on every rerun. (Adam's and
    SGD's per-parameter tensors are scalars or the parameter's shape.)"""
    for parameter, state in optimizer.state.items():
        for name, value in state.items():
            _require(not isinstance(value, torch.Tensor) or value.dim() == 0
                     or value.shape == parameter.shape,
                     f"optimizer state {name} has shape {tuple(getattr(value, 'shape', ()))}, "
                     f"not its parameter's {tuple(parameter.shape)}")


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_byte_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _set_aside(path: Path) -> Path:
    """Renames a bad checkpoint to <name>.bad-<time>, kept for inspection; returns the new path."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # under torchrun, another process of the group moved it first
        pass
    return aside


def _train_epoch(model, optimizer, train_data, batch_size, generator, bar,
                 binarize: bool = False) -> float:
    """One pass over train_data in global batches of batch_size; `model(batch)` is the loss.
    Under torch.distributed each of the W processes takes every W-th row of a batch and
    weights its loss by W times its share of the batch: DistributedDataParallel's mean of
    the W gradients is then the gradient of the mean loss over the whole batch, as one
    process would take it. A process whose loss raises trains on with zero gradients to the
    epoch's end, where all processes learn of it (`parallel.GroupFailure`)."""
    rank, world = parallel.world()
    order = torch.randperm(train_data.shape[0], generator=generator).to(train_data.device)
    # Summed on the device: reading the loss every step would stall a GPU.
    total = torch.zeros((), dtype=torch.float64, device=train_data.device)
    error = None
    for start in range(0, order.numel(), batch_size):
        rows = order[start:start + batch_size]
        if binarize:  # the whole batch drawn by every process: the same bits as one process
            noise = torch.rand(rows.numel(), train_data.shape[1], generator=generator)
            batch = (noise.to(train_data.device) < train_data[rows]).to(train_data.dtype)[rank::world]
        else:
            batch = train_data[rows[rank::world]]
        optimizer.zero_grad(set_to_none=True)
        if world == 1:
            loss = model(batch)
            loss.backward()
            total += loss.detach().double() * batch.shape[0]
        else:
            if error is None and batch.shape[0]:
                try:
                    loss = model(batch)
                    total += loss.detach().double() * batch.shape[0]
                except Exception as caught:
                    error = caught
            if error is None and batch.shape[0]:
                (loss * (world * batch.shape[0] / rows.numel())).backward()
            else:  # every process must join every reduction
                model(batch, stand_in=True).backward()
        optimizer.step()
        bar.update(1)
    if world > 1:
        total = parallel.epoch_total(total, error)
    mean_loss = total.item() / order.numel()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training loss became {mean_loss}: the run diverged")
    return mean_loss
