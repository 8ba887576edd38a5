"""Where this process stands in a torch.distributed group (torchrun)."""
from __future__ import annotations


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group; (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
