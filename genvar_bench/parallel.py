"""The torch.distributed glue, in one place: where this process stands in a group
(`world`), joining one under torchrun (`join_group`), agreeing on failures so that every
process goes on to the next configuration together (`agree`, `GroupFailure`,
`run_in_group`, `epoch_total`), and the DistributedDataParallel wrapper of a method's loss
(`data_parallel`). Outside a group every function is the one-process case."""
from __future__ import annotations

import datetime
import inspect
import os
from typing import Any, Callable

import torch

# Processes 1..N-1 wait in a collective while process 0 scores (AIS, k = 5000 on MNIST:
# up to an hour on a CPU): the default 30-minute timeout would end the group.
GROUP_TIMEOUT = datetime.timedelta(hours=6)


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group; (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def join_group(devices: list[str]) -> tuple[int, list[str]]:
    """Under torchrun (WORLD_SIZE > 1): joins the process group (nccl on GPUs, else gloo)
    and gives each process its GPU. Returns (rank, the devices this process trains on);
    (0, devices) outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, devices
    import torch.distributed as dist

    on_gpu = any(torch.device(device).type == "cuda" for device in devices)
    if on_gpu:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        devices = [f"cuda:{local_rank}"]
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=GROUP_TIMEOUT)
    return dist.get_rank(), devices


def rank_seed(seed: int) -> int:
    """A seed of this process's own: `seed` on process 0, another on each other rank (the
    RBMs' Gibbs streams, which must differ between data-parallel processes)."""
    return (seed + 0x9E3779B9 * world()[0]) % 2**62


# Calls of `train` so far in this process: tells a caller whether a failure came before
# training (where the other processes still wait in `agree`) or from it.
_trainings_started = 0


def training_started() -> None:
    """Called by `train.train` as it starts."""
    global _trainings_started
    _trainings_started += 1


def trainings_started() -> int:
    return _trainings_started


class GroupFailure(RuntimeError):
    """A configuration failed on some process of a torch.distributed group; every process
    raises this at the same point, so all of them go on to the next configuration."""


def agree(error: Exception | None, device: torch.device, epochs: int | None = None) -> None:
    """Called by every process at the same point: raises GroupFailure on all of them
    (naming each failed process and its error) if any passed an error, or if they resumed
    from checkpoints of different progress (`epochs`). Alone, re-raises `error`."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        if error is not None:
            raise error
        return
    reports: list[Any] = [None] * size  # all_gather_object: each process's (message, epochs)
    message = None if error is None else f"{type(error).__name__}: {error}"
    dist.all_gather_object(reports, (message, epochs))
    _raise_failures([report[0] for report in reports], error)
    resumed = {report[1] for report in reports if report[1] is not None}
    if len(resumed) > 1:
        raise GroupFailure(f"the processes resumed from checkpoints at different epochs "
                           f"{sorted(resumed)}: their results folder must be one shared folder")


def _raise_failures(messages: list[str | None], error: Exception | None) -> None:
    failures = [f"process {rank}: {message}" for rank, message in enumerate(messages) if message]
    if failures:
        raise GroupFailure("; ".join(failures)) from error


class _LossModule(torch.nn.Module):
    """A method's training loss as a module's forward, which DistributedDataParallel wraps.
    `stand_in=True`: a zero loss with a (zero) gradient for every parameter, for a process
    whose batch failed, so that it still takes part in every gradient reduction."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch: torch.Tensor, stand_in: bool = False) -> torch.Tensor:
        if stand_in:
            return sum((parameter * 0).sum() for parameter in self.method.parameters())
        return self.method.loss(batch)


def data_parallel(method, device: torch.device):
    """The method's loss wrapped in DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel

    # Buffers stay each process's own after the start (identical then: schedules, empty
    # chains, or one checkpoint's): the RBMs' persistent chains differ by process.
    # (torch 2.13 renamed the option; older releases know only broadcast_buffers.)
    parameters = inspect.signature(DistributedDataParallel).parameters
    buffers: dict[str, Any] = ({"forward_sync_buffers": False} if "forward_sync_buffers" in parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(
        _LossModule(method), **buffers,
        device_ids=[device.index] if device.type == "cuda" and device.index is not None else None)




def epoch_total(total: torch.Tensor, error: Exception | None) -> torch.Tensor:
    """The group's summed training loss of an epoch (each process passes its own sum and
    its error, if any); GroupFailure on every process if any failed."""
    import torch.distributed as dist

    summary = torch.stack([total, total.new_tensor(float(error is not None))])
    dist.all_reduce(summary)
    if summary[1].item():
        messages: list[str | None] = [None] * world()[1]
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
        _raise_failures(messages, error)
    return summary[0]


def run_in_group(run: Callable[[], Any], device: str) -> Any:
    """run(); under torch.distributed, a failure before training on some processes (the
    others then wait in training's first `agree`) is made known to all of them, so the
    group goes on together to the next job. Failures in training are agreed there;
    process 0's scoring involves no other process."""
    started = trainings_started()
    try:
        return run()
    except Exception as error:
        if world()[1] > 1 and trainings_started() == started:
            agree(error, torch.device(device))
        raise
