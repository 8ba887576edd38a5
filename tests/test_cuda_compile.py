"""Compile-checks the CUDA kernels with nvcc alone.

A CPU-only build never compiles csrc/cuda/*.cu, so without this a broken
kernel would only show on a machine with a GPU. Each .cu file holds an op
family's kernels, their launchers and, under GENVAR_WITH_CUDA (defined by the
CUDA builds of setup.py and CMakeLists.txt), their registration with torch.
Left undefined here, the files include no torch header, so plain nvcc suffices.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_SOURCES = sorted((Path(__file__).resolve().parents[1] / "csrc" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc")


def test_cuda_sources_exist():
    assert CUDA_SOURCES, "no csrc/cuda/*.cu file found"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda path: path.name)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    object_file = tmp_path / f"{source.stem}.o"
    command = [NVCC, "-std=c++17", "-O3", "-c", str(source), "-o", str(object_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr}")
