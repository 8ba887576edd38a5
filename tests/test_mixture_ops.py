"""Tests of genvar::mixture_log_density against mixture_log_density_ref (the
specification), torch.distributions, autograd, opcheck and torch.compile.

Shapes are (M, N, Z): queries, mixture components (centers) and dimension.
"""
import math

import pytest
import torch

import genvar_bench  # noqa: F401  (loads the op library, registers fake kernels and autograd)
from genvar_bench.ops import get_ops
from genvar_bench.ops.mixture import fused_mixture_log_density, mixture_log_density_ref
from helpers import (DEVICES, DTYPES, assert_close_float64, assert_close_to_reference, dtype_id,
                     generator_for, poison_allocator, random_like, reference_pair,
                     requires_cuda_ops, shape_id, strided)

genvar = torch.ops.genvar
NAN, INF = float("nan"), float("inf")
FLOAT32_EPS = torch.finfo(torch.float32).eps

# N = 1, Z = 1, odd sizes, the DAE's Z = 50, and more than one tile of rows
# (2048) and of centers (1024) on the CPU.
SHAPES = [(1, 1, 1), (7, 1, 3), (5, 13, 4), (64, 300, 50), (2100, 1100, 3)]
SCALES = [0.05, 0.2, 1.0]
# The float32 error against the float64 reference, relative to max(1, |log p|),
# that the op keeps at every scale: measured at most 1.2 eps at scales 0.01 to 2
# (0.5 eps, the rounding of the result, wherever the refinement is on), against
# up to 35 eps for the float32 reference and 2e4 eps without the refinement.
FLOAT32_RELATIVE_ERROR = 4 * FLOAT32_EPS


def make_inputs(generator, num_queries, num_components, dim, *, scale, offset=5.0,
                dtype=torch.float64, device="cpu"):
    """(z [M, Z], centers [N, Z]), drawn in float64 and then cast. The centers sit
    around `offset` in every coordinate, away from the origin; the first half of
    the queries are centers plus N(0, scale^2) noise (one component dominates:
    where the expanded square cancels most), the rest independent draws (far from
    every center at small scales)."""
    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    centers = offset + 1.5 * normal(num_components, dim)
    near = num_queries // 2
    picks = torch.randint(num_components, (near,), generator=generator)
    z = torch.cat([centers[picks] + scale * normal(near, dim),
                   offset + 1.5 * normal(num_queries - near, dim)])
    return z.to(dtype=dtype, device=device), centers.to(dtype=dtype, device=device)


def gradients(function, z, centers, scale, upstream):
    leaves = [tensor.detach().clone().requires_grad_() for tensor in (z, centers)]
    return torch.autograd.grad(function(*leaves, scale), leaves, upstream)


# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(request, device, dtype, shape, scale):
    z, centers = make_inputs(generator_for(request), *shape, scale=scale, dtype=dtype,
                             device=device)
    actual = genvar.mixture_log_density(z, centers, scale)
    assert_close_to_reference(actual, *reference_pair(
        lambda *tensors: mixture_log_density_ref(*tensors, scale), z, centers))


