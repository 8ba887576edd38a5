"""The mixture-density op: `genvar::mixture_log_density`, the data-convolved prior
of the denoising autoencoder, p(z) = (1/N) sum_n N(z; c_n, scale^2 I).

Shapes use M (query points), N (mixture components) and Z (dimension).
"""
import math

import torch

from genvar_bench.ops.registry import define_op


def mixture_log_density_ref(z, centers, scale: float):
    """log (1/N) sum_n N(z_m; centers_n, scale^2 I) for every row z_m.

    z [M, Z], centers [N, Z], scale > 0 (one standard deviation shared by every
    component and dimension). Returns [M]. Computed from exact squared distances
    (differences, not the expanded ||z||^2 - 2 z.c + ||c||^2), in row chunks that
    keep about 2^24 differences at once: the specification, not the fast path.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    num_components, dim = centers.shape
    log_norm = math.log(num_components) + 0.5 * dim * math.log(2 * math.pi * scale**2)
    rows = max(1, 2**24 // max(1, num_components * dim))
    chunks = []
    for start in range(0, z.shape[0], rows):
        squared = ((z[start:start + rows, None, :] - centers[None, :, :]) ** 2).sum(-1)
        chunks.append(torch.logsumexp(-0.5 * squared / scale**2, dim=1) - log_norm)
    return torch.cat(chunks) if chunks else z.new_empty(0)


def fused_mixture_log_density(z, centers, scale: float):
    """`genvar::mixture_log_density`: the same [M] as mixture_log_density_ref.

    One GEMM per tile gives the squared distances as |z|^2 - 2 z.c + |c|^2 after
    centring on the mean of the centers; the terms that dominate each sum are then
    recomputed from exact differences in double, so float32 results stay within a
    few ulp of the float64 reference at any scale (see tests/test_mixture_ops.py).
    `scale` may be any real number type."""
    return torch.ops.genvar.mixture_log_density(z, centers, float(scale))


def _check_shapes(z, centers, scale):
    torch._check(z.dim() == 2, lambda: f"z must be [M, Z], got {tuple(z.shape)}")
    torch._check(centers.dim() == 2 and centers.shape[1] == z.shape[1],
                 lambda: f"centers must be [N, Z], Z = {z.shape[1]}, got {tuple(centers.shape)}")
    torch._check(centers.shape[0] > 0, lambda: "centers must have N > 0 components")
    torch._check(math.isfinite(scale) and scale > 0,
                 lambda: f"scale must be finite and > 0, got {scale}")


def _fake(z, centers, scale):
    _check_shapes(z, centers, scale)
    return z.new_empty(z.shape[:1])


def _setup_context(ctx, inputs, output):
    z, centers, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(z, centers)


def _backward(ctx, grad_log_density):
    # A custom op of its own: it recomputes every tile's GEMM, with the same
    # care over rounding as the forward (see csrc/ops/mixture.h).
    z, centers = ctx.saved_tensors
    grad_z, grad_centers = torch.ops.genvar.mixture_log_density_backward(
        grad_log_density, z, centers, ctx.scale)
    return (grad_z if ctx.needs_input_grad[0] else None,
            grad_centers if ctx.needs_input_grad[1] else None, None)


def _backward_fake(grad_log_density, z, centers, scale):
    _check_shapes(z, centers, scale)
    return torch.empty_like(z), torch.empty_like(centers)


define_op("mixture_log_density", mixture_log_density_ref, _fake, fused=fused_mixture_log_density,
          autograd=(_backward, _setup_context), backward_fake=_backward_fake)
