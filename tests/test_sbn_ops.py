"""Tests of the fused sigmoid-belief-network ops (torch.ops.genvar.sbn_*) against
the pure-PyTorch reference in genvar_bench/ops/sbn.py, which is the specification.

Shapes are (k, B, D, H): samples per example, batch, data dimension and binary
latent units.
"""

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops.sbn import fused_sbn_log_weights, sbn_log_weights_ref
from helpers import (DEVICES, DTYPES, assert_close_to_reference, dtype_id, generator_for, gradients,
                     make_sbn_inputs, misaligned, poison_allocator, random_like, reference_pair,
                     replaced, requires_cuda_ops, shape_id, strided, transposed)

genvar = torch.ops.genvar
NAN = float("nan")


DIFFERENTIABLE = (0, 2, 3, 4)  # logits, h, prior_logits, q_logits; not the data x


def assert_matches_reference(actual, same_dtype_reference, float64_reference):
    """assert_close_to_reference, with magnitudes below the smallest normal number of
    the kernel's dtype counted as 0 in all three: the float32 kernels' exp is exactly
    0 below -87 (fast_math.h), where PyTorch keeps subnormals (sigmoid(-100) = 3.7e-44)."""
    if isinstance(actual, (tuple, list)):
        for parts in zip(actual, same_dtype_reference, float64_reference, strict=True):
            assert_matches_reference(*parts)
        return
    tiny = torch.finfo(actual.dtype).tiny

    def flushed(values):
        return torch.where(values.abs() < tiny, torch.zeros_like(values), values)

    assert_close_to_reference(flushed(actual), flushed(same_dtype_reference),
                              flushed(float64_reference))


# k = 1, B = 1, H = 1, D odd, D at a multiple of the CUDA pack width, no latents,
# no data, the RWS training size.
SHAPES = [(1, 1, 3, 1), (4, 1, 13, 1), (1, 6, 10, 4), (5, 7, 16, 3), (3, 4, 9, 0), (2, 3, 0, 5),
          (5, 9, 784, 200)]
LOGIT_RANGES = {
    "moderate": dict(logits_scale=3.0),
    # Saturated sigmoids and softplus, where a naive log(1 + exp(l)) overflows.
    "extreme": dict(logits_scale=30.0, planted_logits=(100.0, -100.0, 80.0, -80.0, 1e4, -1e4)),
}


def gradient_triplet(function, inputs, grad_log_weights, wrt=DIFFERENTIABLE):
    """Gradients of `function`, of the reference, and of the reference in float64:
    the arguments of assert_close_to_reference."""
    upcast = [tensor.double() for tensor in inputs]
    return (gradients(function, inputs, wrt, [grad_log_weights]),
            gradients(sbn_log_weights_ref, inputs, wrt, [grad_log_weights]),
            gradients(sbn_log_weights_ref, upcast, wrt, [grad_log_weights.double()]))


def reference_with_dlogits(*tensors):
    """The reference's log_w and d log_w[k, b] / d logits[k, b, :]."""
    logits = tensors[0].detach().requires_grad_()
    log_weights = sbn_log_weights_ref(logits, *tensors[1:])
    (dlogits,) = torch.autograd.grad(log_weights.sum(), logits)
    return log_weights.detach(), dlogits


# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("logit_range", LOGIT_RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_log_weights_match_reference(request, device, dtype, shape, logit_range):
    inputs = make_sbn_inputs(generator_for(request), *shape, dtype=dtype, device=device,
                             **LOGIT_RANGES[logit_range])
    expected = reference_pair(sbn_log_weights_ref, *inputs.tensors())
    assert_matches_reference(genvar.sbn_log_weights(*inputs.tensors()), *expected)
    # The training path's forward shares one exp between softplus and sigmoid.
    assert_matches_reference(genvar.sbn_log_weights_and_grad(*inputs.tensors())[0], *expected)


