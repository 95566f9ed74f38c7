"""Wide residual networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks"):
WRN-d-k has three stages of (d - 4) / 6 pre-activation basic blocks, 16k, 32k and 64k
channels wide at strides 1, 2, 2, after a 16-channel 3x3 stem; then BN-ReLU, global
average pooling and a linear read-out. `wrn_40_2` -> `wrn_16_2` is one of the KD
benchmarks' teacher -> student pairs (HobbitLong/RepDistiller `models/wrn.py`; no dropout).
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.zoo.init import reference_init

CONFIGS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}


class PreActBlock(nn.Module):
    """a = relu(bn(x)); out = conv3x3(relu(bn(conv3x3(a)))) + shortcut, where the shortcut
    is x itself, or a strided 1x1 conv of `a` (the activated input) where the width
    changes, as the reference (and the paper's Torch code) does."""

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n_in)
        self.conv1 = nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.conv2 = nn.Conv2d(n_out, n_out, kernel_size=3, padding=1, bias=False)
        self.shortcut = None
        if n_in != n_out:
            self.shortcut = nn.Conv2d(n_in, n_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes); pooled adaptively (the reference's
    fixed 8x8 window is the global average on 32x32 inputs)."""

    def __init__(self, depth: int, widen: int, n_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"a wide ResNet's depth is 6n + 4 with n >= 1 (10, 16, 22, ...), got {depth}")
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        stages, n_in = [], 16
        for width, stride in zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(PreActBlock(n_in, width, stride if index == 0 else 1))
                n_in = width
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(n_in)
        self.fc = nn.Linear(n_in, n_classes)
        # The reference's init: convolutions N(0, 2 / (k * k * out_channels)) (He, fan-out),
        # BN scale 1 and shift 0, the linear layer's bias 0 (its weight PyTorch's default).
        reference_init(self, linear_bias_zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        h = F.relu(self.bn(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> WideResNet:
    depth, widen = CONFIGS[name]
    return WideResNet(depth, widen, n_classes, in_channels)
