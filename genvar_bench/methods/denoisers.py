"""Reverse-process networks of the diffusion models: f(x_t, t) -> per-dimension outputs.

`TimeMLP` (the default) adds a learned embedding of the step t to every hidden
layer of an MLP; `TimeConv` is a small convolutional network for square images,
with the step embedding added as a per-channel bias.
"""
from __future__ import annotations

import math

import torch
from torch import nn

NETWORKS = ("mlp", "conv")


class TimeMLP(nn.Module):
    """[N, D] states and [N] steps (1-based) -> [N, outputs * D]."""

    def __init__(self, data_dim: int, num_steps: int, hidden: int, depth: int = 2,
                 outputs: int = 1):
        super().__init__()
        widths = [data_dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        embeddings = [nn.Embedding(num_steps, hidden) for _ in range(depth)]
        for embedding in embeddings:
            nn.init.normal_(embedding.weight, std=0.1)
        self.step_embeddings = nn.ModuleList(embeddings)
        self.out = nn.Linear(hidden, outputs * data_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        hidden = states
        for layer, embedding in zip(self.layers, self.step_embeddings):
            hidden = nn.functional.silu(layer(hidden) + embedding(steps - 1))
        return self.out(hidden)


class TimeConv(nn.Module):
    """The same interface for square images: 3x3 convolutions at full resolution,
    the step embedding added to every hidden layer's channels."""

    def __init__(self, data_dim: int, num_steps: int, channels: int, depth: int = 4,
                 outputs: int = 1):
        super().__init__()
        side = math.isqrt(data_dim)
        if side * side != data_dim:
            raise ValueError(f"the conv network needs square images; data_dim {data_dim} is not a square")
        self.side = side
        widths = [1] + [channels] * depth
        self.layers = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        embeddings = [nn.Embedding(num_steps, channels) for _ in range(depth)]
        for embedding in embeddings:
            nn.init.normal_(embedding.weight, std=0.1)
        self.step_embeddings = nn.ModuleList(embeddings)
        self.out = nn.Conv2d(channels, outputs, 3, padding=1)
        assert self.out.bias is not None  # bias=True, the default
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        hidden = states.reshape(-1, 1, self.side, self.side)
        for layer, embedding in zip(self.layers, self.step_embeddings):
            hidden = nn.functional.silu(layer(hidden) + embedding(steps - 1)[:, :, None, None])
        out = self.out(hidden)  # [N, outputs, side, side]
        return out.reshape(out.shape[0], -1)


def build_denoiser(network: str, data_dim: int, num_steps: int, outputs: int = 1) -> nn.Module:
    """The reverse network by name, sized by the data: wider for MNIST than for 8 x 8 digits."""
    if network == "mlp":
        hidden = 512 if data_dim > 256 else 256
        return TimeMLP(data_dim, num_steps, hidden, outputs=outputs)
    if network == "conv":
        return TimeConv(data_dim, num_steps, channels=32 if data_dim > 256 else 16, outputs=outputs)
    raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
