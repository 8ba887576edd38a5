"""Tests of the fused diffusion KL ops (torch.ops.genvar.diffusion_*) against their
pure-PyTorch references in genvar_bench/ops/diffusion.py, which are the specification.

Shapes are (T', B, D): step slices, batch and data dimension; T = 1000 schedule steps.
Bad input, non-binary data, layouts, empty sizes and poisoned outputs are in
test_diffusion_op_inputs.py.
"""
import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops import REFERENCE, get_ops
from genvar_bench.ops.diffusion import (binomial_schedule, diffusion_binomial_kl_ref,
                                        diffusion_gaussian_kl_ref, fused_diffusion_binomial_kl,
                                        fused_diffusion_gaussian_kl, gaussian_schedule)
from helpers import (DEVICES, DTYPES, assert_close_to_reference, dtype_id, generator_for,
                     make_diffusion_inputs, reference_pair, shape_id)

genvar = torch.ops.genvar
KINDS = ["binomial", "gaussian"]
OPS = {"binomial": genvar.diffusion_binomial_kl, "gaussian": genvar.diffusion_gaussian_kl}
BACKWARD_OPS = {"binomial": genvar.diffusion_binomial_kl_backward,
                "gaussian": genvar.diffusion_gaussian_kl_backward}
AND_GRAD_OPS = {"binomial": genvar.diffusion_binomial_kl_and_grad,
                "gaussian": genvar.diffusion_gaussian_kl_and_grad}
FUSED = {"binomial": fused_diffusion_binomial_kl, "gaussian": fused_diffusion_gaussian_kl}
REFERENCES = {"binomial": diffusion_binomial_kl_ref, "gaussian": diffusion_gaussian_kl_ref}
# T' = B = 1, D odd, MNIST-sized D, many rows.
SHAPES = [(1, 1, 1), (2, 3, 13), (5, 4, 784), (40, 25, 20)]
SCHEDULES = ["paper", "linear"]


def output_gradients(function, inputs, upstream):
    """Gradients of (function(*args) * upstream).sum() with respect to the network outputs."""
    leaves = inputs.requiring_grad()
    return torch.autograd.grad(function(*leaves.args()), leaves.outputs, upstream)


def random_upstream(generator, inputs):
    return torch.randn(inputs.steps.shape, generator=generator,
                       dtype=torch.float64).to(inputs.x0)


# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_kl_matches_reference(request, kind, device, dtype, shape, schedule):
    inputs = make_diffusion_inputs(generator_for(request), kind, *shape, schedule=schedule,
                                   dtype=dtype, device=device)
    actual = OPS[kind](*inputs.args())
    assert_close_to_reference(actual, *reference_pair(REFERENCES[kind], *inputs.args()))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_reference(request, kind, device, dtype, shape, schedule):
    """Through the plain op and through the fused entry point (on the CPU: the
    training path, whose backward scales the forward's derivative buffers)."""
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, kind, *shape, schedule=schedule, dtype=dtype,
                                   device=device)
    upstream = random_upstream(generator, inputs)
    expected = output_gradients(REFERENCES[kind], inputs, upstream)
    expected64 = output_gradients(REFERENCES[kind], inputs.to(dtype=torch.float64),
                                  upstream.double())
    for function in (OPS[kind], FUSED[kind]):
        assert_close_to_reference(output_gradients(function, inputs, upstream), expected,
                                  expected64)


