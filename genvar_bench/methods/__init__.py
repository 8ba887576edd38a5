"""Built-in methods; importing this package registers them in `genvar_bench.core.METHODS`."""
from genvar_bench.methods import vae  # noqa: F401
