"""Training loop shared by every method: minibatches, the method's optimizer and
per-epoch settings (Adam with staged learning rates unless the method says otherwise)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from genvar_bench.profiles import Profile


@dataclass
class TrainStats:
    epochs: int = 0
    seconds: float = 0.0
    examples: int = 0
    # (epoch, wall-clock seconds, mean training loss over the epoch)
    history: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")


def train(method, train_data: torch.Tensor, profile: Profile, seed: int,
          show_progress: bool = True, description: str = "train") -> TrainStats:
    """Trains `method` in place on `train_data` [N, D] (already on the method's device),
    with the method's optimizer, per-epoch settings and batch size (by default Adam,
    the profile's staged learning rates and batch size)."""
    generator = torch.Generator().manual_seed(seed)
    method.prepare_training(train_data)
    optimizer = method.make_optimizer(profile)
    settings = method.epoch_settings(profile)
    batch_size = method.training_batch_size(profile)
    num_examples = train_data.shape[0]
    steps_per_epoch = -(-num_examples // batch_size)
    stats = TrainStats()
    bar = tqdm(total=len(settings) * steps_per_epoch, desc=description, unit="step",
               disable=not show_progress, leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    for epoch_settings in settings:
        for group in optimizer.param_groups:
            group.update(epoch_settings)
        epoch_loss = _train_epoch(method, optimizer, train_data, batch_size, generator, bar)
        stats.epochs += 1
        stats.examples += num_examples
        stats.seconds = time.perf_counter() - start
        stats.history.append((stats.epochs, stats.seconds, epoch_loss))
        bar.set_postfix(epoch=stats.epochs, loss=f"{epoch_loss:.2f}")
    bar.close()
    return stats


def _train_epoch(method, optimizer, train_data, batch_size, generator, bar) -> float:
    order = torch.randperm(train_data.shape[0], generator=generator).to(train_data.device)
    # Summed on the device: reading the loss every step would stall a GPU.
    total = torch.zeros((), dtype=torch.float64, device=train_data.device)
    for start in range(0, order.numel(), batch_size):
        batch = train_data[order[start:start + batch_size]]
        loss = method.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * batch.shape[0]
        bar.update(1)
    mean_loss = total.item() / order.numel()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training loss became {mean_loss}: the run diverged")
    return mean_loss