@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
@pytest.mark.parametrize("logit_range", LOGIT_RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_reference(request, device, dtype, shape, logit_range, function):
    """`fused` takes the training path (forward writes d log_w / d logits) on the CPU."""
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, *shape, dtype=dtype, device=device,
                             **LOGIT_RANGES[logit_range])
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    assert_matches_reference(*gradient_triplet(function, inputs.tensors(), grad_log_weights))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_training_path_writes_the_logits_gradient(request, device, dtype):
    inputs = make_sbn_inputs(generator_for(request), 4, 3, 20, 6, dtype=dtype, device=device,
                             planted_logits=(100.0, -100.0, 0.0))
    assert_matches_reference(genvar.sbn_log_weights_and_grad(*inputs.tensors()),
                             *reference_pair(reference_with_dlogits, *inputs.tensors()))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_training_path_backward_scales_dlogits_in_place(request, device, dtype):
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, 3, 2, 8, 4, dtype=dtype, device=device)
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    expected = genvar.sbn_log_weights_backward(grad_log_weights, *inputs.tensors())
    _, dlogits = genvar.sbn_log_weights_and_grad(*inputs.tensors())
    latent_grads = genvar.sbn_log_weights_and_grad_backward_(
        grad_log_weights, dlogits, inputs.h, inputs.prior_logits, inputs.q_logits)
    torch.testing.assert_close((dlogits, *latent_grads), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_extreme_logits_give_finite_values_and_gradients(request, device, dtype):
    """Every logit at +-100: exp(100) overflows float32, softplus and sigmoid must not."""
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, 3, 4, 12, 5, dtype=dtype, device=device)
    inputs = inputs.map(lambda tensor: tensor if tensor is inputs.x or tensor is inputs.h
                        else torch.where(tensor > 0, 100.0, -100.0).to(tensor))
    log_weights = genvar.sbn_log_weights(*inputs.tensors())
    assert torch.isfinite(log_weights).all()
    assert_matches_reference(log_weights, *reference_pair(sbn_log_weights_ref, *inputs.tensors()))
    grad_log_weights = random_like(generator, log_weights)
    for function in (genvar.sbn_log_weights, fused_sbn_log_weights):
        grads = gradients(function, inputs.tensors(), DIFFERENTIABLE, [grad_log_weights])
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert_matches_reference(grads, *gradient_triplet(
            sbn_log_weights_ref, inputs.tensors(), grad_log_weights)[1:])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_sums_over_large_k_are_accurate(request, device, dtype):
    """k = 5000 as for a test NLL: the prior and q gradients sum over every sample."""
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, 5000, 6, 10, 7, dtype=dtype, device=device)
    assert_matches_reference(genvar.sbn_log_weights(*inputs.tensors()),
                             *reference_pair(sbn_log_weights_ref, *inputs.tensors()))
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    assert_matches_reference(*gradient_triplet(genvar.sbn_log_weights, inputs.tensors(),
                                               grad_log_weights))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
def test_gradcheck(request, device, function):
    inputs = make_sbn_inputs(generator_for(request), 3, 2, 5, 4, device=device).requiring_grad()

    def log_weights_given_x(logits, h, prior_logits, q_logits):
        return function(logits, inputs.x, h, prior_logits, q_logits)

    assert torch.autograd.gradcheck(log_weights_given_x, inputs.differentiable())


def test_only_the_gradients_asked_for_are_taken(request):
    """An encoder update (q_logits only) and a decoder update (logits, prior only)."""
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, 4, 3, 11, 5)
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    for wrt in [(4,), (0, 3), (2,)]:
        for function in (genvar.sbn_log_weights, fused_sbn_log_weights):
            actual = gradients(function, inputs.tensors(), wrt, [grad_log_weights])
            expected = gradients(sbn_log_weights_ref, inputs.tensors(), wrt, [grad_log_weights])
            assert_matches_reference(actual, expected, expected)


