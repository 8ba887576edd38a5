"""The `genvar` ops: pure-PyTorch references (the specification), and the
fake kernels and autograd formulas that make the compiled ops work under
autograd and `torch.compile(fullgraph=True)`. One module per op family; each
registers its ops through `registry.define_op`.

`get_ops(backend)` gives a method its op set: every op under the same name
in both backends, so a method is written once and runs on either.
"""
from types import SimpleNamespace

from genvar_bench._extension import require_extension
from genvar_bench.ops import registry
from genvar_bench.ops.diffusion import (diffusion_binomial_kl_ref, diffusion_gaussian_kl_ref,
                                        fused_diffusion_binomial_kl, fused_diffusion_gaussian_kl)
from genvar_bench.ops.iwae import fused_iwae_log_weights, iwae_bound_ref, iwae_log_weights_ref
from genvar_bench.ops.mixture import fused_mixture_log_density, mixture_log_density_ref
from genvar_bench.ops.rbm import fused_rbm_gibbs, rbm_gibbs_ref
from genvar_bench.ops.sbn import fused_sbn_log_weights, sbn_log_weights_ref

BACKENDS = ("fused", "reference")

REFERENCE = SimpleNamespace(**registry.REFERENCE)


def get_ops(backend: str) -> SimpleNamespace:
    """The op set of a backend: `fused` (the compiled library) or `reference`."""
    if backend == "reference":
        return REFERENCE
    if backend != "fused":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    require_extension()
    return SimpleNamespace(**registry.FUSED)


__all__ = ["BACKENDS", "REFERENCE", "get_ops", "diffusion_binomial_kl_ref",
           "diffusion_gaussian_kl_ref", "fused_diffusion_binomial_kl",
           "fused_diffusion_gaussian_kl", "fused_iwae_log_weights", "fused_mixture_log_density",
           "fused_rbm_gibbs", "fused_sbn_log_weights", "iwae_bound_ref", "iwae_log_weights_ref",
           "mixture_log_density_ref", "rbm_gibbs_ref", "sbn_log_weights_ref"]
