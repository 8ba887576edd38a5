"""The CPU training path of the fused ops: `iwae_log_weights_and_grad` writes
d log_w / d logits during the forward, and the backward scales it in place."""
import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library)
from genvar_bench.ops import fused_iwae_log_weights, iwae_log_weights_ref
from helpers import (DEVICES, DTYPES, assert_close_to_reference, dtype_id, generator_for,
                     make_iwae_inputs)

and_grad = torch.ops.genvar.iwae_log_weights_and_grad
EXTREME = (80.0, -80.0, 1e4, -1e4, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 13, 4), (7, 4, 784, 10)])
@pytest.mark.parametrize("device", DEVICES)
def test_outputs_match_the_reference_and_its_gradient(request, device, dtype, shape):
    inputs = make_iwae_inputs(generator_for(request), *shape, dtype=dtype, device=device,
                              planted_logits=EXTREME)
    log_weights, dlogits = and_grad(*inputs.tensors())

    def reference(*tensors):
        logits = tensors[0].detach().requires_grad_()
        value = iwae_log_weights_ref(logits, *tensors[1:])
        (gradient,) = torch.autograd.grad(value.sum(), logits)
        return value.detach(), gradient

    expected = reference(*inputs.tensors())
    expected64 = reference(*inputs.to(dtype=torch.float64).tensors())
    assert_close_to_reference(log_weights, expected[0], expected64[0])
    assert_close_to_reference(dlogits, expected[1], expected64[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_training_gradients_match_the_reference(request, dtype):
    generator = generator_for(request)
    inputs = make_iwae_inputs(generator, 6, 5, 40, 7, dtype=dtype, planted_logits=EXTREME)
    cotangent = torch.randn(6, 5, generator=generator, dtype=torch.float64).to(dtype)
    results = []
    for function, tensors in ((fused_iwae_log_weights, inputs), (iwae_log_weights_ref, inputs),
                              (iwae_log_weights_ref, inputs.to(dtype=torch.float64))):
        leaves = tensors.requiring_grad()
        (function(*leaves.tensors()) * cotangent.to(leaves.logits.dtype)).sum().backward()
        results.append([leaf.grad for leaf in leaves.differentiable()])
    for actual, same_dtype, float64 in zip(*results):
        assert_close_to_reference(actual, same_dtype, float64)


def test_gradcheck(request):
    inputs = make_iwae_inputs(generator_for(request), 3, 2, 5, 2).requiring_grad()
    assert torch.autograd.gradcheck(
        lambda logits, z, mu, logvar: fused_iwae_log_weights(logits, inputs.x, z, mu, logvar),
        inputs.differentiable())


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(request, device, dtype):
    inputs = make_iwae_inputs(generator_for(request), 3, 2, 5, 2, dtype=dtype,
                              device=device).requiring_grad()
    # Not test_aot_dispatch_dynamic: the backward keeps its buffer on ctx, which
    # AOTAutograd cannot trace; compiled code takes the plain op (see the next test).
    torch.library.opcheck(and_grad, inputs.tensors(), test_utils=(
        "test_schema", "test_autograd_registration", "test_faketensor"))


def test_compiled_fullgraph_matches_eager_training_path(request):
    inputs = make_iwae_inputs(generator_for(request), 4, 3, 20, 5, dtype=torch.float32)

    def objective(logits, x, z, mu, logvar):
        return torch.logsumexp(fused_iwae_log_weights(logits, x, z, mu, logvar), 0).sum()

    results = []
    for function in (objective, torch.compile(objective, fullgraph=True)):
        leaves = inputs.requiring_grad()
        value = function(*leaves.tensors())
        value.backward()
        results.append((value, *(leaf.grad for leaf in leaves.differentiable())))
    torch.testing.assert_close(results[1], results[0])


def test_a_second_backward_through_the_same_graph_gives_the_same_gradient(request):
    leaves = make_iwae_inputs(generator_for(request), 2, 2, 3, 2).requiring_grad()
    value = fused_iwae_log_weights(*leaves.tensors()).sum()
    first = torch.autograd.grad(value, leaves.differentiable(), retain_graph=True)
    second = torch.autograd.grad(value, leaves.differentiable())
    torch.testing.assert_close(second, first)


def test_without_grad_the_plain_forward_runs(request):
    inputs = make_iwae_inputs(generator_for(request), 3, 2, 5, 2, dtype=torch.float32)
    with torch.no_grad():
        plain = fused_iwae_log_weights(*inputs.requiring_grad().tensors())
    torch.testing.assert_close(plain, torch.ops.genvar.iwae_log_weights(*inputs.tensors()))


@pytest.mark.parametrize("argument, replacement, message", [
    ("grad_log_weights", torch.zeros(3, 3), "grad_log_weights must have shape"),
    ("dlogits", torch.zeros(3, 2), "dlogits must have rank 3"),
    ("dlogits", torch.zeros(3, 2, 5, dtype=torch.int64), "dlogits must be float32 or float64"),
    ("z", torch.zeros(3, 2, 2, dtype=torch.float32), "z has dtype Float"),
    ("mu", torch.zeros(2, 3, dtype=torch.float64), "mu must have shape"),
    ("logvar", torch.zeros(1, 2, dtype=torch.float64), "logvar must have shape"),
])
def test_backward_rejects_bad_input_naming_it(request, argument, replacement, message):
    inputs = make_iwae_inputs(generator_for(request), 3, 2, 5, 2)
    arguments = {"grad_log_weights": torch.zeros(3, 2, dtype=torch.float64),
                 "dlogits": inputs.logits, "z": inputs.z, "mu": inputs.mu, "logvar": inputs.logvar}
    arguments[argument] = replacement
    with pytest.raises(RuntimeError, match=message):
        torch.ops.genvar.iwae_log_weights_and_grad_backward_(*arguments.values())
