"""Students (stacked MLPs, one member per seed) and teachers (a stronger class per dataset).

Students of one grid cell share data and shapes, so they are trained as one
stacked model: parameters shaped (members, in, out), one batched matmul per
layer. Each member's initial weights come from its own seed, drawn exactly as
torch.nn.Linear draws them, so a member equals a plain MLP trained alone.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.artifacts import write_bytes


class Standardize(nn.Module):
    """(x - mean) / std with the train split's statistics, stored as buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


def linear_init(n_in: int, n_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init: U(-1/sqrt(n_in), 1/sqrt(n_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(n_in)
    weight = (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
    return weight, bias


def student_layer_sizes(n_in: int, hidden: int, n_out: int, depth: int = 2) -> list[int]:
    """`depth` hidden layers of width `hidden` (default two: n_in -> H -> H -> n_out)."""
    return [n_in, *([hidden] * depth), n_out]


def relu_layers(h: torch.Tensor, weights, biases, affine) -> torch.Tensor:
    """h -> affine(b, h, W) for each layer, ReLU between layers (not after the last):
    torch.addmm for one MLP's (in, out) weights, torch.baddbmm for stacked (M, in, out)."""
    last = len(weights) - 1
    for layer, (w, b) in enumerate(zip(weights, biases)):
        h = affine(b, h, w)
        if layer < last:
            h = torch.relu(h)
    return h


def same_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """'Same' convolution (odd kernel k per axis, zero padding k // 2, stride 1) of M members'
    channels-last maps h (M, B, *spatial, C_in), 1 or 2 spatial axes, as im2col + one
    batched GEMM:

        out[m, b, i, o] = bias[m, o] + sum_{j, c} pad(h)[m, b, i + j, c] weight[m, o, c, j]

    (each spatial axis likewise); weight (M, C_out, C_in, k[, k']) as nn.Conv1d/2d store it,
    bias (M, C_out) -> (M, B, *spatial, C_out). The columns are the k (or k x k') shifted
    windows of the zero-padded maps side by side (Tensor.unfold measured 1.5x slower: its
    backward is a generic kernel). The written-out stacks of the cnn family and the CNN
    teachers run it."""
    m, b, *spatial, c_in = h.shape
    kernel_size = weight.shape[3:]
    if len(kernel_size) != len(spatial) or any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"same_conv: an odd kernel per spatial axis of {tuple(spatial)}, got {tuple(kernel_size)}")
    padded = F.pad(h, (0, 0) + sum(((k // 2, k // 2) for k in reversed(kernel_size)), ()))
    shifts = [()]
    for k in kernel_size:
        shifts = [s + (j,) for s in shifts for j in range(k)]
    windows = [padded[(slice(None),) * 2 + tuple(slice(j, j + n) for j, n in zip(s, spatial))] for s in shifts]
    cols = torch.cat(windows, dim=-1).view(m, -1, len(shifts) * c_in)  # columns ordered (j_1[, j_2], c)
    kernel = weight.movedim(2, -1).reshape(m, weight.shape[1], -1)  # (M, C_out, (j.., c))
    out = torch.baddbmm(bias.unsqueeze(1), cols, kernel.transpose(1, 2))
    return out.view(m, b, *spatial, -1)


def max_pool2(h: torch.Tensor, ceil_mode: bool) -> torch.Tensor:
    """nn.MaxPool1d/2d(2, ceil_mode=ceil_mode) over the spatial axes of channels-last
    (M, B, *spatial, C): the module's own kernel (first maximum on ties) on a channels-first
    view, which it runs in its channels-last form."""
    m, b, *spatial, c = h.shape
    pool = F.max_pool2d if len(spatial) == 2 else F.max_pool1d
    out = pool(h.movedim(-1, 2).reshape(m * b, c, *spatial), 2, ceil_mode=ceil_mode)  # a view: M, B adjacent
    return out.view(m, b, *out.shape[1:]).movedim(2, -1)


def _stacked_features(features: nn.Sequential, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """A teacher's `features` (same convolutions, ReLU, max-pools of 2) on M members'
    channels-last maps h (M, B, *spatial, C), the members' weights in params[features.<i>.*]."""
    for i, layer in enumerate(features):
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.padding == tuple(k // 2 for k in layer.kernel_size) \
                and set(layer.stride) | set(layer.dilation) == {1} and layer.groups == 1:
            h = same_conv(h, params[f"features.{i}.weight"], params[f"features.{i}.bias"])
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)) and layer.kernel_size == 2 and layer.stride == 2 \
                and layer.padding == 0 and layer.dilation == 1:
            h = max_pool2(h, layer.ceil_mode)
        else:
            raise ValueError(f"the written-out teacher stack has no form for features.{i} ({layer})")
    return h


def _stacked_readout(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                     h: torch.Tensor) -> torch.Tensor:
    """Dropout and the linear read-out of a CNN teacher on channels-last features h
    (M, B, *spatial, C) -> logits (M, B, classes). The module flattens its features channels
    first, so its dropout mask (M, B, C * prod(spatial)) and read-out weight are read through
    channels-last views of that order: the same products, only the read-out's summation order
    differs. In training each member's mask is buffers["dropout.mask"], as engine/stacked.py's
    MaskedDropout takes it (already scaled by 1 / (1 - p))."""
    m, b, *spatial, c = h.shape

    def channels_last(t: torch.Tensor) -> torch.Tensor:  # (M, rows, C * prod(spatial)), channels first
        return t.view(*t.shape[:2], c, *spatial).movedim(2, -1)

    if model.dropout.training and getattr(model.dropout, "p", 0.0) > 0:
        if "dropout.mask" not in buffers:
            raise ValueError(f"{type(model).__name__}.forward_stacked: dropout in training needs each member's "
                             "mask in buffers['dropout.mask'] (engine/stacked.py draws them)")
        h = h * channels_last(buffers["dropout.mask"])
    weight = channels_last(params["head.weight"]).reshape(m, params["head.weight"].shape[1], -1)
    return torch.baddbmm(params["head.bias"].unsqueeze(1), h.reshape(m, b, -1), weight.transpose(1, 2))


def _standardized(x: torch.Tensor, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """Standardize's (x - mean) / std for M members: x (M, B, n_in), buffers (M, n_in)."""
    return (x - buffers["standardize.mean"].unsqueeze(1)) / buffers["standardize.std"].unsqueeze(1)


class StackedMLP(nn.Module):
    """M independent ReLU MLPs evaluated together: input (M, batch, in) -> (M, batch, out)."""

    def __init__(self, sizes: list[int], seeds: list[int], mean, std):
        super().__init__()
        self.sizes = list(sizes)
        self.seeds = list(seeds)
        self.standardize = Standardize(mean, std)
        weights, biases = [[] for _ in sizes[1:]], [[] for _ in sizes[1:]]
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                w, b = linear_init(n_in, n_out, generator)
                weights[layer].append(w)
                biases[layer].append(b)
        self.weights = nn.ParameterList(nn.Parameter(torch.stack(w)) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(torch.stack(b).unsqueeze(1)) for b in biases)

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_layers(self.standardize(x), self.weights, self.biases, torch.baddbmm)


def count_student_params(sizes: list[int]) -> int:
    """Trainable parameters of ONE member (weights and biases)."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


class CNN1D(nn.Module):
    """MNIST-1D teacher: two conv blocks (conv, conv, max-pool), dropout, linear read-out.

    Chosen on validation here: 96-97% test accuracy, far above the MLP students
    (three strided convolutions without pooling reached only 87-89%).
    """

    def __init__(self, n_in: int, n_out: int, channels: int, mean, std, dropout: float = 0.0):
        super().__init__()
        self.standardize = Standardize(mean, std)
        c, c2 = channels, 2 * channels
        self.features = nn.Sequential(
            nn.Conv1d(1, c, 5, padding=2), nn.ReLU(), nn.Conv1d(c, c, 3, padding=1), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(c, c2, 3, padding=1), nn.ReLU(), nn.Conv1d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool1d(2),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c2 * (n_in // 4), n_out)

    def forward(self, x):
        h = self.features(self.standardize(x).unsqueeze(1))
        return self.head(self.dropout(h.flatten(1)))

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        """M members at once, written out (engine/stacked.py runs it instead of vmap, as the
        cnn student family's CNN.forward_stacked): params and buffers stacked (M, ...) under
        this module's names (buffers["dropout.mask"] in training), x (M, batch, n_in) ->
        logits (M, batch, classes). Channels-last activations, each convolution one batched
        GEMM over all members (same_conv), the pools nn.MaxPool1d's kernel on a view.
        Measured, 5 members of 32 channels on MNIST-1D, batch 128, one thread (AMD EPYC):
        a training step STEP_MS. tests/test_teacher_stack.py proves it equal to
        vmap(functional_call) of the module in float64, with dropout masks and without."""
        h = _stacked_features(self.features, params, _standardized(x, buffers).unsqueeze(-1))
        return _stacked_readout(self, params, buffers, h)


class CNN2D(nn.Module):
    """Digits teacher: a small 2-D CNN on the 8x8 image."""

    def __init__(self, n_in: int, n_out: int, channels: int, mean, std, dropout: float = 0.0):
        super().__init__()
        side = int(round(math.sqrt(n_in)))
        if side * side != n_in:
            raise ValueError(f"CNN2D needs square images, got {n_in} features")
        self.side = side
        self.standardize = Standardize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, n_out)

    def forward(self, x):
        h = self.standardize(x).view(-1, 1, self.side, self.side)
        return self.head(self.dropout(self.features(h).flatten(1)))

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        """M members at once, written out as CNN1D.forward_stacked: x (M, batch, side * side)
        -> logits (M, batch, classes); tests/test_teacher_stack.py proves it equal to vmap."""
        h = _standardized(x, buffers).view(*x.shape[:2], self.side, self.side, 1)  # channels last
        return _stacked_readout(self, params, buffers, _stacked_features(self.features, params, h))


class WideMLP(nn.Module):
    """Teacher for user tables: a wide two-hidden-layer MLP."""

    def __init__(self, n_in: int, n_out: int, width: int, mean, std, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(Standardize(mean, std), nn.Linear(n_in, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(width, n_out))

    def forward(self, x):
        return self.net(x)


class SinLogistic(nn.Module):
    """Sine teacher: logistic regression on sin(x), the true model's inductive bias."""

    def __init__(self, n_out: int):
        super().__init__()
        self.linear = nn.Linear(1, n_out)

    def forward(self, x):
        return self.linear(torch.sin(x[:, :1]))


def make_teacher(kind: str, n_in: int, n_out: int, mean, std, cnn_channels: int, mlp_width: int,
                 dropout: float) -> nn.Module:
    if kind == "mnist1d":
        return CNN1D(n_in, n_out, cnn_channels, mean, std, dropout)
    if kind == "digits":
        return CNN2D(n_in, n_out, cnn_channels, mean, std, dropout)
    if kind == "sine":
        return SinLogistic(n_out)
    return WideMLP(n_in, n_out, mlp_width, mean, std, dropout)


def teacher_architecture(kind: str) -> str:
    return {"mnist1d": "CNN1D", "digits": "CNN2D", "sine": "SinLogistic"}.get(kind, "WideMLP")


def _tensors_only(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _write_torch(path: str | Path, obj) -> None:
    # Through a buffer: torch.save names the zip's inner folder after the file, and a
    # temp file's random name would make identical weights differ.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_state(path: str | Path, state: dict) -> None:
    """Tensors only, so the file loads with torch.load(weights_only=True); identical
    weights give identical bytes."""
    _write_torch(path, _tensors_only(state))


def save_states(path: str | Path, states: dict[str, dict]) -> None:
    """{name: state_dict} of several models in one file, as save_state writes one
    (torch.load(weights_only=True) reads it back)."""
    _write_torch(path, {name: _tensors_only(state) for name, state in states.items()})
