"""genvar-bench: deep generative models trained and compared as KL(q(x, tau) || p(x, tau)).

Importing the package loads the `genvar` op library (genvar_bench._C) and
registers the ops' fake kernels and autograd formulas; the pure-PyTorch
reference path works without it (`--backend reference`).

The public API, for methods brought from outside (docs/adding-a-method.md):
`Method`, `InferenceModel` (q), `GenerativeModel` (p), `Draw`, `Option`, `register`,
`build_method`, `load_dataset`, `load_model`, and the model families under
`genvar_bench.methods`.
"""
from genvar_bench._extension import extension_available, require_extension

__all__ = ["Draw", "GenerativeModel", "InferenceModel", "Method", "Option", "build_method", "extension_available", "load_dataset", "load_model",
           "register", "require_extension"]
__version__ = "0.1.0"

from genvar_bench import ops  # noqa: E402  (registers fake kernels and autograd)
from genvar_bench.core import Draw, GenerativeModel, InferenceModel, Method  # noqa: E402
from genvar_bench.registry import Option, register  # noqa: E402
from genvar_bench import fashion_mnist  # noqa: E402,F401  (registers its datasets)
from genvar_bench.data import load_dataset  # noqa: E402
from genvar_bench.methods import build_method  # noqa: E402


def load_model(path, device="cpu", backend=None, plugins=()):
    """(method, info) of a kept model file: see `genvar_bench.saved.load_model`; a
    plug-in method's model needs its plug-in named in `plugins`."""
    from genvar_bench.saved import load_model as load

    return load(path, device=device, backend=backend, plugins=plugins)
