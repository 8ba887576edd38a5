"""Tests of the fused IWAE ops (torch.ops.genvar.*) against their pure-PyTorch
references in genvar_bench/ops/, which are the specification.

Shapes are (k, B, D, Z): samples per example, batch, data and latent dimension.
"""

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops import iwae_bound_ref, iwae_log_weights_ref
from helpers import (DEVICES, DTYPES, assert_close_to_reference, dtype_id, generator_for, gradients,
                     make_iwae_inputs, make_log_weights, misaligned, poison_allocator, random_like,
                     reference_pair, replaced, requires_cuda_ops, shape_id, strided, transposed)

genvar = torch.ops.genvar
NAN, INF = float("nan"), float("inf")

# k = 1, B = 1, Z = 1, D odd, D below and at a multiple of the CUDA pack width, MNIST-sized.
SHAPES = [(1, 1, 3, 1), (4, 1, 13, 1), (1, 6, 10, 4), (5, 7, 16, 3), (3, 9, 784, 50)]
LOGIT_RANGES = {
    "moderate": dict(logits_scale=3.0),
    # Saturated sigmoids and softplus, where a naive log(1 + exp(l)) overflows.
    "extreme": dict(logits_scale=30.0, planted_logits=(80.0, -80.0, 1e4, -1e4, 1e3, -1e3)),
}
# (k, B); sums over thousands of samples have their own test, test_sums_over_large_k_are_accurate.
BOUND_SHAPES = [(1, 1), (1, 5), (7, 1), (50, 100), (300, 20)]


def reference_gradient_pair(reference, inputs, wrt, grad_outputs):
    """Gradients of the reference in the inputs' dtype and on float64 upcasts."""
    upcast_inputs = [tensor.double() for tensor in inputs]
    upcast_grad_outputs = [grad.double() for grad in grad_outputs]
    return (gradients(reference, inputs, wrt, grad_outputs),
            gradients(reference, upcast_inputs, wrt, upcast_grad_outputs))


def gradient_triplet(op, reference, inputs, wrt, grad_outputs):
    """Gradients of the op and reference_gradient_pair: the arguments of
    assert_close_to_reference."""
    return (gradients(op, inputs, wrt, grad_outputs),
            *reference_gradient_pair(reference, inputs, wrt, grad_outputs))


LOG_WEIGHTS_DIFFERENTIABLE = (0, 2, 3, 4)  # logits, z, mu, logvar; not the data x


# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("logit_range", LOGIT_RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_log_weights_matches_reference(request, device, dtype, shape, logit_range):
    inputs = make_iwae_inputs(generator_for(request), *shape, dtype=dtype, device=device,
                              **LOGIT_RANGES[logit_range])
    actual = genvar.iwae_log_weights(*inputs.tensors())
    assert_close_to_reference(actual, *reference_pair(iwae_log_weights_ref, *inputs.tensors()))


