"""The mixture-density op: `genvar::mixture_log_density`, the data-convolved prior
of the denoising autoencoder, p(z) = (1/N) sum_n N(z; c_n, scale^2 I).

Shapes use M (query points), N (mixture components) and Z (dimension).
"""
import math

import torch


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
