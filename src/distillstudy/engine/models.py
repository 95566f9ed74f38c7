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


def _standardized(x: torch.Tensor, buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """Standardize's (x - mean) / std for M members: x (M, B, n_in), buffers (M, n_in)."""
    return (x - buffers["standardize.mean"].unsqueeze(1)) / buffers["standardize.std"].unsqueeze(1)


def _pair(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def stacked_features(features: nn.Sequential, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """A CNN's `features` (convolutions, ReLU, max-pools; the CNN teachers' and the cnn
    student family's, families.CNN) for M members at once, on
    h (B, M * C, H, W) in channels_last memory (a 1-D map is H = 1), member m's channels the
    m-th block of C. Each convolution is ONE grouped convolution whose groups are the
    members (weights (M, C_out, C_in, k..) -> (M * C_out, C_in, k..), as vmap forms it),
    each pool nn.MaxPool's own kernel over the whole stack; a Conv1d / MaxPool1d runs as its
    (1, k) 2-D twin. channels_last keeps every layer in oneDNN's and the pool's fast form."""
    m = params["head.bias"].shape[0]
    for i, layer in enumerate(features):
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups == 1 and layer.padding_mode == "zeros" \
                and not isinstance(layer.padding, str):
            weight = params[f"features.{i}.weight"].flatten(0, 1)  # (M * C_out, C_in, k..)
            geometry = (layer.stride, layer.padding, layer.dilation)
            if isinstance(layer, nn.Conv1d):  # stride 1, padding 0, dilation 1 on the H = 1 axis
                weight, geometry = weight.unsqueeze(2), tuple((one, *g) for one, g in zip((1, 0, 1), geometry))
            h = F.conv2d(h, weight, params[f"features.{i}.bias"].flatten(), *geometry, groups=m)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(layer, nn.MaxPool2d) and not layer.return_indices:
            h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
        elif isinstance(layer, nn.MaxPool1d) and not layer.return_indices:
            h = F.max_pool2d(h, (1, _pair(layer.kernel_size)), (1, _pair(layer.stride)), (0, _pair(layer.padding)),
                             (1, _pair(layer.dilation)), layer.ceil_mode)
        else:
            raise ValueError(f"the written-out teacher stack has no form for features.{i} ({layer})")
    return h


def _stacked_readout(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                     h: torch.Tensor) -> torch.Tensor:
    """Dropout and the linear read-out of M CNN teachers: features h (B, M * C, *spatial),
    channels_last, -> logits (M, B, classes). One copy puts the features in each member's
    flatten order (C, *spatial), the module's, so its dropout mask (M, B, C * prod(spatial))
    and read-out weight apply as they are; laid out from the channels_last memory
    (B, *spatial, M, C), so the gradient flows back channels_last too. In training each
    member's mask is buffers["dropout.mask"], as engine/stacked.py's MaskedDropout takes it
    (already scaled by 1 / (1 - p))."""
    m = params["head.bias"].shape[0]
    b, _, *spatial = h.shape
    h = h.permute(0, *range(2, h.dim()), 1).unflatten(-1, (m, -1))  # (B, *spatial, M, C): a view
    h = h.permute(-2, 0, -1, *range(1, len(spatial) + 1)).reshape(m, b, -1)  # (M, B, C * prod(spatial))
    if model.dropout.training and getattr(model.dropout, "p", 0.0) > 0:
        if "dropout.mask" not in buffers:
            raise ValueError(f"{type(model).__name__}.forward_stacked: dropout in training needs each member's "
                             "mask in buffers['dropout.mask'] (engine/stacked.py draws them)")
        h = h * buffers["dropout.mask"]
    return torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))


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
        """M members at once, written out (engine/stacked.py runs it instead of vmap, as it
        runs the cnn student family's CNN.forward_stacked): params and buffers stacked
        (M, ...) under this module's names (buffers["dropout.mask"] in training), x (M, batch,
        n_in) -> logits (M, batch, classes).

        The members are the groups of one grouped convolution per layer, as under vmap, but
        the activations stay (batch, M * channels, 1, length) in channels_last memory from the
        input to the read-out: vmap moves the member axis between layers, and its pools run
        nn.MaxPool's channels-first kernel with indices (5.2 ms on one 5 x 32-channel map
        that the channels-last kernel pools in 0.4 ms). Measured, one thread, AMD EPYC, 5
        members of 32 channels, batch 128: a training step 57 ms under vmap, 32 ms written
        out. The im2col + batched GEMM form the cnn family once ran was no faster than vmap
        here (60 ms): at 32 to 64 channels oneDNN's grouped convolutions beat the batched
        GEMMs per layer (the cnn family now runs this form too). tests/test_teacher_stack.py
        proves it equal to vmap(functional_call) of the module in float64, with dropout masks
        and without."""
        h = _standardized(x, buffers).transpose(0, 1).unsqueeze(2)  # (B, M, 1, L): one channel per member
        h = stacked_features(self.features, params, h.contiguous(memory_format=torch.channels_last))
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
        -> logits (M, batch, classes), maps (batch, M * channels, side, side) channels_last.
        Measured as CNN1D's on 8 x 8 digits: a step 65 ms under vmap, 44 ms written out (the
        32-channel 8 x 8 convolution, compute-bound, is most of it); tests/test_teacher_stack.py
        proves it equal to vmap."""
        h = _standardized(x, buffers).view(*x.shape[:2], self.side, self.side).transpose(0, 1)  # (B, M, side, side)
        h = stacked_features(self.features, params, h.contiguous(memory_format=torch.channels_last))
        return _stacked_readout(self, params, buffers, h)


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
