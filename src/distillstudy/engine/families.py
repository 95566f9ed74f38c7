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
import torch.nn.functional as F
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

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """M members at once, written out (the generic path runs it instead of vmap):
        params stacked (M, ...) under this module's parameter names, x (M, batch,
        *input_shape) -> logits (M, batch, classes).

        Under vmap each member's convolution is one group of a grouped convolution and its
        pooling runs on strided views. Here the members' activations are one channels-last
        tensor (M, batch, *spatial, channels): each convolution is one batched GEMM over
        all members (_same_conv3), and the pool is nn.MaxPool's own kernel (first maximum
        on ties, as the module) on a channels-first view, which it runs in its fast
        channels-last form. Measured, 8 channels on MNIST-1D, batch 128, one thread: a
        training step of 3 members 4.2 ms under vmap, 2.1 ms written out (one member
        0.9 ms; the same module trained alone with nn.Module + torch.optim.Adam 1.7 ms).
        tests/test_generic.py proves it equal to vmap(functional_call(CNN)) in float64.
        """
        h = x.movedim(2, -1) if len(self.input_shape) == 3 else x.unsqueeze(-1)  # channels last
        for conv in ("features.0", "features.3"):
            h = _max_pool2(torch.relu(_same_conv3(h, params[f"{conv}.weight"], params[f"{conv}.bias"])))
        h = h.mean(dim=tuple(range(2, h.dim() - 1)))  # global average pooling: (M, batch, channels)
        return torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))


def _same_conv3(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Kernel-3 'same' convolution of M members' channels-last maps h (M, B, *spatial, C_in),
    1 or 2 spatial axes, as im2col + one batched GEMM:

        out[m, b, i, o] = bias[m, o] + sum_{k, c} pad(h)[m, b, i + k, c] weight[m, o, c, k]

    (each spatial axis likewise); weight (M, C_out, C_in, 3[, 3]) as nn.Conv1d/2d store it,
    bias (M, C_out) -> (M, B, *spatial, C_out). The columns are the 3 (or 3 x 3) shifted
    windows of the zero-padded maps side by side (Tensor.unfold measured 1.5x slower: its
    backward is a generic kernel)."""
    m, b, *spatial, c_in = h.shape
    padded = F.pad(h, (0, 0) + (1, 1) * len(spatial))
    shifts = [()]
    for _ in spatial:
        shifts = [s + (k,) for s in shifts for k in range(3)]
    windows = [padded[(slice(None),) * 2 + tuple(slice(k, k + n) for k, n in zip(s, spatial))] for s in shifts]
    cols = torch.cat(windows, dim=-1).view(m, -1, len(shifts) * c_in)  # columns ordered (k_1[, k_2], c)
    kernel = weight.movedim(2, -1).reshape(m, weight.shape[1], -1)  # (M, C_out, (k.., c))
    out = torch.baddbmm(bias.unsqueeze(1), cols, kernel.transpose(1, 2))
    return out.view(m, b, *spatial, -1)


def _max_pool2(h: torch.Tensor) -> torch.Tensor:
    """nn.MaxPool(2, ceil_mode=True) over the spatial axes of channels-last (M, B, *spatial, C)."""
    m, b, *spatial, c = h.shape
    pool = F.max_pool2d if len(spatial) == 2 else F.max_pool1d
    out = pool(h.movedim(-1, 2).reshape(m * b, c, *spatial), 2, ceil_mode=True)  # a view: M, B adjacent
    return out.view(m, b, *out.shape[1:]).movedim(2, -1)


def cnn(input_shape: tuple[int, ...], n_classes: int, size: int) -> CNN:
    return CNN(input_shape, n_classes, size)