@pytest.mark.parametrize("offset", [0.0, 10.0, 100.0])
@pytest.mark.parametrize("scale", [0.01, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("device", DEVICES)
def test_float32_error_is_a_few_ulp_of_the_result(request, device, scale, offset):
    """The DAE's sizes (Z = 50, thousands of centers). Without centring, or
    without the exact recomputation of the dominant terms, the error here is up
    to 1e4 times larger."""
    z, centers = make_inputs(generator_for(request), 200, 4000, 50, scale=scale, offset=offset,
                             dtype=torch.float32, device=device)
    exact = mixture_log_density_ref(z.double(), centers.double(), scale)
    actual = genvar.mixture_log_density(z, centers, scale).double()
    relative = ((actual - exact).abs() / exact.abs().clamp(min=1)).max().item()
    assert relative <= FLOAT32_RELATIVE_ERROR, f"{relative / FLOAT32_EPS:.1f} eps"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_distributions(request, device, dtype):
    z, centers = make_inputs(generator_for(request), 9, 6, 3, scale=0.7, dtype=dtype,
                             device=device)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(6, dtype=dtype, device=device)),
        torch.distributions.Independent(torch.distributions.Normal(centers, 0.7), 1))
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(genvar.mixture_log_density(z, centers, 0.7), mixture.log_prob(z),
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_one_component_is_a_gaussian(request, device, dtype):
    z, centers = make_inputs(generator_for(request), 8, 1, 5, scale=0.3, dtype=dtype,
                             device=device)
    gaussian = torch.distributions.Normal(centers[0], 0.3).log_prob(z).sum(-1)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(genvar.mixture_log_density(z, centers, 0.3), gaussian,
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_far_away_queries_stay_finite_and_exact(request, device, dtype):
    """Every term of the sum underflows in a naive exp, both far out along one
    axis and at a huge distance in every coordinate."""
    generator = generator_for(request)
    _, centers = make_inputs(generator, 1, 40, 6, scale=0.1, dtype=dtype, device=device)
    z = centers[:4].clone()
    z[0, 0] += 50.0
    z[1] -= 40.0
    z[2] = 1e4
    z[3, 2] = -3e3
    squared = ((z[:, None, :] - centers[None]) ** 2).sum(-1)
    assert (torch.exp(-0.5 * squared / 0.1**2).sum(1) == 0).all()  # the naive form fails
    actual = genvar.mixture_log_density(z, centers, 0.1)
    assert torch.isfinite(actual).all()
    assert_close_to_reference(actual, *reference_pair(
        lambda *tensors: mixture_log_density_ref(*tensors, 0.1), z, centers))


@pytest.mark.parametrize("device", DEVICES)
def test_reduced_precision_matmul_setting_keeps_float32_accuracy(request, device):
    """With TF32 or bf16 GEMMs allowed the op widens its refinement band rather
    than return the GEMM's rounding."""
    z, centers = make_inputs(generator_for(request), 100, 2000, 50, scale=0.05,
                             dtype=torch.float32, device=device)
    exact = mixture_log_density_ref(z.double(), centers.double(), 0.05)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        actual = genvar.mixture_log_density(z, centers, 0.05).double()
    finally:
        torch.set_float32_matmul_precision(previous)
    relative = ((actual - exact).abs() / exact.abs().clamp(min=1)).max().item()
    assert relative <= FLOAT32_RELATIVE_ERROR, f"{relative / FLOAT32_EPS:.1f} eps"


# ---------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("scale", [0.1, 1.0])
# More than one tile of centers (1024), and of rows (2048) in the backward.
@pytest.mark.parametrize("shape", [(1, 1, 1), (6, 9, 4), (40, 1500, 8), (2100, 40, 3)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_reference(request, device, dtype, shape, scale):
    generator = generator_for(request)
    z, centers = make_inputs(generator, *shape, scale=scale, dtype=dtype, device=device)
    upstream = random_like(generator, z[:, 0])
    actual = gradients(genvar.mixture_log_density, z, centers, scale, upstream)
    same_dtype = gradients(mixture_log_density_ref, z, centers, scale, upstream)
    upcast = gradients(mixture_log_density_ref, z.double(), centers.double(), scale,
                       upstream.double())
    assert_close_to_reference(actual, same_dtype, upcast)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(request, device):
    z, centers = make_inputs(generator_for(request), 5, 7, 3, scale=0.8, offset=2.0,
                             device=device)
    assert torch.autograd.gradcheck(
        lambda z, centers: genvar.mixture_log_density(z, centers, 0.8),
        (z.requires_grad_(), centers.requires_grad_()))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_of_z_alone_and_of_centers_alone(request, device):
    z, centers = make_inputs(generator_for(request), 6, 5, 3, scale=0.5, device=device)
    grad_z, grad_centers = gradients(genvar.mixture_log_density, z, centers, 0.5,
                                     torch.ones_like(z[:, 0]))
    z_leaf, centers_leaf = z.clone().requires_grad_(), centers.clone().requires_grad_()
    (only_z,) = torch.autograd.grad(genvar.mixture_log_density(z_leaf, centers, 0.5).sum(),
                                    z_leaf)
    (only_centers,) = torch.autograd.grad(
        genvar.mixture_log_density(z, centers_leaf, 0.5).sum(), centers_leaf)
    assert_close_float64(only_z, grad_z)
    assert_close_float64(only_centers, grad_centers)


# ---------------------------------------------------------------------------
# Registration: opcheck, torch.compile


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(request, device, dtype):
    generator = generator_for(request)
    z, centers = make_inputs(generator, 6, 11, 4, scale=0.4, dtype=dtype, device=device)
    torch.library.opcheck(genvar.mixture_log_density,
                          (z.clone().requires_grad_(), centers.clone().requires_grad_(), 0.4))
    torch.library.opcheck(genvar.mixture_log_density_backward,
                          (random_like(generator, z[:, 0]), z, centers, 0.4))


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_fullgraph_matches_eager(request, device):
    generator = generator_for(request)
    z, centers = make_inputs(generator, 12, 30, 5, scale=0.3, dtype=torch.float32,
                             device=device)
    upstream = random_like(generator, z[:, 0])

    def objective(z, centers):
        return (fused_mixture_log_density(z, centers, 0.3) * upstream).sum()

    results = []
    for function in (objective, torch.compile(objective, fullgraph=True)):
        leaves = [tensor.clone().requires_grad_() for tensor in (z, centers)]
        value = function(*leaves)
        value.backward()
        results.append((value, *(leaf.grad for leaf in leaves)))
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("device", DEVICES)
def test_inference_mode_matches_grad_mode(request, device):
    """The CPU forward runs ATen ops on worker threads, which do not inherit
    the caller's inference mode."""
    z, centers = make_inputs(generator_for(request), 600, 50, 4, scale=0.3, device=device)
    expected = genvar.mixture_log_density(z, centers, 0.3)
    with torch.inference_mode():
        z_inference, centers_inference = z.clone(), centers.clone()
        actual = genvar.mixture_log_density(z_inference, centers_inference, 0.3)
    assert_close_float64(actual, expected)


def test_fused_backend_uses_the_op():
    assert get_ops("fused").mixture_log_density is fused_mixture_log_density


# ---------------------------------------------------------------------------
# Layouts, sizes, non-finite values, unwritten outputs


LAYOUTS = {
    "transposed": lambda tensor: tensor.mT.contiguous().mT,
    "strided": strided,
    "row step": lambda tensor: torch.stack([tensor, tensor], 1)[:, 0],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_match_contiguous(request, device, dtype, layout):
    generator = generator_for(request)
    z, centers = make_inputs(generator, 10, 17, 6, scale=0.5, dtype=dtype, device=device)
    upstream = random_like(generator, z[:, 0])
    rearranged = [LAYOUTS[layout](tensor) for tensor in (z, centers)]
    assert not any(tensor.is_contiguous() for tensor in rearranged)
    for (actual, expected) in zip(
            [genvar.mixture_log_density(*rearranged, 0.5),
             *gradients(genvar.mixture_log_density, *rearranged, 0.5, upstream)],
            [genvar.mixture_log_density(z, centers, 0.5),
             *gradients(genvar.mixture_log_density, z, centers, 0.5, upstream)], strict=True):
        torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_no_queries_give_empty_output_and_zero_center_gradient(device, dtype):
    z = torch.empty(0, 4, dtype=dtype, device=device, requires_grad=True)
    centers = torch.randn(3, 4, dtype=dtype, device=device, requires_grad=True)
    log_density = genvar.mixture_log_density(z, centers, 0.5)
    assert log_density.shape == (0,) and log_density.dtype == dtype
    grad_z, grad_centers = torch.autograd.grad(log_density.sum(), (z, centers))
    assert grad_z.shape == (0, 4)
    assert (grad_centers == 0).all() and grad_centers.shape == (3, 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_non_finite_query_only_affects_its_row(request, device, dtype):
    z, centers = make_inputs(generator_for(request), 5, 8, 3, scale=0.5, dtype=dtype,
                             device=device)
    z[1, 2] = NAN
    z[3, 0] = -INF
    actual = genvar.mixture_log_density(z, centers, 0.5)
    assert actual[1].isnan() and actual[3] == -INF
    torch.testing.assert_close(actual, mixture_log_density_ref(z, centers, 0.5), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("device", DEVICES)
def test_every_output_element_is_written(request, device, dtype):
    generator = generator_for(request)
    z, centers = make_inputs(generator, 256, 40, 5, scale=0.3, dtype=dtype, device=device)
    upstream = random_like(generator, z[:, 0])
    expected = reference_pair(lambda *tensors: mixture_log_density_ref(*tensors, 0.3), z, centers)
    expected_grads = [gradients(mixture_log_density_ref, z, centers, 0.3, upstream),
                      gradients(mixture_log_density_ref, z.double(), centers.double(), 0.3,
                                upstream.double())]
    took = []
    for _ in range(3):
        took.append(poison_allocator([(256,), z.shape, centers.shape], dtype, device))
        assert_close_to_reference(genvar.mixture_log_density(z, centers, 0.3), *expected)
        assert_close_to_reference(gradients(genvar.mixture_log_density, z, centers, 0.3, upstream),
                                  *expected_grads)
    if not any(took):
        pytest.skip(f"the {device} allocator never reused a poisoned block")


# ---------------------------------------------------------------------------
# Argument checks: a clear error that names the argument


def valid_inputs():
    return torch.randn(3, 4), torch.randn(5, 4)


BAD_INPUTS = {  # name -> (z, centers, scale, the argument the message starts with)
    "z rank 1": (torch.randn(4), torch.randn(5, 4), 0.5, "z"),
    "z rank 3": (torch.randn(2, 3, 4), torch.randn(5, 4), 0.5, "z"),
    "z int64": (torch.ones(3, 4, dtype=torch.long), torch.randn(5, 4), 0.5, "z"),
    "z float16": (torch.randn(3, 4).half(), torch.randn(5, 4).half(), 0.5, "z"),
    "centers rank 1": (torch.randn(3, 4), torch.randn(4), 0.5, "centers"),
    "centers Z": (torch.randn(3, 4), torch.randn(5, 3), 0.5, "centers"),
    "centers float64": (torch.randn(3, 4), torch.randn(5, 4).double(), 0.5, "centers"),
    "centers N = 0": (torch.randn(3, 4), torch.randn(0, 4), 0.5, "centers"),
    "scale 0": (torch.randn(3, 4), torch.randn(5, 4), 0.0, "scale"),
    "scale negative": (torch.randn(3, 4), torch.randn(5, 4), -1.0, "scale"),
    "scale inf": (torch.randn(3, 4), torch.randn(5, 4), INF, "scale"),
    "scale nan": (torch.randn(3, 4), torch.randn(5, 4), NAN, "scale"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_rejects_bad_input_naming_it(case):
    z, centers, scale, argument = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.mixture_log_density(z, centers, scale)
    with pytest.raises(RuntimeError, match=rf"^{argument}\b"):
        genvar.mixture_log_density_backward(torch.ones(z.shape[0]), z, centers, scale)


@pytest.mark.parametrize("grad_log_density", [torch.ones(4), torch.ones(3, 1),
                                              torch.ones(3).double()],
                         ids=["shape", "rank", "dtype"])
def test_backward_rejects_bad_grad(grad_log_density):
    z, centers = valid_inputs()
    with pytest.raises(RuntimeError, match=r"^grad_log_density\b"):
        genvar.mixture_log_density_backward(grad_log_density, z, centers, 0.5)


@requires_cuda_ops
def test_rejects_mixed_devices():
    z, centers = valid_inputs()
    with pytest.raises(RuntimeError, match=r"^centers\b"):
        genvar.mixture_log_density(z.cuda(), centers, 0.5)


def test_fused_wrapper_accepts_any_real_scale():
    z, centers = valid_inputs()
    expected = genvar.mixture_log_density(z, centers, 0.5)
    torch.testing.assert_close(fused_mixture_log_density(z, centers, 1 / 2), expected)
    assert math.isfinite(fused_mixture_log_density(z, centers, torch.tensor(0.5)).sum().item())
