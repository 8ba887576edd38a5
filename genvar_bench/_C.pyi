# The compiled op library (csrc/, built by `pip install --no-build-isolation -e .`).
# Importing it registers the torch.ops.genvar.* ops; it has no Python API of its own.
# This stub lets mypy resolve `from genvar_bench import _C` where the library is not built.
