"""Speed of genvar::mixture_log_density against the matrix formulation in
PyTorch, eager and under torch.compile, on the CPU and (when present) the GPU.

Run with `python -m pytest benchmarks/test_mixture_ops.py`. Nothing here asserts
a speed: benchmarks/conftest.py prints the speed-ups as ratios of medians taken
in the same run. Sizes are those of the DAE's test scoring on MNIST: N = 50,000
training codes of Z = 50 dimensions, M = k x B = 50 x 100 queries per batch;
forward and backward at a tenth of that.
"""
import math
import os

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops.mixture import fused_mixture_log_density

from benchmarks.test_iwae_ops import DEVICES, device_name

IMPLEMENTATIONS = ["fused", "eager", "compiled"]
SCALE = 0.2
# case name -> (pass, M, N, Z)
CASES = {
    "mixture_log_density M=5000 N=50000 Z=50": ("forward", 5000, 50000, 50),
    "mixture_log_density M=500 N=10000 Z=50": ("forward+backward", 500, 10000, 50),
}


def mixture_log_density_matrix(z, centers, scale: float):
    """The usual fast form in PyTorch: squared distances |z|^2 - 2 z.c + |c|^2 by
    addmm, in row chunks of about 2^24 entries (as mixture_log_density_ref), then
    logsumexp. z [M, Z], centers [N, Z] -> [M]."""
    num_components, dim = centers.shape
    log_norm = math.log(num_components) + 0.5 * dim * math.log(2 * math.pi * scale**2)
    center_norms = (centers**2).sum(1)
    rows = max(1, 2**24 // num_components)
    chunks = []
    for start in range(0, z.shape[0], rows):
        queries = z[start:start + rows]
        squared = torch.addmm(center_norms, queries, centers.T, alpha=-2)
        squared = squared + (queries**2).sum(1, keepdim=True)
        chunks.append(torch.logsumexp(squared * (-0.5 / scale**2), dim=1) - log_norm)
    return torch.cat(chunks)


def make_inputs(num_queries, num_components, dim, device):
    """Centers around 2 (away from the origin), queries near them: float32."""
    generator = torch.Generator().manual_seed(0)
    centers = 2 + 1.5 * torch.randn(num_components, dim, generator=generator)
    picks = torch.randint(num_components, (num_queries,), generator=generator)
    z = centers[picks] + SCALE * torch.randn(num_queries, dim, generator=generator)
    return z.to(device), centers.to(device)


def op_for(implementation):
    if implementation == "fused":
        return fused_mixture_log_density
    if implementation == "eager":
        return mixture_log_density_matrix
    torch._dynamo.reset()  # a fresh cache: one static graph per shape
    return torch.compile(mixture_log_density_matrix, fullgraph=True, dynamic=False)


def timed_callable(op, z, centers, pass_name, device):
    """One forward (or forward and backward) pass, finished on the device when it returns."""
    upstream = torch.ones(z.shape[0], device=device)

    def run():
        with torch.set_grad_enabled(pass_name != "forward"):
            leaves = [tensor.requires_grad_(pass_name != "forward") for tensor in (z, centers)]
            outputs = op(*leaves, SCALE)
            if pass_name != "forward":
                outputs = torch.autograd.grad(outputs, leaves, upstream)
        if device == "cuda":
            torch.cuda.synchronize()
        return outputs
    return run


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_mixture_op_speed(benchmark, device, case, implementation):
    pass_name, num_queries, num_components, dim = CASES[case]
    z, centers = make_inputs(num_queries, num_components, dim, device)
    run = timed_callable(op_for(implementation), z, centers, pass_name, device)
    for _ in range(2):  # compiles, and warms caches and the allocator, outside the timing
        run()
    benchmark.group = f"{case} | {pass_name} | {device}"
    benchmark.extra_info.update(
        implementation=implementation, op="mixture_log_density",
        sizes=dict(M=num_queries, N=num_components, Z=dim), scale=SCALE, pass_name=pass_name,
        dtype="float32", device=device, device_name=device_name(device),
        torch_version=torch.__version__, cuda_version=torch.version.cuda,
        threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    benchmark.pedantic(run, rounds=5, iterations=1)