EXTREME_LOGITS = (80.0, -80.0, 1e4, -1e4, 1e3, -1e3, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_binomial_is_stable_at_extreme_logits(request, device, dtype):
    """Saturated sigmoids and softplus, where a naive log(1 + exp(l)) overflows."""
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, "binomial", 6, 5, 40, dtype=dtype, device=device)
    flat = inputs.outputs[0].view(-1)
    positions = torch.randperm(flat.numel(), generator=generator)[:len(EXTREME_LOGITS)]
    flat[positions.to(device)] = torch.tensor(EXTREME_LOGITS, dtype=dtype, device=device)
    upstream = random_upstream(generator, inputs)
    actual = OPS["binomial"](*inputs.args())
    assert torch.isfinite(actual).all()
    assert_close_to_reference(actual, *reference_pair(diffusion_binomial_kl_ref, *inputs.args()))
    assert_close_to_reference(
        output_gradients(FUSED["binomial"], inputs, upstream),
        output_gradients(diffusion_binomial_kl_ref, inputs, upstream),
        output_gradients(diffusion_binomial_kl_ref, inputs.to(dtype=torch.float64),
                         upstream.double()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_in_an_output_stays_in_its_row(request, kind, device):
    inputs = make_diffusion_inputs(generator_for(request), kind, 4, 3, 10, device=device)
    inputs.outputs[-1][2, 1, 7] = float("nan")
    kl = OPS[kind](*inputs.args())
    assert kl[2, 1].isnan() and kl.isnan().sum() == 1
    grads = output_gradients(FUSED[kind], inputs, torch.ones_like(kl))
    assert all(grad.isnan().sum() == grad[2, 1].isnan().sum() for grad in grads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_betas_of_any_floating_dtype_are_read_as_they_are(request, kind, device):
    inputs = make_diffusion_inputs(generator_for(request), kind, 3, 4, 6, device=device)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        inputs.betas = inputs.betas.to(dtype)
        expected = REFERENCES[kind](*inputs.args())
        assert_close_to_reference(OPS[kind](*inputs.args()), expected, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(request, kind, device):
    inputs = make_diffusion_inputs(generator_for(request), kind, 3, 2, 5, num_steps=10,
                                   device=device).requiring_grad()
    for function in (OPS[kind], FUSED[kind]):
        def given_data(*outputs):
            return function(inputs.x0, inputs.xt, *outputs, inputs.steps, inputs.betas)
        assert torch.autograd.gradcheck(given_data, inputs.outputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_data_and_schedule_get_no_gradient(request, kind, device):
    inputs = make_diffusion_inputs(generator_for(request), kind, 3, 2, 5, device=device)
    leaves = inputs.requiring_grad()
    leaves.x0.requires_grad_()
    leaves.xt.requires_grad_()
    leaves.betas.requires_grad_()
    FUSED[kind](*leaves.args()).sum().backward()
    assert leaves.x0.grad is None and leaves.xt.grad is None and leaves.betas.grad is None
    assert all(output.grad is not None for output in leaves.outputs)


# ---------------------------------------------------------------------------
# What the terms are


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_first_step_is_the_negative_log_likelihood_of_x0(request, kind, device, dtype):
    inputs = make_diffusion_inputs(generator_for(request), kind, 3, 4, 30, dtype=dtype,
                                   device=device)
    inputs.steps = torch.ones_like(inputs.steps)
    if kind == "binomial":
        (logits,) = inputs.outputs
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, inputs.x0.expand_as(logits), reduction="none").sum(-1)
    else:
        mean, log_var = inputs.outputs
        expected = -torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(
            inputs.x0).sum(-1)
    torch.testing.assert_close(OPS[kind](*inputs.args()), expected)


def posterior_outputs(kind, inputs):
    """The network outputs that make p(x_{t-1} | x_t) the posterior q(x_{t-1} | x_t, x_0)."""
    index = inputs.steps - 1
    if kind == "binomial":
        rho, kappa_prev = binomial_schedule(inputs.betas)
        lq = ((2 * inputs.xt.double() - 1) * rho[index].unsqueeze(-1)
              + (2 * inputs.x0.double() - 1) * kappa_prev[index].unsqueeze(-1))
        return (lq.to(inputs.x0.dtype),)
    c0, c1, var_q = (table[index].unsqueeze(-1) for table in gaussian_schedule(inputs.betas))
    mean_q = c0 * inputs.x0.double() + c1 * inputs.xt.double()
    return mean_q.to(inputs.x0.dtype), torch.log(var_q).expand_as(mean_q).to(inputs.x0.dtype)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_kl_is_nonnegative_and_zero_at_the_posterior(request, kind, device, dtype, schedule):
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, kind, 6, 5, 50, schedule=schedule, dtype=dtype,
                                   device=device)
    assert (OPS[kind](*inputs.args()) >= 0).all()
    inputs.steps = torch.randint(2, 1001, inputs.steps.shape, generator=generator).to(device)
    inputs.steps.view(-1)[:2] = torch.tensor([2, 1000])
    inputs.outputs = posterior_outputs(kind, inputs)
    kl = OPS[kind](*inputs.args())
    tolerance = 50 * 64 * torch.finfo(dtype).eps
    torch.testing.assert_close(kl, torch.zeros_like(kl), rtol=0, atol=tolerance)
    nearby = tuple(output + 0.1 for output in inputs.outputs)
    inputs.outputs = nearby
    assert (OPS[kind](*inputs.args()) > tolerance).all()


# ---------------------------------------------------------------------------
# The CPU training path


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kind", KINDS)
def test_training_path_outputs_are_the_kl_and_its_derivatives(request, kind, dtype):
    inputs = make_diffusion_inputs(generator_for(request), kind, 4, 3, 37, dtype=dtype)
    kl, *buffers = AND_GRAD_OPS[kind](*inputs.args())
    expected = [OPS[kind](*inputs.args())]
    expected += output_gradients(OPS[kind], inputs, torch.ones_like(kl))
    torch.testing.assert_close([kl, *buffers], expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kind", KINDS)
def test_training_path_gradients_equal_the_plain_op_and_survive_a_second_backward(
        request, kind, dtype):
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, kind, 4, 3, 37, dtype=dtype)
    upstream = random_upstream(generator, inputs)
    expected = output_gradients(OPS[kind], inputs, upstream)
    leaves = inputs.requiring_grad()
    kl = FUSED[kind](*leaves.args())
    assert "and_grad" in kl.grad_fn.name()  # the training path ran
    value = (kl * upstream).sum()
    first = torch.autograd.grad(value, leaves.outputs, retain_graph=True)
    second = torch.autograd.grad(value, leaves.outputs)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_without_grad_the_plain_forward_runs(request, kind):
    inputs = make_diffusion_inputs(generator_for(request), kind, 3, 2, 5).requiring_grad()
    with torch.no_grad():
        value = FUSED[kind](*inputs.args())
    assert value.grad_fn is None
    torch.testing.assert_close(value, OPS[kind](*inputs.args()).detach())


# ---------------------------------------------------------------------------
# Registration: schemas, fake kernels, autograd, torch.compile, the op sets


def opcheck_cases(generator, kind, dtype, device):
    """op -> (args, test_utils or None for all)."""
    inputs = make_diffusion_inputs(generator, kind, 3, 4, 10, dtype=dtype, device=device)
    grad = random_upstream(generator, inputs)
    buffers = tuple(torch.randn_like(output) for output in inputs.outputs)
    # The training path's backward keeps its buffers on ctx, which AOTAutograd cannot
    # trace; compiled code takes the plain op (test_compiled_fullgraph_matches_eager).
    no_aot = ("test_schema", "test_autograd_registration", "test_faketensor")
    return [(OPS[kind], inputs.requiring_grad().args(), None),
            (BACKWARD_OPS[kind], (grad, *inputs.args()), None),
            (AND_GRAD_OPS[kind], inputs.requiring_grad().args(), no_aot),
            (getattr(genvar, f"diffusion_{kind}_kl_and_grad_backward_"), (grad, *buffers), None)]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(request, kind, device, dtype):
    for op, args, test_utils in opcheck_cases(generator_for(request), kind, dtype, device):
        kwargs = {} if test_utils is None else {"test_utils": test_utils}
        torch.library.opcheck(op, args, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_fullgraph_matches_eager(request, kind, device):
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, kind, 4, 3, 20, dtype=torch.float32, device=device)
    upstream = random_upstream(generator, inputs)

    def objective(*args):
        return (FUSED[kind](*args) * upstream).sum()

    results = []
    for function in (objective, torch.compile(objective, fullgraph=True)):
        leaves = inputs.requiring_grad()
        value = function(*leaves.args())
        results.append((value, *torch.autograd.grad(value, leaves.outputs)))
    torch.testing.assert_close(results[1], results[0])


def test_op_sets_list_both_ops():
    fused = get_ops("fused")
    assert fused.diffusion_binomial_kl is fused_diffusion_binomial_kl
    assert fused.diffusion_gaussian_kl is fused_diffusion_gaussian_kl
    assert REFERENCE.diffusion_binomial_kl is diffusion_binomial_kl_ref
    assert REFERENCE.diffusion_gaussian_kl is diffusion_gaussian_kl_ref
