"""Built-in methods; importing this package registers them in `genvar_bench.core.METHODS`."""
from genvar_bench.methods import dae, rws, vae  # noqa: F401