def test_a_second_backward_through_the_training_path_gives_the_same_gradient(request):
    leaves = make_sbn_inputs(generator_for(request), 2, 3, 7, 4).requiring_grad()
    value = fused_sbn_log_weights(*leaves.tensors()).sum()
    first = torch.autograd.grad(value, leaves.differentiable(), retain_graph=True)
    second = torch.autograd.grad(value, leaves.differentiable())
    torch.testing.assert_close(second, first)


# ---------------------------------------------------------------------------
# Registration: schemas, fake kernels, autograd, torch.compile


def opcheck_cases(generator, dtype, device):
    """op name -> (op, args, test_utils or None for all), differentiable inputs requiring grad."""
    inputs = make_sbn_inputs(generator, 3, 4, 10, 5, dtype=dtype, device=device)
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    dlogits = genvar.sbn_log_weights_and_grad(*inputs.tensors())[1]
    latent = (inputs.h, inputs.prior_logits, inputs.q_logits)
    return {
        "sbn_log_weights": (genvar.sbn_log_weights, inputs.requiring_grad().tensors(), None),
        "sbn_log_weights_backward": (genvar.sbn_log_weights_backward,
                                     (grad_log_weights, *inputs.tensors()), None),
        # Not test_aot_dispatch_dynamic: the backward keeps its buffer on ctx, which
        # AOTAutograd cannot trace; compiled code takes the plain op.
        "sbn_log_weights_and_grad": (genvar.sbn_log_weights_and_grad,
                                     inputs.requiring_grad().tensors(),
                                     ("test_schema", "test_autograd_registration",
                                      "test_faketensor")),
        "sbn_log_weights_and_grad_backward_": (genvar.sbn_log_weights_and_grad_backward_,
                                               (grad_log_weights, dlogits, *latent), None),
    }


