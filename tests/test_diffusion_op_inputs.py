"""The diffusion KL ops at the edges of their input: bad arguments (a clear error
naming the argument), non-binary data, memory layouts, empty sizes, and every output
element written. Agreement with the references is in test_diffusion_ops.py.

Shapes are (T', B, D): step slices, batch and data dimension; T = 1000 schedule steps.
"""

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops.diffusion import diffusion_binomial_kl_ref, diffusion_gaussian_kl_ref
from helpers import (DEVICES, DTYPES, assert_close_to_reference, dtype_id, generator_for,
                     make_diffusion_inputs, poison_allocator, reference_pair, replaced,
                     requires_cuda_ops, strided, transposed)

genvar = torch.ops.genvar
NAN = float("nan")
KINDS = ["binomial", "gaussian"]
OPS = {"binomial": genvar.diffusion_binomial_kl, "gaussian": genvar.diffusion_gaussian_kl}
BACKWARD_OPS = {"binomial": genvar.diffusion_binomial_kl_backward,
                "gaussian": genvar.diffusion_gaussian_kl_backward}
AND_GRAD_OPS = {"binomial": genvar.diffusion_binomial_kl_and_grad,
                "gaussian": genvar.diffusion_gaussian_kl_and_grad}
REFERENCES = {"binomial": diffusion_binomial_kl_ref, "gaussian": diffusion_gaussian_kl_ref}


def calls(kind, inputs):
    """Every op of the family that takes these inputs: forward, training path, backward."""
    grad = torch.ones(inputs.steps.shape, dtype=inputs.outputs[0].dtype)
    return [lambda: OPS[kind](*inputs.args()), lambda: AND_GRAD_OPS[kind](*inputs.args()),
            lambda: BACKWARD_OPS[kind](grad, *inputs.args())]


def replaced_output(index, function):
    def change(inputs):
        outputs = list(inputs.outputs)
        outputs[index] = function(outputs[index])
        return replaced(inputs, outputs=tuple(outputs))
    return change


# name -> (change to valid float32 inputs with T' = 3, B = 2, D = 5, T = 10; argument named
# first). Output 0 is logits or mean; output 1, log_var, only in the Gaussian op.
BAD_INPUTS = {
    "output rank 2": (replaced_output(0, lambda t: t[0]), "{output}"),
    "output int64": (replaced_output(0, lambda t: t.long()), "{output}"),
    "output float16": (lambda i: i.to(dtype=torch.float16), "{output}"),
    "x0 rank 3": (lambda i: replaced(i, x0=i.x0[None]), "x0"),
    "x0 batch": (lambda i: replaced(i, x0=i.x0[:1]), "x0"),
    "x0 data dim": (lambda i: replaced(i, x0=i.x0[:, :4]), "x0"),
    "x0 float64": (lambda i: replaced(i, x0=i.x0.double()), "x0"),
    "xt rank 2": (lambda i: replaced(i, xt=i.xt[0]), "xt"),
    "xt slices": (lambda i: replaced(i, xt=i.xt[:2]), "xt"),
    "xt float64": (lambda i: replaced(i, xt=i.xt.double()), "xt"),
    "steps rank 1": (lambda i: replaced(i, steps=i.steps[0]), "steps"),
    "steps shape": (lambda i: replaced(i, steps=i.steps[:, :1]), "steps"),
    "steps int32": (lambda i: replaced(i, steps=i.steps.int()), "steps"),
    "steps float": (lambda i: replaced(i, steps=i.steps.float()), "steps"),
    "step 0": (lambda i: replaced(i, steps=torch.where(i.steps == 1, 0, i.steps)), "steps"),
    "step T + 1": (lambda i: replaced(i, steps=i.steps.clamp(max=9) + (i.steps == 10) * 2),
                   "steps"),
    "step -5": (lambda i: replaced(i, steps=i.steps.index_fill(1, torch.tensor([1]), -5)),
                "steps"),
    "betas rank 2": (lambda i: replaced(i, betas=i.betas[None]), "betas"),
    "betas empty": (lambda i: replaced(i, betas=i.betas[:0]), "betas"),
    "betas int64": (lambda i: replaced(i, betas=torch.ones(10, dtype=torch.long)), "betas"),
    "beta 0": (lambda i: replaced(i, betas=i.betas.index_fill(0, torch.tensor([3]), 0.0)),
               "betas"),
    "beta 1.5": (lambda i: replaced(i, betas=i.betas.index_fill(0, torch.tensor([9]), 1.5)),
                 "betas"),
    "beta negative": (lambda i: replaced(i, betas=-i.betas), "betas"),
    "beta NaN": (lambda i: replaced(i, betas=i.betas.index_fill(0, torch.tensor([0]), NAN)),
                 "betas"),
}
GAUSSIAN_ONLY = {
    "log_var shape": (replaced_output(1, lambda t: t[:, :1]), "log_var"),
    "log_var float64": (replaced_output(1, lambda t: t.double()), "log_var"),
}
OUTPUT_NAMES = {"binomial": "logits", "gaussian": "mean"}


