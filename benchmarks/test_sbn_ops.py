"""Speed of the fused sigmoid-belief-network op against its pure-PyTorch
reference, eager and under torch.compile, forward and forward+backward, on the
CPU and (when present) the GPU.

Run with `python -m pytest benchmarks/test_sbn_ops.py`. Nothing here asserts a
speed: benchmarks/conftest.py prints the speed-ups as ratios of medians taken in
the same run on the same machine. Shapes: k samples, batch B, data D = 784
(MNIST), H = 200 binary latents, float32, as in RWS training (k = 5, B = 100)
and test-NLL evaluation (k = 5000, B = 10).
"""
import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from benchmarks.test_iwae_ops import DEVICES, IMPLEMENTATIONS, PASSES, describe, timed_callable
from genvar_bench.ops.sbn import fused_sbn_log_weights, sbn_log_weights_ref

CASES = {
    "sbn_log_weights k=5 B=100 D=784 H=200": dict(k=5, B=100, D=784, H=200),
    "sbn_log_weights k=5000 B=10 D=784 H=200": dict(k=5000, B=10, D=784, H=200),
}


def make_inputs(sizes, device):
    """(inputs, the differentiable ones, upstream gradient of log_w); float32. h is a
    sample of binary latents and gets no gradient, as in training."""
    generator = torch.Generator().manual_seed(0)
    k, batch, data_dim, latent_dim = sizes["k"], sizes["B"], sizes["D"], sizes["H"]

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    def coin_flips(*shape):
        return torch.bernoulli(torch.full(shape, 0.5), generator=generator).to(device)

    logits = (normal(k, batch, data_dim) * 3).requires_grad_()
    prior_logits = normal(latent_dim).requires_grad_()
    q_logits = normal(batch, latent_dim).requires_grad_()
    inputs = [logits, coin_flips(batch, data_dim), coin_flips(k, batch, latent_dim),
              prior_logits, q_logits]
    return inputs, [logits, prior_logits, q_logits], [normal(k, batch)]


def op_for(implementation):
    if implementation == "fused":
        # The entry point the models use (on CPU with grad: the one-pass forward-and-gradient op)
        return fused_sbn_log_weights
    if implementation == "eager":
        return sbn_log_weights_ref
    # A fresh dynamo cache per benchmark: each shape gets its own static graph.
    torch._dynamo.reset()
    return torch.compile(sbn_log_weights_ref, fullgraph=True, dynamic=False)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_sbn_op_speed(benchmark, device, case, pass_name, implementation):
    sizes = CASES[case]
    inputs, differentiable, grad_outputs = make_inputs(sizes, device)
    run = timed_callable(op_for(implementation), inputs, differentiable, grad_outputs,
                         pass_name, device)
    for _ in range(2):  # compiles, and warms caches and the allocator, outside the timing
        run()
    benchmark.group = f"{case} | {pass_name} | {device}"
    describe(benchmark, device, implementation, "sbn_log_weights", sizes, pass_name)
    benchmark(run)
