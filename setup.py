"""Builds genvar_bench._C, the `genvar` op library, with torch.utils.cpp_extension.

Install torch first, then `pip install --no-build-isolation -e .` (an isolated
build environment would pull a second, CUDA, torch). CUDA sources are built
when GENVAR_CUDA=1, or with GENVAR_CUDA=auto (the default) where both a CUDA
toolkit and a CUDA build of torch are present; GENVAR_CUDA=0 turns them off.
"""
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit("genvar-bench: install torch first (pip install torch==2.13.0), then "
             "pip install --no-build-isolation -e .")


def read_sources():
    """The source list shared with CMakeLists.txt: csrc/sources.txt."""
    lines = (ROOT / "csrc" / "sources.txt").read_text().splitlines()
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line and not line.startswith("#")]


def cuda_wanted():
    setting = os.environ.get("GENVAR_CUDA", "auto").lower()
    if setting not in ("auto", "0", "1"):
        sys.exit(f"GENVAR_CUDA must be auto, 0 or 1, got {setting!r}")
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if setting == "1" and not available:
        sys.exit("GENVAR_CUDA=1 but no CUDA build of torch with a CUDA toolkit was found "
                 f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})")
    return setting == "1" or (setting == "auto" and available)


def extension():
    with_cuda = cuda_wanted()
    # A .cu file holds an op's CUDA kernels and, under GENVAR_WITH_CUDA, their registration.
    sources = [path for path in read_sources() if with_cuda or not path.endswith(".cu")]
    extension_class = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    return extension_class(
        "genvar_bench._C",
        sources,
        extra_compile_args={"cxx": ["-O3", "-fopenmp", "-fno-trapping-math"], "nvcc": ["-O3"]},
        extra_link_args=["-fopenmp"],
        define_macros=[("GENVAR_WITH_CUDA", "1")] if with_cuda else [],
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
