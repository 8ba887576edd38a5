"""Without the compiled library the package still imports, the reference backend
works, and asking for the fused ops says how to build them."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class HideExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "genvar_bench._C":
                raise ImportError("simulated: genvar_bench._C was not built")

    sys.meta_path.insert(0, HideExtension())
    import torch
    import genvar_bench
    from genvar_bench import build_method
    from genvar_bench.ops import get_ops

    assert not genvar_bench.extension_available()
    model = build_method("iwae", data_dim=6, num_samples=3, backend="reference")
    assert torch.isfinite(model.loss(torch.ones(2, 6))).item()
    try:
        get_ops("fused")
    except RuntimeError as error:
        print(error)
    else:
        raise SystemExit("get_ops('fused') did not raise")
""")


def test_missing_extension_gives_build_instructions_and_reference_still_works():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pip install --no-build-isolation -e ." in result.stdout
    assert "--backend reference" in result.stdout
    assert "simulated: genvar_bench._C was not built" in result.stdout
