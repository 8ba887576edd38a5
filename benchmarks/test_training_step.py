"""End-to-end training-step speed: one Adam step of each method at MNIST and digits
sizes (batch 20), the suite's step on both backends against a plain PyTorch
implementation of the same model and objective (benchmarks/plain_models.py), eager and
under torch.compile, and the GEMM-bound limit.

Implementations in each group:
- `fused`, `reference`: `genvar_bench.train`'s step (zero_grad, `method.loss`, backward,
  the running loss total, `optimizer.step`) with the method's own optimizer;
- `eager`, `compiled`: the plain version with `torch.optim.Adam` at its defaults, its loss
  eager or under `torch.compile` (the backward is then compiled too);
- `gemm`: every matrix product of one fused step (captured with a dispatch mode: the
  same shapes, strides and ops), replayed alone: the step's FLOPs at the rate the BLAS
  reaches on those shapes in this run. `gemm` median / `fused` median is the fraction
  of that limit the step reaches.

Run with `python -m pytest benchmarks/test_training_step.py`; conftest.py prints the
ratios. Nothing here asserts a speed.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import genvar_bench  # noqa: F401  (loads the op library)
from benchmarks.plain_models import plain_model_and_loss
from benchmarks.test_iwae_ops import describe
from genvar_bench import build_method
from genvar_bench.registry import record_of
from genvar_bench.profiles import get_profile

BATCH = 20
DATASETS = {"mnist": (784, "standard"), "digits": (64, "quick")}
# (method, k): the IWAE paper's k = 5 and 50, and each other method's default k
METHODS = [("vae", 5), ("vae", 50), ("iwae", 5), ("iwae", 50), ("rws", 5), ("dae", 1),
           ("diffusion", 10)]
CASES = {f"step {method} k={k} {dataset}": (method, k, dataset)
         for dataset in DATASETS for method, k in METHODS}
IMPLEMENTATIONS = ["fused", "reference", "eager", "compiled", "gemm"]
GEMM_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
            torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default}


def batch_of(data_dim):
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((BATCH, data_dim), 0.3), generator=generator)


def bench_method(method_name, num_samples, dataset, backend):
    """(method, profile, data_dim): a registered method at a dataset's size, seeded, with
    the options its profile and data give it."""
    from genvar_bench.registry import resolved_option_defaults

    data_dim, profile_name = DATASETS[dataset]
    profile = get_profile(profile_name)
    torch.manual_seed(0)
    method = build_method(method_name, data_dim=data_dim, layers=1, num_samples=num_samples,
                          backend=backend,
                          **resolved_option_defaults(method_name, profile, data_dim))
    return method, profile, data_dim


def suite_step(method_name, num_samples, dataset, backend):
    """The step `genvar_bench.train._train_epoch` takes on one process."""
    method, profile, data_dim = bench_method(method_name, num_samples, dataset, backend)
    optimizer = record_of(method).recipe.optimizer(method, profile)
    batch = batch_of(data_dim)
    total = torch.zeros((), dtype=torch.float64)

    def step():
        nonlocal total
        optimizer.zero_grad(set_to_none=True)
        loss = method.loss(batch)
        loss.backward()
        total += loss.detach().double() * batch.shape[0]
        optimizer.step()
    return step


def plain_step(method_name, num_samples, dataset, compiled):
    data_dim, _ = DATASETS[dataset]
    torch.manual_seed(0)
    model, loss_fn = plain_model_and_loss(method_name, data_dim, num_samples)
    if compiled:
        torch._dynamo.reset()
        loss_fn = torch.compile(loss_fn, dynamic=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    batch = batch_of(data_dim)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        optimizer.step()
    return step


class _GemmRecorder(TorchDispatchMode):
    """Records (op, [(shape, stride) of each tensor argument]) of every matrix product."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in GEMM_OPS:
            self.calls.append((func, [(arg.shape, arg.stride()) if isinstance(arg, torch.Tensor)
                                      else arg for arg in args]))
        return func(*args, **(kwargs or {}))


def gemm_step(method_name, num_samples, dataset):
    """The matrix products of one fused step, on fresh tensors of the same layouts."""
    step = suite_step(method_name, num_samples, dataset, "fused")
    step()
    recorder = _GemmRecorder()
    with recorder:
        step()
    calls = [(func, [torch.empty_strided(*arg).normal_() if isinstance(arg, tuple) else arg
                     for arg in args]) for func, args in recorder.calls]
    flops = sum(2 * args[-2][0].numel() * args[-1][0][-1] for _, args in recorder.calls)
    return _GemmReplay(calls, flops)


class _GemmReplay:
    """A step's recorded matrix products, replayed when called; `flops`: their FLOPs."""

    def __init__(self, calls, flops):
        self.calls = calls
        self.flops = flops

    def __call__(self):
        for func, args in self.calls:
            func(*args)


@functools.cache
def make_step(case, implementation):
    method_name, num_samples, dataset = CASES[case]
    if implementation in ("fused", "reference"):
        return suite_step(method_name, num_samples, dataset, implementation)
    if implementation == "gemm":
        return gemm_step(method_name, num_samples, dataset)
    return plain_step(method_name, num_samples, dataset, implementation == "compiled")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES)
def test_training_step_speed(benchmark, case, implementation):
    step = make_step(case, implementation)
    for _ in range(3):  # compiles, and warms caches and the allocator, outside the timing
        step()
    method_name, num_samples, dataset = CASES[case]
    benchmark.group = f"{case} | cpu"
    describe(benchmark, "cpu", implementation, method_name,
             dict(k=num_samples, B=BATCH, D=DATASETS[dataset][0]), "training step")
    if implementation == "gemm":
        benchmark.extra_info["gemm_flops"] = step.flops
    benchmark(step)
