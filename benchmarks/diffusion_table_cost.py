"""The cost of a diffusion KL op call by schedule length T at fixed sizes: since each
schedule's table is cached (csrc/ops/diffusion.cpp), T = 1000 should cost what T = 100 does.
Medians of 5 rounds of 200 forward+backward calls, one thread:

    python -m benchmarks.diffusion_table_cost
"""
import time

import torch

import genvar_bench  # noqa: F401
from genvar_bench.ops import fused_diffusion_binomial_kl

if fused_diffusion_binomial_kl is None:  # it has a training path: never None
    raise SystemExit("no fused diffusion_binomial_kl")
binomial_kl = fused_diffusion_binomial_kl
torch.set_num_threads(1)
res: dict[tuple[int, int, int, int], list[float]] = {}
for rep in range(5):
    for T in (100, 1000):
        betas = 1 / (T - torch.arange(1, T + 1, dtype=torch.float64) + 1); betas[0] = 1e-3
        for (S, B, D) in [(10, 20, 64), (10, 20, 784)]:
            g = torch.Generator().manual_seed(0)
            x0 = torch.bernoulli(torch.full((B, D), .3), generator=g)
            xt = torch.bernoulli(torch.full((S, B, D), .3), generator=g)
            lg = torch.randn(S, B, D, generator=g, requires_grad=True)
            steps = torch.randint(1, T + 1, (S, B), generator=g)
            def run():
                binomial_kl(x0, xt, lg, steps, betas).sum().backward()
            for _ in range(10): run()
            t = time.perf_counter()
            for _ in range(200): run()
            res.setdefault((T, S, B, D), []).append((time.perf_counter() - t) / 200 * 1e6)
for key, v in res.items():
    v.sort(); print(key, f"{v[2]:.0f} us")
