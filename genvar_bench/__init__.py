"""genvar-bench: deep generative models trained and compared as KL(q(x, tau) || p(x, tau)).

Importing the package loads the `genvar` op library (genvar_bench._C) and
registers the ops' fake kernels and autograd formulas; the pure-PyTorch
reference path works without it (`--backend reference`).
"""
from genvar_bench._extension import extension_available, require_extension

__all__ = ["extension_available", "load_model", "require_extension"]
__version__ = "0.1.0"

from genvar_bench import ops  # noqa: E402  (registers fake kernels and autograd)


def load_model(path, device="cpu", backend=None):
    """(method, info) of a kept model file: see `genvar_bench.saved.load_model`."""
    from genvar_bench.saved import load_model as load

    return load(path, device=device, backend=backend)
