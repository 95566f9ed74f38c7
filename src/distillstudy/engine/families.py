"""Student families: `f(input_shape, n_classes, size) -> nn.Module`, called with the
replicate's seed already set (torch.manual_seed), mapping a float32 batch
(batch, *input_shape) of standardised inputs to logits (batch, n_classes).

`size` is the family's own size knob (the MLP's width, the CNN's channels); the
parameter count makes families comparable.
"""

from __future__ import annotations

import math

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch import nn

from distillstudy.engine.models import linear_init, relu_layers


class MLP(nn.Module):
    """ReLU MLP in -> size (x depth) -> classes, weights stored (in, out) as StackedMLP's
    members are: stacked, these parameters ARE a StackedMLP's, so the closed-form engine
    and the generic path start from the same bits (tests/test_generic.py)."""

    def __init__(self, sizes: list[int], generator: torch.Generator):
        super().__init__()
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w, b = linear_init(n_in, n_out, generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b.unsqueeze(0)))

    def forward(self, x):
        return relu_layers(x.flatten(1), self.weights, self.biases, torch.addmm)


def mlp(input_shape: tuple[int, ...], n_classes: int, size: int, depth: int = 2) -> MLP:
    """`depth` hidden layers of width `size`. The weights are drawn as StackedMLP draws a
    member's, from Generator(seed) with seed = torch.initial_seed(), the replicate seed the
    pipeline set before the call."""
    n_in = math.prod(input_shape)
    generator = torch.Generator().manual_seed(torch.initial_seed())
    return MLP([n_in, *([size] * depth), n_classes], generator)


class CNN(nn.Module):
    """Two conv blocks (conv 3, ReLU, max-pool 2) of `size` and 2 `size` channels, global
    average pooling, a linear read-out; 1-D inputs (length,) or images (H, W) / (C, H, W)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, size: int):
        super().__init__()
        if len(input_shape) not in (1, 2, 3):
            raise ValueError(f"the cnn family takes inputs shaped (length,), (H, W) or (C, H, W), got {input_shape}")
        self.input_shape = tuple(input_shape)
        two_d = len(input_shape) >= 2
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
        channels = input_shape[0] if len(input_shape) == 3 else 1
        self.features = nn.Sequential(
            conv(channels, size, 3, padding=1), nn.ReLU(), pool(2, ceil_mode=True),
            conv(size, 2 * size, 3, padding=1), nn.ReLU(), pool(2, ceil_mode=True))
        self.head = nn.Linear(2 * size, n_classes)

    def forward(self, x):
        if len(self.input_shape) != 3:
            x = x.unsqueeze(1)  # one input channel
        h = self.features(x)
        return self.head(h.flatten(2).mean(dim=2))


def cnn(input_shape: tuple[int, ...], n_classes: int, size: int) -> CNN:
    return CNN(input_shape, n_classes, size)