@pytest.mark.parametrize("op_name", ["sbn_log_weights", "sbn_log_weights_backward",
                                     "sbn_log_weights_and_grad",
                                     "sbn_log_weights_and_grad_backward_"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(request, device, dtype, op_name):
    op, args, test_utils = opcheck_cases(generator_for(request), dtype, device)[op_name]
    if test_utils is None:
        torch.library.opcheck(op, args)
    else:
        torch.library.opcheck(op, args, test_utils=test_utils)


def rws_objective(function, logits, x, h, prior_logits, q_logits):
    """Self-normalised importance weights times log w, as an RWS wake step uses them."""
    log_weights = function(logits, x, h, prior_logits, q_logits)
    weights = torch.softmax(log_weights.detach(), 0)
    return (weights * log_weights).sum() + torch.logsumexp(log_weights, 0).sum()


@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_fullgraph_matches_eager(request, device, function):
    inputs = make_sbn_inputs(generator_for(request), 4, 3, 20, 6, dtype=torch.float32,
                             device=device)

    def objective(*tensors):
        return rws_objective(function, *tensors)

    results = []
    for candidate in (objective, torch.compile(objective, fullgraph=True)):
        leaves = inputs.requiring_grad()
        value = candidate(*leaves.tensors())
        value.backward()
        results.append((value, *(leaf.grad for leaf in leaves.differentiable())))
    torch.testing.assert_close(results[1], results[0])
    expected = rws_objective(sbn_log_weights_ref, *inputs.tensors())
    torch.testing.assert_close(results[0][0], expected)


# ---------------------------------------------------------------------------
# Argument checks: a clear error that names the argument


# name -> (change to valid float32 inputs with k = 3, B = 2, D = 5, H = 4; argument named first)
BAD_INPUTS = {
    "logits rank 2": (lambda i: replaced(i, logits=i.logits[0]), "logits"),
    "x rank 3": (lambda i: replaced(i, x=i.x[None]), "x"),
    "h rank 2": (lambda i: replaced(i, h=i.h[0]), "h"),
    "prior_logits rank 2": (lambda i: replaced(i, prior_logits=i.prior_logits[None]),
                            "prior_logits"),
    "q_logits rank 1": (lambda i: replaced(i, q_logits=i.q_logits[0]), "q_logits"),
    "x batch": (lambda i: replaced(i, x=i.x[:1]), "x"),
    "x data dim": (lambda i: replaced(i, x=i.x[:, :4]), "x"),
    "h samples": (lambda i: replaced(i, h=i.h[:2]), "h"),
    "h batch": (lambda i: replaced(i, h=i.h[:, :1]), "h"),
    "prior_logits latent dim": (lambda i: replaced(i, prior_logits=i.prior_logits[:3]),
                                "prior_logits"),
    "q_logits batch": (lambda i: replaced(i, q_logits=i.q_logits[:1]), "q_logits"),
    "q_logits latent dim": (lambda i: replaced(i, q_logits=i.q_logits[:, :3]), "q_logits"),
    "x float64": (lambda i: replaced(i, x=i.x.double()), "x"),
    "h float64": (lambda i: replaced(i, h=i.h.double()), "h"),
    "prior_logits float64": (lambda i: replaced(i, prior_logits=i.prior_logits.double()),
                             "prior_logits"),
    "q_logits float64": (lambda i: replaced(i, q_logits=i.q_logits.double()), "q_logits"),
    "logits int64": (lambda i: replaced(i, logits=i.logits.long()), "logits"),
    "h int64": (lambda i: replaced(i, h=i.h.long()), "h"),
    "logits float16": (lambda i: i.to(dtype=torch.float16), "logits"),
    "k = 0": (lambda i: replaced(i, logits=i.logits[:0], h=i.h[:0]), "logits"),
}


def valid_float32_inputs(request):
    return make_sbn_inputs(generator_for(request), 3, 2, 5, 4, dtype=torch.float32)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_rejects_bad_input_naming_it(request, case):
    change, argument = BAD_INPUTS[case]
    inputs = change(valid_float32_inputs(request))
    for op in (genvar.sbn_log_weights, genvar.sbn_log_weights_and_grad):
        with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
            op(*inputs.tensors())
    # The backward op shares the checks and adds its own for grad_log_weights.
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.sbn_log_weights_backward(torch.ones(3, 2), *inputs.tensors())


@pytest.mark.parametrize("grad_log_weights",
                         [torch.ones(3, 3), torch.ones(2), torch.ones(3, 2).double()],
                         ids=["shape", "rank", "dtype"])
def test_backward_rejects_bad_grad(request, grad_log_weights):
    inputs = valid_float32_inputs(request)
    with pytest.raises(RuntimeError, match=r"^grad_log_weights\b"):
        genvar.sbn_log_weights_backward(grad_log_weights, *inputs.tensors())


@pytest.mark.parametrize("argument, replacement, message", [
    ("grad_log_weights", torch.zeros(3, 3), "grad_log_weights must have shape"),
    ("dlogits", torch.zeros(3, 2), "dlogits must have rank 3"),
    ("dlogits", torch.zeros(3, 2, 5, dtype=torch.int64), "dlogits must be float32 or float64"),
    ("dlogits", torch.zeros(0, 2, 5), "dlogits must have k > 0"),
    ("h", torch.zeros(3, 2, 4, dtype=torch.float64), "h has dtype Double"),
    ("prior_logits", torch.zeros(5), "prior_logits must have shape"),
    ("q_logits", torch.zeros(3, 4), "q_logits must have shape"),
])
def test_training_path_backward_rejects_bad_input_naming_it(request, argument, replacement,
                                                            message):
    inputs = valid_float32_inputs(request)
    arguments = {"grad_log_weights": torch.zeros(3, 2), "dlogits": inputs.logits.clone(),
                 "h": inputs.h, "prior_logits": inputs.prior_logits, "q_logits": inputs.q_logits}
    arguments[argument] = replacement
    with pytest.raises(RuntimeError, match=message):
        genvar.sbn_log_weights_and_grad_backward_(*arguments.values())


def test_training_path_backward_rejects_non_contiguous_dlogits(request):
    inputs = valid_float32_inputs(request)
    dlogits = inputs.logits.transpose(0, 1).contiguous().transpose(0, 1)
    with pytest.raises(RuntimeError, match=r"^dlogits must be contiguous"):
        genvar.sbn_log_weights_and_grad_backward_(torch.zeros(3, 2), dlogits, inputs.h,
                                                  inputs.prior_logits, inputs.q_logits)


@requires_cuda_ops
@pytest.mark.parametrize("argument", ["x", "h", "prior_logits", "q_logits"])
def test_rejects_mixed_devices(request, argument):
    inputs = valid_float32_inputs(request).to(device="cuda")
    inputs = replaced(inputs, **{argument: getattr(inputs, argument).cpu()})
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.sbn_log_weights(*inputs.tensors())


@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
@pytest.mark.parametrize("device", DEVICES)
def test_backward_with_x_requiring_grad_raises_naming_x(request, device, function):
    leaves = make_sbn_inputs(generator_for(request), 3, 2, 5, 4, device=device).requiring_grad()
    leaves.x.requires_grad_()
    log_weights = function(*leaves.tensors())  # the forward is fine
    with pytest.raises(RuntimeError, match=r"no gradient with respect to x"):
        log_weights.sum().backward()


# ---------------------------------------------------------------------------
# Memory layouts, empty batches, NaN


LAYOUTS = {"transposed": transposed, "strided": strided, "misaligned": misaligned}


def forward_and_gradients(function, inputs, grad_log_weights):
    leaves = inputs.map(lambda tensor: tensor.detach().requires_grad_(tensor is not inputs.x))
    log_weights = function(*leaves.tensors())
    return (log_weights,
            *torch.autograd.grad(log_weights, leaves.differentiable(), grad_log_weights))


@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_match_contiguous(request, device, dtype, layout, function):
    generator = generator_for(request)
    inputs = make_sbn_inputs(generator, 4, 3, 16, 6, dtype=dtype, device=device)
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    expected = forward_and_gradients(function, inputs, grad_log_weights)
    rearranged = inputs.map(LAYOUTS[layout])
    if layout != "misaligned":
        assert not any(tensor.is_contiguous() for tensor in rearranged.tensors())
    actual = forward_and_gradients(function, rearranged, grad_log_weights)
    for actual_part, expected_part in zip(actual, expected, strict=True):
        # A packed and an unpacked CUDA kernel may sum in different orders.
        eps = torch.finfo(dtype).eps
        scale = expected_part.abs().max().item()
        torch.testing.assert_close(actual_part, expected_part, rtol=64 * eps,
                                   atol=64 * eps * scale)
    # The autograd engine hands the op an expanded (stride 0) gradient for a sum.
    expanded = forward_and_gradients(function, inputs, torch.ones(()).to(inputs.x).expand(4, 3))
    ones = forward_and_gradients(function, inputs, torch.ones(4, 3).to(inputs.x))
    torch.testing.assert_close(expanded, ones)


@pytest.mark.parametrize("function", [genvar.sbn_log_weights, fused_sbn_log_weights],
                         ids=["op", "fused"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_outputs_and_zero_prior_gradient(request, device, dtype,
                                                                 function):
    inputs = make_sbn_inputs(generator_for(request), 3, 0, 5, 4, dtype=dtype, device=device)
    log_weights, *grads = forward_and_gradients(function, inputs, inputs.logits.sum(-1))
    assert log_weights.shape == (3, 0)
    assert [grad.shape for grad in grads] == [tensor.shape for tensor in inputs.differentiable()]
    # A sum over no examples: zero, not left unwritten.
    torch.testing.assert_close(grads[2], torch.zeros_like(inputs.prior_logits),
                               rtol=0, atol=0)


@pytest.mark.parametrize("argument, position, example", [
    ("logits", (2, 1, 3), 1), ("x", (1, 3), 1), ("h", (2, 1, 0), 1), ("q_logits", (1, 2), 1)])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_nan_stays_in_its_example(request, device, dtype, argument, position, example):
    inputs = make_sbn_inputs(generator_for(request), 4, 3, 10, 5, dtype=dtype, device=device)
    getattr(inputs, argument)[position] = NAN
    log_weights = genvar.sbn_log_weights(*inputs.tensors())
    is_nan = log_weights.isnan()
    assert is_nan[:, example].any()
    assert not is_nan[:, [b for b in range(3) if b != example]].any()
    assert_matches_reference(log_weights, *reference_pair(sbn_log_weights_ref, *inputs.tensors()))


def test_nan_in_prior_logits_reaches_every_example(request):
    inputs = make_sbn_inputs(generator_for(request), 4, 3, 10, 5)
    inputs.prior_logits[2] = NAN
    assert genvar.sbn_log_weights(*inputs.tensors()).isnan().all()


# ---------------------------------------------------------------------------
# Every output element is written


POISON_ROUNDS = 5


def training_path_gradients(grad_log_weights, *tensors):
    """The training path end to end: dlogits from the forward, scaled in place."""
    dlogits = genvar.sbn_log_weights_and_grad(*tensors)[1]
    return (dlogits, *genvar.sbn_log_weights_and_grad_backward_(grad_log_weights, dlogits,
                                                                *tensors[2:]))


def poison_cases(generator, dtype, device):
    """op name -> (a call of the op, its output shapes, reference_pair of its outputs).
    B = 256: the CPU allocator reuses freed blocks of this size dependably."""
    inputs = make_sbn_inputs(generator, 8, 256, 100, 20, dtype=dtype, device=device)
    tensors = inputs.tensors()
    grad_log_weights = random_like(generator, inputs.logits.sum(-1))
    gradient_shapes = [tensor.shape for tensor in inputs.differentiable()]
    expected_grads = gradient_triplet(sbn_log_weights_ref, tensors, grad_log_weights)[1:]
    return {
        "sbn_log_weights": (lambda: genvar.sbn_log_weights(*tensors), [(8, 256)],
                            reference_pair(sbn_log_weights_ref, *tensors)),
        "sbn_log_weights_backward": (
            lambda: genvar.sbn_log_weights_backward(grad_log_weights, *tensors),
            gradient_shapes, expected_grads),
        "sbn_log_weights_and_grad": (
            lambda: genvar.sbn_log_weights_and_grad(*tensors), [(8, 256), (8, 256, 100)],
            reference_pair(reference_with_dlogits, *tensors)),
        "sbn_log_weights_and_grad_backward_": (
            lambda: training_path_gradients(grad_log_weights, *tensors), gradient_shapes,
            expected_grads),
    }


@pytest.mark.parametrize("op_name", ["sbn_log_weights", "sbn_log_weights_backward",
                                     "sbn_log_weights_and_grad",
                                     "sbn_log_weights_and_grad_backward_"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_every_output_element_is_written(request, device, dtype, op_name):
    """Runs the op after leaving NaN-filled blocks of its output sizes in the
    allocator: an element the kernel never writes keeps its NaN and fails the
    comparison. Skips if the allocator never handed a poisoned block back."""
    run_op, output_shapes, expected = poison_cases(generator_for(request), dtype, device)[op_name]
    poison_took = []
    for _ in range(POISON_ROUNDS):
        poison_took.append(poison_allocator(output_shapes, dtype, device))
        assert_matches_reference(run_op(), *expected)
    if not any(poison_took):
        pytest.skip(f"the {device} allocator never reused a poisoned block")
