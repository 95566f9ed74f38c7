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

from distillstudy.engine.models import linear_init, relu_layers, stacked_features


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

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """M members at once, written out (the generic path runs it instead of vmap):
        params stacked (M, ...) under this module's parameter names, x (M, batch,
        *input_shape) -> logits (M, batch, classes).

        The members are the groups of one grouped convolution per layer and the maps stay
        (batch, M * channels, H, W) in channels_last memory from the input to the global
        average pool, as the CNN teachers' stack runs them (models.stacked_features; a 1-D
        map is H = 1, its Conv1d / MaxPool1d run as their 1 x k 2-D twins). The pool's mean
        is taken over the channels-last memory (batch, H * W, M * channels) so its gradient
        comes back channels-last too: a mean over the (H, W) axes hands the max-pool's
        backward a channels-first gradient, which it copies (5 members of cnn-16 on
        MNIST-1D: 4.5 ms a step, 5.5 with that copy). Measured, one thread, AMD EPYC, 5
        members, batch 128, a training step (forward and every gradient) against the im2col
        + batched GEMM form this replaced: (40,) inputs 2.7 -> 1.5 ms (cnn-4), 3.2 -> 2.2
        (cnn-8), 5.8 -> 4.5 (cnn-16); 8 x 8 images 5.8 -> 2.1, 8.3 -> 2.8, 14.4 -> 5.5.
        tests/test_generic.py proves it equal to vmap(functional_call(CNN)) in float64.
        """
        m, b = x.shape[:2]
        if len(self.input_shape) == 3:  # (M, B, C, H, W) -> (B, M * C, H, W)
            h = x.transpose(0, 1).flatten(1, 2)
        else:  # one input channel per member: (B, M, H, W), a 1-D input H = 1
            h = x.transpose(0, 1) if len(self.input_shape) == 2 else x.transpose(0, 1).unsqueeze(2)
        h = stacked_features(self.features, params, h.contiguous(memory_format=torch.channels_last))
        h = h.permute(0, 2, 3, 1).flatten(1, 2).mean(dim=1)  # (B, M * 2 size): a view of channels_last memory
        h = h.view(b, m, -1).transpose(0, 1)  # (M, B, 2 size)
        return torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))


def cnn(input_shape: tuple[int, ...], n_classes: int, size: int) -> CNN:
    return CNN(input_shape, n_classes, size)
