"""Estimators of -log p(x) and of latent-space statistics, with bounded memory."""
from __future__ import annotations

import math
from typing import Callable

import torch

# Largest number of decoder outputs (samples x examples x data dims) held at once.
DEFAULT_MAX_ELEMENTS = 2**24


def _batches(num_examples: int, batch_size: int):
    for start in range(0, num_examples, batch_size):
        yield slice(start, min(start + batch_size, num_examples))


@torch.no_grad()
def importance_nll(model, x: torch.Tensor, num_samples: int = 5000, *,
                   max_elements: int = DEFAULT_MAX_ELEMENTS,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Per-example importance-sampled estimate of -log p(x) in nats, [N].

    -log (1/K) sum_i p(x, tau_i) / q(tau_i | x) with K = num_samples draws
    from q (the IWAE paper's test estimator, K = 5000). In expectation it is
    an upper bound on -log p(x) that tightens to it as K grows. Examples and
    samples are both chunked so that at most `max_elements` decoder outputs
    live at once; chunks are combined by a running logsumexp.
    """
    return importance_nll_and_ess(model, x, num_samples, max_elements=max_elements,
                                  progress=progress)[0]


@torch.no_grad()
def importance_nll_and_ess(model, x: torch.Tensor, num_samples: int = 5000, *,
                           max_elements: int = DEFAULT_MAX_ELEMENTS,
                           progress: Callable[[int], None] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """`importance_nll` and, from the same draws, each example's effective sample size
    (sum_i w_i)^2 / sum_i w_i^2 of its K weights, [N]: K when the weights are equal,
    1 when one weight holds all the mass. The draws and the estimate are those of
    `importance_nll`, bit for bit."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    num_examples, data_dim = x.shape
    samples_per_chunk = max(1, min(num_samples, max_elements // max(1, data_dim)))
    batch_size = max(1, max_elements // (samples_per_chunk * max(1, data_dim)))
    out = torch.empty(num_examples, dtype=x.dtype, device=x.device)
    ess = torch.empty(num_examples, dtype=torch.float64, device=x.device)
    for rows in _batches(num_examples, batch_size):
        total = torch.full((rows.stop - rows.start,), -math.inf, dtype=x.dtype, device=x.device)
        squares = torch.full_like(total, -math.inf, dtype=torch.float64)
        for start in range(0, num_samples, samples_per_chunk):
            chunk = min(samples_per_chunk, num_samples - start)
            log_w = model.log_weights(x[rows], chunk)
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
            squares = torch.logaddexp(squares, torch.logsumexp(2 * log_w.double(), dim=0))
        out[rows] = math.log(num_samples) - total
        ess[rows] = torch.exp(2 * total.double() - squares)
        if progress is not None:
            progress(rows.stop - rows.start)
    return out, ess


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """(sum w)^2 / sum w^2 of the weights exp(log_w) along `dim`, computed in logs."""
    log_w = log_w.double()
    return torch.exp(2 * torch.logsumexp(log_w, dim) - torch.logsumexp(2 * log_w, dim))


@torch.no_grad()
def per_example_bound(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's own per-example bound (`model.bound`) over x, in nats, [N]."""
    return torch.cat([model.bound(x[rows]) for rows in _batches(x.shape[0], batch_size)])


@torch.no_grad()
def mean_bound(model, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean over x of the model's own per-example bound (`model.bound`), in nats."""
    if x.shape[0] == 0:
        return 0.0
    return per_example_bound(model, x, batch_size).double().mean().item()


@torch.no_grad()
def mean_bound_terms(model, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Means over x of the terms of the model's one-sample bound (`model.bound_terms`,
    e.g. reconstruction and KL, which sum to the negative ELBO); {} when it has none."""
    totals: dict[str, float] = {}
    for rows in _batches(x.shape[0], batch_size):
        for name, values in model.bound_terms(x[rows]).items():
            totals[name] = totals.get(name, 0.0) + values.double().sum().item()
    return {name: total / max(1, x.shape[0]) for name, total in totals.items()}


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = 1e-2,
                 num_samples: int = 100, batch_size: int = 500) -> list[int]:
    """Active latent units per stochastic layer (Burda et al. 2016, section 5.2).

    A unit u is active when Cov_x(E_q[u | x]) > threshold, with E_q[z_l | x] from q's
    `unit_means` (for deeper Gaussian layers, averaged over `num_samples` draws of the
    layers below); [] for a q without latent units (`has_units`).
    """
    if not model.q.has_units:
        return []
    means_per_layer: list[list[torch.Tensor]] = []
    for rows in _batches(x.shape[0], batch_size):
        layer_means = model.q.unit_means(x[rows], num_samples)
        for index, means in enumerate(layer_means):
            if len(means_per_layer) <= index:
                means_per_layer.append([])
            means_per_layer[index].append(means)
    counts = []
    for chunks in means_per_layer:
        means = torch.cat(chunks).double()
        counts.append(int((means.var(dim=0, unbiased=True) > threshold).sum().item()))
    return counts
