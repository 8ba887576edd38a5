"""Built-in methods; importing this package registers them in `genvar_bench.core.METHODS`."""
from genvar_bench.methods import (binomial_diffusion, dae, gaussian_diffusion, rbm,  # noqa: F401
                                  rws, vae)
