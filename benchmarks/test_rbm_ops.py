"""Speed of the fused RBM Gibbs sweeps (genvar::rbm_gibbs) against plain PyTorch, eager
and under torch.compile, on the CPU and (when present) the GPU.

Run with `python -m pytest benchmarks/test_rbm_ops.py`. Nothing here asserts a speed:
benchmarks/conftest.py prints the speed-ups as ratios of medians taken in the same run
on the same machine. Sizes: an MNIST RBM (D = 784 visible, H = 500 hidden units),
B = 100 chains, float32; weights N(0, 0.05^2) and zero biases, so about half of the
units are on in every layer (0.52 visible, 0.53 hidden): the densest case for the
CPU's binary-gather products, which read at most the smaller of the active and the
inactive units. Two workloads: 25 sweeps at beta = 1 (a PCD / sampling run), and one
sweep at beta = 0.5 with a base-rate visible bias (an AIS step).

Each case has two groups. "torch_rng": the baseline is rbm_gibbs_torch_rng, the fastest
plain-PyTorch sweep (torch.rand, not the same numbers). "exact": the baseline is
rbm_gibbs_ref, which draws the op's Philox numbers in PyTorch; eager only, since
torch.compile cannot take it: with fullgraph=True Dynamo rejects the torch._check
messages of its argument checks, and without, Inductor's generated C++ for the 25
unrolled sweeps of int64 Philox arithmetic crashes g++ 12 (internal compiler error in
gimple_duplicate_bb), with torch 2.13 on this machine.
"""
import functools

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels)
from benchmarks.test_iwae_ops import DEVICES, IMPLEMENTATIONS, describe
from genvar_bench.ops.rbm import fused_rbm_gibbs, rbm_gibbs_ref, rbm_gibbs_torch_rng

SIZES = dict(B=100, D=784, H=500)
# case name -> (beta, sweeps, with a base-rate visible bias)
CASES = {"25 sweeps beta=1": (1.0, 25, False), "AIS step: 1 sweep beta=0.5": (0.5, 1, True)}
BASELINES = {"torch_rng": rbm_gibbs_torch_rng, "exact": rbm_gibbs_ref}
SEED, OFFSET = 1234, 0


def make_inputs(device, with_base):
    """(v, weight, visible_bias, hidden_bias, base_visible_bias or None); float32."""
    generator = torch.Generator().manual_seed(0)
    chains, visible, hidden = SIZES.values()
    v = torch.bernoulli(torch.full((chains, visible), 0.5), generator=generator)
    weight = torch.randn(visible, hidden, generator=generator) * 0.05
    base = torch.randn(visible, generator=generator) * 0.5 if with_base else None
    tensors = (v, weight, torch.zeros(visible), torch.zeros(hidden))
    return tuple(tensor.to(device) for tensor in tensors) + (
        None if base is None else base.to(device),)


def op_for(baseline, implementation, beta, sweeps):
    """A function of the tensors alone: beta, sweeps and the stream are fixed."""
    if implementation == "fused":
        return functools.partial(_with_stream, fused_rbm_gibbs, beta, sweeps)
    if baseline == "exact":
        function = functools.partial(_with_stream, rbm_gibbs_ref, beta, sweeps)
    else:
        function = functools.partial(_torch_rng, beta, sweeps)
    if implementation == "eager":
        return function
    torch._dynamo.reset()  # a fresh cache per benchmark: one static graph per case
    return torch.compile(function, fullgraph=True, dynamic=False)


def _with_stream(op, beta, sweeps, v, weight, visible_bias, hidden_bias, base):
    return op(v, weight, visible_bias, hidden_bias, beta, sweeps, SEED, OFFSET, base)


def _torch_rng(beta, sweeps, v, weight, visible_bias, hidden_bias, base):
    return rbm_gibbs_torch_rng(v, weight, visible_bias, hidden_bias, beta, sweeps, base)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_rbm_gibbs_speed(benchmark, device, case, baseline, implementation):
    if baseline == "exact" and implementation == "compiled":
        pytest.skip("torch.compile cannot compile rbm_gibbs_ref (see the module docstring)")
    beta, sweeps, with_base = CASES[case]
    inputs = make_inputs(device, with_base)
    op = op_for(baseline, implementation, beta, sweeps)

    def run():
        outputs = op(*inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        return outputs

    for _ in range(2):  # compiles, and warms caches and the allocator, outside the timing
        run()
    benchmark.group = f"rbm_gibbs {case} B=100 D=784 H=500 | vs {baseline} | {device}"
    describe(benchmark, device, implementation, "rbm_gibbs",
             dict(SIZES, beta=beta, sweeps=sweeps, base_visible_bias=with_base), "forward")
    benchmark(run)
