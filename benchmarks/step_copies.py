"""Counts the copies in one IWAE k = 5 training step on MNIST-sized data, by the op that
made them (torch.profiler), with the method's optimizer (`fused`, the default) or the
default torch.optim.Adam, a for-loop on the CPU (`loop`):

    python -m benchmarks.step_copies loop
"""
import collections
import sys

import torch
from torch.profiler import profile

from benchmarks.test_training_step import batch_of
from genvar_bench import build_method
from genvar_bench.registry import record_of
from genvar_bench.profiles import get_profile

COPIES = ("aten::copy_", "aten::_to_copy", "aten::clone")


def main(optimizer_kind="fused"):
    torch.set_num_threads(1)
    batch = batch_of(784)
    method = build_method("iwae", data_dim=784, layers=1, num_samples=5, backend="fused")
    optimizer = (record_of(method).recipe.optimizer(method, get_profile("standard")) if optimizer_kind == "fused"
                 else torch.optim.Adam(method.parameters(), lr=1e-3, eps=1e-4))
    total = torch.zeros((), dtype=torch.float64)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = method.loss(batch)
        loss.backward()
        total.add_(loss.detach().double() * batch.shape[0])
        optimizer.step()

    for _ in range(3):
        step()
    with profile() as profiler:
        step()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for event in profiler.events():
        if event.name in COPIES:
            chain: list[str] = []
            parent = event.cpu_parent
            while parent is not None and len(chain) < 3:
                chain.append(parent.name)
                parent = parent.cpu_parent
            counts[(event.name, " < ".join(chain))] += 1
    for (name, callers), count in counts.most_common():
        print(f"{count:4d}  {name}  < {callers}")
    print(f"total {sum(counts.values())}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
