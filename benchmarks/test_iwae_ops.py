"""Speed of the fused IWAE ops against their pure-PyTorch references, eager and
under torch.compile, forward and forward+backward, on the CPU and (when present)
the GPU.

Run with `python -m pytest benchmarks/test_iwae_ops.py`. Nothing here asserts a
speed: benchmarks/conftest.py prints the speed-ups as ratios of medians taken in
the same run on the same machine. Shapes: k samples, batch B, data D = 784
(MNIST), latent Z = 50, float32, as in the IWAE paper's training (k = 50) and
test-NLL evaluation (k = 5000).
"""
import os
import platform
from typing import Any, Callable

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench._extension import cuda_ops_built
from genvar_bench.ops import fused_iwae_log_weights, iwae_bound_ref, iwae_log_weights_ref

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_ops_built()),
    reason="needs a GPU and the genvar CUDA kernels"))]
IMPLEMENTATIONS = ["fused", "eager", "compiled"]
PASSES = ["forward", "forward+backward"]
REFERENCES: dict[str, Callable[..., Any]] = {"iwae_log_weights": iwae_log_weights_ref, "iwae_bound": iwae_bound_ref}
# case name -> (op name, sizes)
CASES = {
    "iwae_log_weights k=50 B=100 D=784 Z=50": ("iwae_log_weights", dict(k=50, B=100, D=784, Z=50)),
    "iwae_bound k=50 B=100": ("iwae_bound", dict(k=50, B=100)),
    "iwae_bound k=5000 B=100": ("iwae_bound", dict(k=5000, B=100)),
}


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_inputs(op_name, sizes, device):
    """(inputs, the differentiable ones, upstream gradients of the outputs); float32."""
    generator = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    if op_name == "iwae_bound":
        log_weights = (normal(sizes["k"], sizes["B"]) * 10).requires_grad_()
        return [log_weights], [log_weights], [normal(sizes["B"]), normal(sizes["k"], sizes["B"])]
    k, batch, data_dim, latent_dim = sizes["k"], sizes["B"], sizes["D"], sizes["Z"]
    x = torch.bernoulli(torch.full((batch, data_dim), 0.5), generator=generator).to(device)
    inputs = [normal(k, batch, data_dim) * 3, x, normal(k, batch, latent_dim),
              normal(batch, latent_dim), normal(batch, latent_dim) * 0.5]
    for index in (0, 2, 3, 4):  # all but the data x
        inputs[index].requires_grad_()
    return inputs, [inputs[index] for index in (0, 2, 3, 4)], [normal(k, batch)]


def op_for(op_name, implementation):
    if implementation == "fused":
        # The entry point the models use (on CPU with grad: the one-pass forward-and-gradient op)
        return {"iwae_log_weights": fused_iwae_log_weights}.get(
            op_name, getattr(torch.ops.genvar, op_name, None))
    if implementation == "eager":
        return REFERENCES[op_name]
    # A fresh dynamo cache per benchmark: each shape gets its own static graph
    # rather than one dynamic-shape graph after a recompile.
    torch._dynamo.reset()
    return torch.compile(REFERENCES[op_name], fullgraph=True, dynamic=False)


def timed_callable(op, inputs, differentiable, grad_outputs, pass_name, device):
    """One forward (or forward and backward) pass, finished on the device when it returns."""
    def run():
        with torch.set_grad_enabled(pass_name != "forward"):
            outputs = op(*inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            if pass_name != "forward":
                outputs = torch.autograd.grad(outputs, differentiable, grad_outputs)
        if device == "cuda":
            torch.cuda.synchronize()
        return outputs
    return run


def describe(benchmark, device, implementation, op_name, sizes, pass_name):
    benchmark.extra_info.update(
        implementation=implementation, op=op_name, sizes=sizes, pass_name=pass_name,
        dtype="float32", device=device, device_name=device_name(device),
        torch_version=torch.__version__, cuda_version=torch.version.cuda,
        threads=torch.get_num_threads(), cpu_count=os.cpu_count())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_iwae_op_speed(benchmark, device, case, pass_name, implementation):
    op_name, sizes = CASES[case]
    inputs, differentiable, grad_outputs = make_inputs(op_name, sizes, device)
    run = timed_callable(op_for(op_name, implementation), inputs, differentiable, grad_outputs,
                         pass_name, device)
    for _ in range(2):  # compiles, and warms caches and the allocator, outside the timing
        run()
    benchmark.group = f"{case} | {pass_name} | {device}"
    describe(benchmark, device, implementation, op_name, sizes, pass_name)
    benchmark(run)