def valid_float32_inputs(request, kind):
    return make_diffusion_inputs(generator_for(request), kind, 3, 2, 5, num_steps=10,
                                 dtype=torch.float32)


@pytest.mark.parametrize("case", [*BAD_INPUTS, *GAUSSIAN_ONLY])
@pytest.mark.parametrize("kind", KINDS)
def test_rejects_bad_input_naming_it(request, kind, case):
    if case in GAUSSIAN_ONLY and kind != "gaussian":
        pytest.skip("the binomial op has no log_var")
    change, argument = {**BAD_INPUTS, **GAUSSIAN_ONLY}[case]
    argument = argument.format(output=OUTPUT_NAMES[kind])
    inputs = change(valid_float32_inputs(request, kind))
    for call in calls(kind, inputs):
        with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
            call()


@pytest.mark.parametrize("kind", KINDS)
def test_errors_say_what_was_expected(request, kind):
    inputs = valid_float32_inputs(request, kind)
    steps = inputs.steps.clone()
    steps[2, 1] = 11
    with pytest.raises(RuntimeError, match=r"steps must hold 1-based steps in \[1, T\] = "
                                           r"\[1, 10\], got steps\[2, 1\] = 11"):
        OPS[kind](*replaced(inputs, steps=steps).args())
    betas = inputs.betas.clone()
    betas[4] = 2.0
    with pytest.raises(RuntimeError, match=r"betas must lie in \(0, 1\], got betas\[4\] = 2"):
        OPS[kind](*replaced(inputs, betas=betas).args())
    with pytest.raises(RuntimeError,
                       match=r"x0 must have shape \[B, D\].*= \[2, 5\], got \[2, 4\]"):
        OPS[kind](*replaced(inputs, x0=inputs.x0[:, :4]).args())


@pytest.mark.parametrize("grad", [torch.ones(3, 3), torch.ones(3), torch.ones(3, 2).double()],
                         ids=["shape", "rank", "dtype"])
@pytest.mark.parametrize("kind", KINDS)
def test_backward_rejects_bad_grad(request, kind, grad):
    inputs = valid_float32_inputs(request, kind)
    with pytest.raises(RuntimeError, match=r"^grad\b"):
        BACKWARD_OPS[kind](grad, *inputs.args())
    buffers = tuple(torch.zeros_like(output) for output in inputs.outputs)
    with pytest.raises(RuntimeError, match=r"^grad\b"):
        getattr(genvar, f"diffusion_{kind}_kl_and_grad_backward_")(grad, *buffers)


@pytest.mark.parametrize("argument, index, value", [
    ("x0", (1, 3), 0.5), ("x0", (0, 0), NAN), ("xt", (2, 1, 4), 2.0), ("xt", (0, 1, 0), -1.0)])
def test_non_binary_data_is_an_error_on_the_cpu(request, argument, index, value):
    inputs = valid_float32_inputs(request, "binomial")
    getattr(inputs, argument)[index] = value
    where = ", ".join(map(str, index))
    message = rf"^{argument} must hold binary values \(0 or 1\).*{argument}\[{where}\] = {value:g}"
    for call in calls("binomial", inputs):
        with pytest.raises(RuntimeError, match=message):
            call()


@requires_cuda_ops
def test_non_binary_data_makes_its_row_nan_on_cuda(request):
    inputs = valid_float32_inputs(request, "binomial").to(device="cuda")
    inputs.xt[2, 1, 4] = 0.5
    kl = OPS["binomial"](*inputs.args())
    assert kl[2, 1].isnan() and kl.isnan().sum() == 1
    grad = BACKWARD_OPS["binomial"](torch.ones_like(kl), *inputs.args())
    assert grad[2, 1, 4].isnan() and grad.isnan().sum() == 1


