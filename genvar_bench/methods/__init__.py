"""Built-in methods; importing this package registers them in `genvar_bench.registry.METHODS`.
`build_method` instantiates any registered method: built-in, plugin or entry point."""
from genvar_bench.core import Method
from genvar_bench.registry import METHODS
from genvar_bench.methods import (binomial_diffusion, dae, gaussian_diffusion, rbm,  # noqa: F401
                                  rws, vae)


def build_method(name: str, **config) -> Method:
    """A registered method by name, e.g. `build_method("iwae", data_dim=784, num_samples=5,
    backend="fused")`; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    method = METHODS[name](**config)
    method.registered_as = name  # `registry.record_of` finds a function-built method by it
    return method
