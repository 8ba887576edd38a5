"""CMakeLists.txt builds the same `genvar` op library as setup.py, from csrc/sources.txt.

Configures and builds into a temporary directory with the torch of this
interpreter, runs the built ops in a fresh interpreter that never imports
genvar_bench (that would load the installed _C, which registers the same
schemas), and compares their results here with the references of
genvar_bench.ops. Where nvcc exists next to a CPU-only torch, the kernels of the
.cu files must have been compile-checked into the genvar_cuda_kernels object library.
"""
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a subprocess: loads the built library (argv[1]), runs the ops on
# small random CPU inputs and saves inputs and outputs to argv[2], for the
# test process to compare with the references of genvar_bench.ops.
CHECK_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    torch.ops.load_library(sys.argv[1])
    torch.manual_seed(0)
    cases = []
    for dtype in (torch.float64, torch.float32):
        k, batch, data_dim, latent_dim = 5, 3, 7, 4
        inputs = (
            torch.randn(k, batch, data_dim, dtype=dtype) * 3,         # logits
            torch.rand(batch, data_dim, dtype=dtype).round(),         # x
            torch.randn(k, batch, latent_dim, dtype=dtype),           # z
            torch.randn(batch, latent_dim, dtype=dtype),              # mu
            torch.randn(batch, latent_dim, dtype=dtype) * 0.5,        # logvar
        )
        log_weights = torch.ops.genvar.iwae_log_weights(*inputs)
        bound, weights = torch.ops.genvar.iwae_bound(log_weights)
        cases.append({"inputs": inputs, "log_weights": log_weights,
                      "bound": bound, "weights": weights})
    try:
        torch.ops.genvar.iwae_bound(torch.zeros(3))
        rejected = ""
    except RuntimeError as error:
        rejected = str(error)
    torch.save({"cases": cases, "rejected": rejected}, sys.argv[2])
    """
)


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.mark.slow
def test_cmake_builds_and_loads_the_op_library(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found on PATH")
    torch = pytest.importorskip("torch")
    import torch.utils

    build = tmp_path / "build"
    configure = _run([
        cmake, "-S", str(ROOT), "-B", str(build),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DCMAKE_BUILD_TYPE=Release",
    ])
    _run([cmake, "--build", str(build), "--parallel", "2"])

    libraries = sorted(build.glob("_C*.so"))
    assert len(libraries) == 1, (libraries, configure.stdout[-4000:])
    library = libraries[0]
    assert library.name == "_C" + sysconfig.get_config_var("EXT_SUFFIX")

    # A fresh interpreter that does not import genvar_bench (that would load the
    # installed _C, which registers the same schemas), so only this build's ops run.
    results_path = tmp_path / "results.pt"
    _run([sys.executable, "-c", CHECK_SCRIPT, str(library), str(results_path)], cwd=tmp_path)
    results = torch.load(results_path)

    from genvar_bench.ops import iwae_bound_ref, iwae_log_weights_ref

    for case in results["cases"]:
        inputs = case["inputs"]
        tolerance = 1e-10 if inputs[0].dtype == torch.float64 else 1e-4
        expected = iwae_log_weights_ref(*inputs)
        assert case["log_weights"].shape == expected.shape
        torch.testing.assert_close(case["log_weights"], expected, rtol=tolerance, atol=tolerance)
        expected_bound, expected_weights = iwae_bound_ref(case["log_weights"])
        torch.testing.assert_close(case["bound"], expected_bound, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(case["weights"], expected_weights, rtol=tolerance,
                                   atol=tolerance)
    assert "log_weights" in results["rejected"], results["rejected"]

    cuda_kernels = list(build.rglob("iwae_kernel.cu.o"))
    if torch.version.cuda is None and shutil.which("nvcc") is not None:
        # CPU torch with nvcc: the kernels are compile-checked, not linked into _C.
        assert "CUDA mode: KERNELS" in configure.stdout, configure.stdout[-4000:]
        assert cuda_kernels, "nvcc exists but iwae_kernel.cu was not compiled"
        assert all("genvar_cuda_kernels.dir" in str(path) for path in cuda_kernels), cuda_kernels
    elif torch.version.cuda is not None:
        # CUDA torch (its CMake config needs the toolkit): the kernels are in _C.
        assert "CUDA mode: FULL" in configure.stdout, configure.stdout[-4000:]
        assert any("_C.dir" in str(path) for path in cuda_kernels), cuda_kernels
