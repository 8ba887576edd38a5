"""The speed levers of the training step, each measured alone against the step without
it, interleaved in one process (round robin, `--rounds` rounds of `--steps` steps,
medians of steps per second): the optimizer's for-loop, foreach and fused Adam, and the
whole loss under torch.compile with the genvar ops inside the graph.

    python -m benchmarks.training_levers --method iwae --k 5 --dataset mnist
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.test_training_step import BATCH, DATASETS, batch_of, bench_method


def step_variant(method_name, num_samples, dataset, adam, compiled=False, backend="fused"):
    method, profile, data_dim = bench_method(method_name, num_samples, dataset, backend)
    foreach, fused = {"loop": (False, None), "foreach": (True, None), "fused": (None, True)}[adam]
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3, eps=profile.adam_eps,
                                 foreach=foreach, fused=fused)
    loss_fn = torch.compile(method.loss, dynamic=False) if compiled else method.loss
    batch = batch_of(data_dim)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        optimizer.step()
    return step


def round_robin(steps: dict, rounds: int, steps_per_round: int) -> dict[str, list[float]]:
    """{name: steps per second in each round}: every step warmed up 3 times, then the
    steps timed in turn, `rounds` times over, `steps_per_round` calls each."""
    for step in steps.values():
        for _ in range(3):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            rates[name].append(steps_per_round / (time.perf_counter() - start))
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="iwae")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    variants: dict[str, dict[str, object]] = {f"{backend}, {adam} Adam": dict(adam=adam, backend=backend)
                for backend in ("fused", "reference") for adam in ("loop", "foreach", "fused")}
    if not args.no_compile:
        variants["fused, fused Adam, loss compiled"] = dict(adam="fused", compiled=True)
    steps = {name: step_variant(args.method, args.k, args.dataset, **options)
             for name, options in variants.items()}
    rates = round_robin(steps, args.rounds, args.steps)
    base = statistics.median(rates["fused, loop Adam"])
    print(f"{args.method} k={args.k} {args.dataset} (batch {BATCH}, {torch.get_num_threads()} threads)")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:36s} {median:8.1f} steps/s  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