@pytest.mark.parametrize("logit_range", LOGIT_RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_log_weights_gradients_match_reference(request, device, dtype, shape, logit_range):
    generator = generator_for(request)
    inputs = make_iwae_inputs(generator, *shape, dtype=dtype, device=device,
                              **LOGIT_RANGES[logit_range])
    grad_log_weights = random_like(generator, inputs.logits[..., 0])
    assert_close_to_reference(*gradient_triplet(
        genvar.iwae_log_weights, iwae_log_weights_ref, inputs.tensors(),
        LOG_WEIGHTS_DIFFERENTIABLE, [grad_log_weights]))


@pytest.mark.parametrize("shape", BOUND_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_matches_reference(request, device, dtype, shape):
    log_weights = make_log_weights(generator_for(request), *shape, dtype=dtype, device=device)
    assert_close_to_reference(genvar.iwae_bound(log_weights),
                              *reference_pair(iwae_bound_ref, log_weights))


@pytest.mark.parametrize("shape", BOUND_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_gradients_match_reference(request, device, dtype, shape):
    generator = generator_for(request)
    log_weights = make_log_weights(generator, *shape, dtype=dtype, device=device)
    grad_bound = random_like(generator, log_weights[0])
    grad_weights = random_like(generator, log_weights)
    assert_close_to_reference(*gradient_triplet(
        genvar.iwae_bound, iwae_bound_ref, [log_weights], (0,), [grad_bound, grad_weights]))


@pytest.mark.parametrize("device", DEVICES)
def test_log_weights_gradcheck(request, device):
    inputs = make_iwae_inputs(generator_for(request), 3, 2, 5, 2, device=device).requiring_grad()

    def log_weights_given_x(logits, z, mu, logvar):
        return genvar.iwae_log_weights(logits, inputs.x, z, mu, logvar)

    assert torch.autograd.gradcheck(log_weights_given_x, inputs.differentiable())


@pytest.mark.parametrize("device", DEVICES)
def test_bound_gradcheck_through_bound_and_weights(request, device):
    log_weights = make_log_weights(generator_for(request), 4, 3, device=device, scale=2.0)
    log_weights[1, 2] = -INF  # a sample impossible under the model: weight 0, gradient 0
    assert torch.autograd.gradcheck(genvar.iwae_bound, (log_weights.requires_grad_(),))


# ---------------------------------------------------------------------------
# Registration: schemas, fake kernels, autograd, torch.compile


def opcheck_cases(generator, dtype, device):
    """(op, args) for each op, differentiable inputs requiring grad."""
    inputs = make_iwae_inputs(generator, 3, 4, 10, 5, dtype=dtype, device=device)
    log_weights = make_log_weights(generator, 3, 4, dtype=dtype, device=device)
    bound, weights = iwae_bound_ref(log_weights)
    return {
        "iwae_log_weights": (genvar.iwae_log_weights, inputs.requiring_grad().tensors()),
        "iwae_log_weights_backward": (genvar.iwae_log_weights_backward,
                                      (random_like(generator, log_weights), *inputs.tensors())),
        "iwae_bound": (genvar.iwae_bound, (log_weights.clone().requires_grad_(),)),
        "iwae_bound_backward": (genvar.iwae_bound_backward,
                                (random_like(generator, bound), random_like(generator, weights),
                                 weights)),
    }


OP_NAMES = ["iwae_log_weights", "iwae_log_weights_backward", "iwae_bound", "iwae_bound_backward"]


@pytest.mark.parametrize("op_name", OP_NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(request, device, dtype, op_name):
    op, args = opcheck_cases(generator_for(request), dtype, device)[op_name]
    torch.library.opcheck(op, args)


def iwae_objective(logits, x, z, mu, logvar):
    """The per-batch IWAE bound and the weights, through both fused ops."""
    bound, weights = genvar.iwae_bound(genvar.iwae_log_weights(logits, x, z, mu, logvar))
    return bound.mean(), weights


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_fullgraph_matches_eager(request, device):
    generator = generator_for(request)
    inputs = make_iwae_inputs(generator, 4, 3, 20, 5, dtype=torch.float32, device=device)
    weights_cotangent = random_like(generator, inputs.logits[..., 0])
    compiled = torch.compile(iwae_objective, fullgraph=True)
    results = []
    for function in (iwae_objective, compiled):
        leaves = inputs.requiring_grad()
        bound, weights = function(*leaves.tensors())
        (bound + (weights * weights_cotangent).sum()).backward()
        results.append((bound, weights, *(leaf.grad for leaf in leaves.differentiable())))
    torch.testing.assert_close(results[1], results[0])


# ---------------------------------------------------------------------------
# Sums over many samples


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_sums_over_large_k_are_accurate(request, device, dtype):
    """k = 5000 as in the IWAE paper's test NLL, with log weights close together
    (a well-fitted q), so that every sample adds to the sums over k."""
    generator = generator_for(request)
    num_samples = 5000
    log_weights = make_log_weights(generator, num_samples, 128, dtype=dtype, device=device,
                                   scale=1.0)
    grad_bound = random_like(generator, log_weights[0])
    grad_weights = random_like(generator, log_weights)
    assert_close_to_reference(genvar.iwae_bound(log_weights),
                              *reference_pair(iwae_bound_ref, log_weights))
    assert_close_to_reference(*gradient_triplet(
        genvar.iwae_bound, iwae_bound_ref, [log_weights], (0,), [grad_bound, grad_weights]))
    inputs = make_iwae_inputs(generator, num_samples, 16, 10, 5, dtype=dtype, device=device)
    assert_close_to_reference(*gradient_triplet(
        genvar.iwae_log_weights, iwae_log_weights_ref, inputs.tensors(),
        LOG_WEIGHTS_DIFFERENTIABLE, [random_like(generator, inputs.logits[..., 0])]))


# ---------------------------------------------------------------------------
# Argument checks: a clear error that names the argument


# name -> (change to valid float32 inputs with k = 3, B = 2, D = 5, Z = 4; argument named first)
BAD_LOG_WEIGHTS_INPUTS = {
    "logits rank 2": (lambda i: replaced(i, logits=i.logits[0]), "logits"),
    "x rank 3": (lambda i: replaced(i, x=i.x[None]), "x"),
    "z rank 2": (lambda i: replaced(i, z=i.z[0]), "z"),
    "mu rank 1": (lambda i: replaced(i, mu=i.mu[0]), "mu"),
    "logvar rank 3": (lambda i: replaced(i, logvar=i.logvar[None]), "logvar"),
    "x batch": (lambda i: replaced(i, x=i.x[:1]), "x"),
    "x data dim": (lambda i: replaced(i, x=i.x[:, :4]), "x"),
    "z samples": (lambda i: replaced(i, z=i.z[:2]), "z"),
    "z batch": (lambda i: replaced(i, z=i.z[:, :1]), "z"),
    "mu batch": (lambda i: replaced(i, mu=i.mu[:1]), "mu"),
    "mu latent dim": (lambda i: replaced(i, mu=i.mu[:, :3]), "mu"),
    "logvar latent dim": (lambda i: replaced(i, logvar=i.logvar[:, :3]), "logvar"),
    "x float64": (lambda i: replaced(i, x=i.x.double()), "x"),
    "z float64": (lambda i: replaced(i, z=i.z.double()), "z"),
    "mu float64": (lambda i: replaced(i, mu=i.mu.double()), "mu"),
    "logvar float64": (lambda i: replaced(i, logvar=i.logvar.double()), "logvar"),
    "logits int64": (lambda i: replaced(i, logits=i.logits.long()), "logits"),
    "x int64": (lambda i: replaced(i, x=i.x.long()), "x"),
    "logits float16": (lambda i: i.to(dtype=torch.float16), "logits"),
    "k = 0": (lambda i: replaced(i, logits=i.logits[:0], z=i.z[:0]), "logits"),
}


def valid_float32_inputs(request):
    return make_iwae_inputs(generator_for(request), 3, 2, 5, 4, dtype=torch.float32)


@pytest.mark.parametrize("case", BAD_LOG_WEIGHTS_INPUTS)
def test_log_weights_rejects_bad_input_naming_it(request, case):
    change, argument = BAD_LOG_WEIGHTS_INPUTS[case]
    inputs = change(valid_float32_inputs(request))
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.iwae_log_weights(*inputs.tensors())
    # The backward op shares the checks and adds its own for grad_log_weights.
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.iwae_log_weights_backward(torch.ones(3, 2), *inputs.tensors())


@pytest.mark.parametrize("grad_log_weights",
                         [torch.ones(3, 3), torch.ones(2), torch.ones(3, 2).double()],
                         ids=["shape", "rank", "dtype"])
def test_log_weights_backward_rejects_bad_grad(request, grad_log_weights):
    inputs = valid_float32_inputs(request)
    with pytest.raises(RuntimeError, match=r"^grad_log_weights\b"):
        genvar.iwae_log_weights_backward(grad_log_weights, *inputs.tensors())


BAD_LOG_WEIGHTS = {"rank 1": torch.zeros(4), "rank 3": torch.zeros(4, 3, 1),
                   "k = 0": torch.zeros(0, 3), "int64": torch.zeros(4, 3, dtype=torch.long)}


@pytest.mark.parametrize("case", BAD_LOG_WEIGHTS)
def test_bound_rejects_bad_log_weights(case):
    with pytest.raises(RuntimeError, match=r"^log_weights\b"):
        genvar.iwae_bound(BAD_LOG_WEIGHTS[case])


BAD_BOUND_GRADS = {  # (grad_bound, grad_weights) for weights [4, 3] float32; argument named first
    "grad_bound shape": (torch.ones(4), torch.ones(4, 3), "grad_bound"),
    "grad_weights shape": (torch.ones(3), torch.ones(3, 3), "grad_weights"),
    "grad_bound dtype": (torch.ones(3).double(), torch.ones(4, 3), "grad_bound"),
    "grad_weights dtype": (torch.ones(3), torch.ones(4, 3).double(), "grad_weights"),
}


@pytest.mark.parametrize("case", BAD_BOUND_GRADS)
def test_bound_backward_rejects_bad_grads(case):
    grad_bound, grad_weights, argument = BAD_BOUND_GRADS[case]
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.iwae_bound_backward(grad_bound, grad_weights, torch.full((4, 3), 0.25))


@requires_cuda_ops
@pytest.mark.parametrize("argument", ["x", "z", "mu", "logvar"])
def test_log_weights_rejects_mixed_devices(request, argument):
    inputs = valid_float32_inputs(request).to(device="cuda")
    inputs = replaced(inputs, **{argument: getattr(inputs, argument).cpu()})
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.iwae_log_weights(*inputs.tensors())


@pytest.mark.parametrize("device", DEVICES)
def test_backward_with_x_requiring_grad_raises_naming_x(request, device):
    leaves = make_iwae_inputs(generator_for(request), 3, 2, 5, 4, device=device).requiring_grad()
    leaves.x.requires_grad_()
    log_weights = genvar.iwae_log_weights(*leaves.tensors())  # the forward is fine
    with pytest.raises(RuntimeError, match=r"\bx\b"):
        log_weights.sum().backward()


# ---------------------------------------------------------------------------
# Memory layouts and empty batches


LAYOUTS = {"transposed": transposed, "strided": strided, "misaligned": misaligned}


def assert_same_up_to_summation_order(actual, expected):
    """A packed and an unpacked kernel may sum in different orders."""
    for actual_part, expected_part in zip(actual, expected, strict=True):
        eps = torch.finfo(expected_part.dtype).eps
        scale = expected_part.abs().max().item() if expected_part.numel() else 1.0
        torch.testing.assert_close(actual_part, expected_part, rtol=64 * eps, atol=64 * eps * scale)


def forward_and_gradients(inputs, upstream):
    """(log_weights, bound, weights, grads of logits, z, mu, logvar) through both ops."""
    leaves = inputs.map(lambda tensor: tensor.detach().requires_grad_(tensor is not inputs.x))
    log_weights = genvar.iwae_log_weights(*leaves.tensors())
    bound, weights = genvar.iwae_bound(log_weights)
    grads = torch.autograd.grad((bound * upstream).sum() + (weights * weights.detach()).sum(),
                                leaves.differentiable())
    return (log_weights, bound, weights, *grads)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_match_contiguous(request, device, dtype, layout):
    generator = generator_for(request)
    inputs = make_iwae_inputs(generator, 4, 3, 16, 5, dtype=dtype, device=device)
    upstream = random_like(generator, inputs.x[:, 0])
    expected = forward_and_gradients(inputs, upstream)
    rearranged = inputs.map(LAYOUTS[layout])
    if layout != "misaligned":
        assert not any(tensor.is_contiguous() for tensor in rearranged.tensors())
    assert_same_up_to_summation_order(forward_and_gradients(rearranged, upstream), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_backward_non_contiguous_matches_contiguous(request, device, layout):
    generator = generator_for(request)
    weights = iwae_bound_ref(make_log_weights(generator, 6, 5, device=device))[1]
    grad_bound, grad_weights = random_like(generator, weights[0]), random_like(generator, weights)
    expected = genvar.iwae_bound_backward(grad_bound, grad_weights, weights)
    rearrange = LAYOUTS[layout]
    actual = genvar.iwae_bound_backward(misaligned(grad_bound), rearrange(grad_weights),
                                        rearrange(weights))
    assert_same_up_to_summation_order([actual], [expected])
    # Autograd hands iwae_bound a stride-0 gradient for weights.sum().
    ones = torch.ones_like(weights)
    expanded = genvar.iwae_bound_backward(grad_bound, ones[:1].expand_as(weights), weights)
    assert_same_up_to_summation_order(
        [expanded], [genvar.iwae_bound_backward(grad_bound, ones, weights)])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_outputs(request, device, dtype):
    inputs = make_iwae_inputs(generator_for(request), 3, 0, 5, 4, dtype=dtype, device=device)
    upstream = inputs.x[:, 0]
    log_weights, bound, weights, *grads = forward_and_gradients(inputs, upstream)
    assert log_weights.shape == (3, 0) and bound.shape == (0,) and weights.shape == (3, 0)
    assert [grad.shape for grad in grads] == [tensor.shape for tensor in inputs.differentiable()]
    grad_log_weights = genvar.iwae_bound_backward(bound, weights, weights)
    assert grad_log_weights.shape == (3, 0)


# ---------------------------------------------------------------------------
# Non-finite values


NAN_POSITIONS = {  # index of one entry of example b = 1, for k = 4, B = 3, D = 10, Z = 5
    "logits": (2, 1, 3), "x": (1, 3), "z": (2, 1, 0), "mu": (1, 0), "logvar": (1, 4),
}


def assert_nan_only_in_example(values, example, batch_dim):
    """NaN somewhere in `example` along batch_dim, and none in any other example."""
    is_nan = values.isnan().movedim(batch_dim, 0)
    assert is_nan[example].any()
    assert not is_nan[torch.arange(is_nan.shape[0]) != example].any()


@pytest.mark.parametrize("argument", NAN_POSITIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_nan_stays_in_its_example(request, device, dtype, argument):
    inputs = make_iwae_inputs(generator_for(request), 4, 3, 10, 5, dtype=dtype, device=device)
    getattr(inputs, argument)[NAN_POSITIONS[argument]] = NAN
    log_weights = genvar.iwae_log_weights(*inputs.tensors())
    assert_nan_only_in_example(log_weights, 1, batch_dim=1)
    assert_close_to_reference(log_weights, *reference_pair(iwae_log_weights_ref, *inputs.tensors()))
    bound, weights = genvar.iwae_bound(log_weights)
    assert_nan_only_in_example(bound, 1, batch_dim=0)
    assert torch.isfinite(weights[:, [0, 2]]).all()
    assert torch.isnan(weights[:, 1]).all()
    assert_close_to_reference((bound, weights), *reference_pair(iwae_bound_ref, log_weights))
    _, _, _, *grads = forward_and_gradients(inputs, torch.ones_like(bound))
    for grad in grads:
        assert torch.isfinite(grad[..., [0, 2], :]).all()


def log_weights_with_edge_columns(dtype, device):
    """Columns: 0 holds +-1e4 (exp overflows unshifted), 1 is all -inf (no sample
    possible), 2 has some -inf entries, 3 is ordinary."""
    log_weights = torch.tensor([[1e4, -INF, -INF, 0.5],
                                [-1e4, -INF, -3.0, -1.0],
                                [9999.0, -INF, -INF, 2.0],
                                [0.0, -INF, 1.0, -0.5]], dtype=torch.float64)
    return log_weights.to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_is_stable_at_extreme_and_infinite_log_weights(device, dtype):
    log_weights = log_weights_with_edge_columns(dtype, device)
    bound, weights = genvar.iwae_bound(log_weights)
    assert_close_to_reference((bound, weights), *reference_pair(iwae_bound_ref, log_weights))
    assert not bound.isnan().any() and not weights.isnan().any()
    assert bound[1] == -INF and (weights[:, 1] == 0).all()
    assert torch.isfinite(bound[[0, 2, 3]]).all()
    assert (weights[log_weights == -INF] == 0).all()
    column_sums = weights[:, [0, 2, 3]].sum(0)
    torch.testing.assert_close(column_sums, torch.ones_like(column_sums))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_gradient_is_finite_beside_infinite_columns(request, device, dtype):
    """The all -inf column must not spill NaN into the other columns' gradients.
    (What that column's own gradient should be, the reference does not say: its
    autograd gives NaN there, from inf * 0.)"""
    generator = generator_for(request)
    log_weights = log_weights_with_edge_columns(dtype, device)
    grad_outputs = [random_like(generator, log_weights[0]), random_like(generator, log_weights)]
    actual, same_dtype, upcast = gradient_triplet(
        genvar.iwae_bound, iwae_bound_ref, [log_weights], (0,), grad_outputs)
    finite_columns = [0, 2, 3]
    assert torch.isfinite(actual[0][:, finite_columns]).all()
    assert_close_to_reference(actual[0][:, finite_columns], same_dtype[0][:, finite_columns],
                              upcast[0][:, finite_columns])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_weights_sum_to_one_at_large_k(request, device, dtype):
    log_weights = make_log_weights(generator_for(request), 5000, 8, dtype=dtype, device=device)
    bound, weights = genvar.iwae_bound(log_weights)
    assert torch.isfinite(bound).all()
    column_sums = weights.sum(0)
    torch.testing.assert_close(column_sums, torch.ones_like(column_sums))


# ---------------------------------------------------------------------------
# Every output element is written


POISON_ROUNDS = 5


def bound_backward_formula(grad_bound, grad_weights, weights):
    """The chain rule through iwae_bound_ref: d bound / d log_w = weights, and the
    softmax Jacobian diag(w) - w w^T applied to grad_weights."""
    return weights * (grad_bound + grad_weights - (weights * grad_weights).sum(0))


def poison_cases(generator, dtype, device):
    """op name -> (a call of the op, its output shapes, reference_pair of its outputs).
    B = 256: the CPU allocator reuses freed blocks of this size dependably."""
    inputs = make_iwae_inputs(generator, 8, 256, 100, 20, dtype=dtype, device=device)
    tensors = inputs.tensors()
    grad_log_weights = random_like(generator, inputs.logits[..., 0])
    log_weights = make_log_weights(generator, 8, 256, dtype=dtype, device=device)
    weights = iwae_bound_ref(log_weights)[1]
    grad_bound, grad_weights = random_like(generator, weights[0]), random_like(generator, weights)
    return {
        "iwae_log_weights": (lambda: genvar.iwae_log_weights(*tensors), [(8, 256)],
                             reference_pair(iwae_log_weights_ref, *tensors)),
        "iwae_log_weights_backward": (
            lambda: genvar.iwae_log_weights_backward(grad_log_weights, *tensors),
            [tensor.shape for tensor in inputs.differentiable()],
            reference_gradient_pair(iwae_log_weights_ref, tensors, LOG_WEIGHTS_DIFFERENTIABLE,
                                    [grad_log_weights])),
        "iwae_bound": (lambda: genvar.iwae_bound(log_weights), [(256,), (8, 256)],
                       reference_pair(iwae_bound_ref, log_weights)),
        "iwae_bound_backward": (
            lambda: genvar.iwae_bound_backward(grad_bound, grad_weights, weights), [(8, 256)],
            reference_pair(bound_backward_formula, grad_bound, grad_weights, weights)),
    }


@pytest.mark.parametrize("op_name", OP_NAMES)
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
        assert_close_to_reference(run_op(), *expected)
    if not any(poison_took):
        pytest.skip(f"the {device} allocator never reused a poisoned block")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_bound_matches_reference_with_plus_infinity_in_one_column_block(request, device, dtype):
    """The CPU kernel takes a vectorised path for column blocks whose max is finite
    and the libm path for a block holding +inf: both must equal the reference."""
    log_weights = make_log_weights(generator_for(request), 7, 40, dtype=dtype, device=device)
    log_weights[2, 35] = INF
    log_weights[:, 3] = -INF
    log_weights[4, 20] = float("nan")
    bound, weights = genvar.iwae_bound(log_weights)
    expected_bound, expected_weights = iwae_bound_ref(log_weights)
    torch.testing.assert_close(bound, expected_bound, equal_nan=True)
    torch.testing.assert_close(weights, expected_weights, equal_nan=True)
