"""Speed of the fused diffusion KL ops against their pure-PyTorch references, eager and
under torch.compile, forward and forward+backward, on the CPU and (when present) the GPU.

Run with `python -m pytest benchmarks/test_diffusion_ops.py`. Nothing here asserts a
speed: benchmarks/conftest.py prints the speed-ups as ratios of medians taken in the
same run on the same machine. Sizes: T' = 100 step slices of a batch of B = 100 MNIST
images (D = 784), float32, steps drawn uniformly from the T = 1000 steps of the
schedule of Sohl-Dickstein et al. (2015), beta_t = 1 / (T - t + 1) with beta_1 = 1e-3.
"""
from typing import Any, Callable

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from benchmarks.test_iwae_ops import DEVICES, IMPLEMENTATIONS, PASSES, describe, timed_callable
from genvar_bench.ops import (diffusion_binomial_kl_ref, diffusion_gaussian_kl_ref,
                              fused_diffusion_binomial_kl, fused_diffusion_gaussian_kl)

SIZES = dict(T_slices=100, B=100, D=784, T=1000)
FUSED = {"diffusion_binomial_kl": fused_diffusion_binomial_kl,
         "diffusion_gaussian_kl": fused_diffusion_gaussian_kl}
REFERENCES: dict[str, Callable[..., Any]] = {"diffusion_binomial_kl": diffusion_binomial_kl_ref,
                                             "diffusion_gaussian_kl": diffusion_gaussian_kl_ref}


def paper_schedule(num_steps):
    steps = torch.arange(1, num_steps + 1, dtype=torch.float64)
    betas = 1 / (num_steps - steps + 1)
    betas[0] = 1e-3
    return betas


def make_inputs(op_name, device):
    """(inputs, the differentiable ones, upstream gradients of the output); float32."""
    generator = torch.Generator().manual_seed(0)
    num_slices, batch, data_dim, num_steps = SIZES.values()
    shape = (num_slices, batch, data_dim)

    def normal(*size):
        return torch.randn(*size, generator=generator)

    betas = paper_schedule(num_steps)
    steps = torch.randint(1, num_steps + 1, (num_slices, batch), generator=generator)
    if op_name == "diffusion_binomial_kl":
        half = torch.full((batch, data_dim), 0.5)
        x0 = torch.bernoulli(half, generator=generator)
        xt = torch.bernoulli(half.expand(shape), generator=generator)
        outputs = [normal(*shape) * 3]
    else:
        x0 = normal(batch, data_dim)
        abar = torch.cumprod(1 - betas, 0)[steps - 1].unsqueeze(-1).float()
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * normal(*shape)
        outputs = [normal(*shape), normal(*shape) - 3]
    outputs = [output.to(device).requires_grad_() for output in outputs]
    inputs = [x0.to(device), xt.to(device), *outputs, steps.to(device), betas.to(device)]
    return inputs, outputs, [normal(num_slices, batch).to(device)]


def op_for(op_name, implementation):
    if implementation == "fused":
        # The entry point a model uses (on CPU with grad: the one-pass forward-and-gradient op)
        return FUSED[op_name]
    if implementation == "eager":
        return REFERENCES[op_name]
    # A fresh dynamo cache per benchmark: each shape gets its own static graph.
    torch._dynamo.reset()
    return torch.compile(REFERENCES[op_name], fullgraph=True, dynamic=False)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("op_name", list(FUSED))
@pytest.mark.parametrize("device", DEVICES)
def test_diffusion_op_speed(benchmark, device, op_name, pass_name, implementation):
    inputs, differentiable, grad_outputs = make_inputs(op_name, device)
    run = timed_callable(op_for(op_name, implementation), inputs, differentiable, grad_outputs,
                         pass_name, device)
    for _ in range(2):  # compiles, and warms caches and the allocator, outside the timing
        run()
    sizes = "T'={T_slices} B={B} D={D} T={T}".format(**SIZES)
    benchmark.group = f"{op_name} {sizes} | {pass_name} | {device}"
    describe(benchmark, device, implementation, op_name, SIZES, pass_name)
    benchmark(run)
