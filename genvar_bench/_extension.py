"""Loads the compiled op library once, and says how to build it when it is missing."""
import torch

BUILD_HINT = (
    "the genvar op library (genvar_bench._C) is not built. Build it with\n"
    "    pip install torch==2.13.0 && pip install --no-build-isolation -e .\n"
    "from the repository root, or use the pure-PyTorch path with --backend reference."
)

try:
    from genvar_bench import _C  # noqa: F401  (loading registers torch.ops.genvar.*)
    _LOAD_ERROR = None
except ImportError as error:  # the reference backend still works
    _LOAD_ERROR = error


def extension_available() -> bool:
    return _LOAD_ERROR is None


def require_extension() -> None:
    """Raises a RuntimeError that says how to build the op library, if it is missing."""
    if _LOAD_ERROR is not None:
        raise RuntimeError(f"{BUILD_HINT}\n(import error: {_LOAD_ERROR})") from _LOAD_ERROR


def cuda_ops_built() -> bool:
    """Whether the library was built with its CUDA kernels."""
    if _LOAD_ERROR is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("genvar::iwae_log_weights", "CUDA")
