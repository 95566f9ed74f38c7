"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", §4.2):
a 3x3 stem, three stages of basic blocks at strides 1, 2, 2, global average pooling, a
linear read-out. Depth 6n + 2 gives n blocks per stage.

`resnet8` ... `resnet110` have the paper's widths 16-16-32-64; `resnet8x4` and
`resnet32x4` are the four-times-wider versions of the KD benchmarks (CRD, Tian et al.
2020; HobbitLong/RepDistiller `models/resnet.py`), whose stem is 32 wide and whose first
block already changes width (so it carries a 1x1 projection shortcut).
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.zoo.init import reference_init

NARROW = (16, 16, 32, 64)  # stem, stage 1, stage 2, stage 3
WIDE = (32, 64, 128, 256)
CONFIGS = {
    "resnet8": (8, NARROW), "resnet14": (14, NARROW), "resnet20": (20, NARROW),
    "resnet32": (32, NARROW), "resnet44": (44, NARROW), "resnet56": (56, NARROW),
    "resnet110": (110, NARROW), "resnet8x4": (8, WIDE), "resnet32x4": (32, WIDE),
}


def conv3x3(n_in: int, n_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); the shortcut is the identity,
    or a strided 1x1 conv + BN where the block changes width or resolution (the paper's
    option B)."""

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(n_in, n_out, stride), nn.BatchNorm2d(n_out)
        self.conv2, self.bn2 = conv3x3(n_out, n_out), nn.BatchNorm2d(n_out)
        self.shortcut = None
        if stride != 1 or n_in != n_out:
            self.shortcut = nn.Sequential(nn.Conv2d(n_in, n_out, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class CifarResNet(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes); any H, W (the reference pools a fixed
    8x8 window, which is the global average on 32x32 inputs: pooled adaptively here)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], n_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet's depth is 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1, self.bn1 = conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0])
        stages, n_in = [], widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(n_in, width, stride if index == 0 else 1))
                n_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[3], n_classes)
        # The reference's init: He-normal (fan_out) convolutions, BN scale 1 and shift 0;
        # the linear layer keeps PyTorch's default.
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> CifarResNet:
    depth, widths = CONFIGS[name]
    return CifarResNet(depth, widths, n_classes, in_channels)