@requires_cuda_ops
@pytest.mark.parametrize("argument", ["x0", "xt", "steps", "betas"])
def test_rejects_mixed_devices(request, argument):
    inputs = valid_float32_inputs(request, "gaussian").to(device="cuda")
    inputs = replaced(inputs, **{argument: getattr(inputs, argument).cpu()})
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        OPS["gaussian"](*inputs.args())


# ---------------------------------------------------------------------------
# Memory layouts, empty sizes


LAYOUTS = {"transposed": transposed, "strided": strided}


def forward_and_gradients(kind, inputs, upstream):
    leaves = inputs.requiring_grad()
    kl = OPS[kind](*leaves.args())
    return (kl, *torch.autograd.grad(kl, leaves.outputs, upstream))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_inputs_match_contiguous(request, kind, device, layout):
    inputs = make_diffusion_inputs(generator_for(request), kind, 4, 3, 16, device=device)
    upstream = torch.randn(inputs.steps.shape, dtype=torch.float64, device=device)
    expected = forward_and_gradients(kind, inputs, upstream)
    rearrange = LAYOUTS[layout]
    rearranged = replaced(inputs, x0=rearrange(inputs.x0), xt=rearrange(inputs.xt),
                          outputs=tuple(map(rearrange, inputs.outputs)),
                          steps=rearrange(inputs.steps), betas=inputs.betas[None].mT[:, 0])
    assert not rearranged.xt.is_contiguous()
    torch.testing.assert_close(forward_and_gradients(kind, rearranged, upstream), expected)


@pytest.mark.parametrize("shape", [(0, 3, 5), (3, 0, 5), (3, 2, 0)], ids=["T'=0", "B=0", "D=0"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_sizes(request, kind, device, shape):
    inputs = make_diffusion_inputs(generator_for(request), kind, *shape, device=device)
    upstream = torch.ones(inputs.steps.shape, dtype=torch.float64, device=device)
    kl, *grads = forward_and_gradients(kind, inputs, upstream)
    assert kl.shape == shape[:2] and (kl == 0).all()
    assert [grad.shape for grad in grads] == [output.shape for output in inputs.outputs]


# ---------------------------------------------------------------------------
# Every output element is written


POISON_ROUNDS = 5


@pytest.mark.parametrize("pass_name", ["forward", "and_grad", "backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_output_element_is_written(request, kind, device, dtype, pass_name):
    """Runs the op after leaving NaN-filled blocks of its output sizes in the allocator:
    an element the kernel never writes keeps its NaN and fails the comparison. B = 256:
    the CPU allocator reuses freed blocks of this size dependably."""
    generator = generator_for(request)
    inputs = make_diffusion_inputs(generator, kind, 8, 256, 100, dtype=dtype, device=device)
    if pass_name == "forward":
        output_shapes = [(8, 256)]
        expected = reference_pair(REFERENCES[kind], *inputs.args())
        run_op = lambda: OPS[kind](*inputs.args())  # noqa: E731
    else:
        output_shapes = [output.shape for output in inputs.outputs]
        upstream = torch.randn((8, 256), generator=generator, dtype=torch.float64).to(inputs.x0)
        expected = [torch.autograd.grad(REFERENCES[kind](*leaves.args()), leaves.outputs,
                                        upstream.to(leaves.x0))
                    for leaves in (inputs.requiring_grad(),
                                   inputs.to(dtype=torch.float64).requiring_grad())]
        if pass_name == "backward":
            def run_op():
                grads = BACKWARD_OPS[kind](upstream, *inputs.args())
                return grads if isinstance(grads, tuple) else (grads,)
        else:
            output_shapes = [(8, 256), *output_shapes]

            def run_op():
                kl, *buffers = AND_GRAD_OPS[kind](*inputs.args())
                return tuple(buffer * upstream.unsqueeze(-1) for buffer in buffers)
    poison_took = []
    for _ in range(POISON_ROUNDS):
        poison_took.append(poison_allocator(output_shapes, dtype, device))
        assert_close_to_reference(run_op(), *expected)
    if not any(poison_took):
        pytest.skip(f"the {device} allocator never reused a poisoned block")
