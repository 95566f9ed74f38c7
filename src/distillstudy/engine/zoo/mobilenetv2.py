"""MobileNetV2 at half width (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks"), the student of the KD benchmarks (HobbitLong/RepDistiller
`models/mobilenetv2.py`, `mobile_half`, from Jin et al. 2019, "Knowledge Distillation via
Route Constrained Optimization"): expansion 6, width multiplier 0.5, the paper's stages
with the stride-2 stem kept, and the 1280-wide last 1x1 convolution not narrowed.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.zoo.init import reference_init

# (expansion, output channels at width 1, blocks, first block's stride): the paper's Table 2,
# with the 24-channel stage at stride 1 instead of 2 for 32x32 inputs, as the reference.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
WIDTH = 0.5
LAST_CHANNELS = 1280  # not scaled for widths <= 1, as in the paper


def conv_bn_relu(n_in: int, n_out: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(n_in, n_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(n_out), nn.ReLU()]


class InvertedResidual(nn.Module):
    """1x1 expansion (ReLU), 3x3 depthwise (ReLU), 1x1 linear projection; plus the input
    when stride 1 keeps the width. The expansion conv is kept at expansion 1 too, as the
    reference does (it counts toward the parameters)."""

    def __init__(self, n_in: int, n_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = n_in * expansion
        self.residual = stride == 1 and n_in == n_out
        self.conv = nn.Sequential(*conv_bn_relu(n_in, hidden, 1),
                                  *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                                  nn.Conv2d(hidden, n_out, 1, bias=False), nn.BatchNorm2d(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes); pooled adaptively (the reference's
    fixed 2x2 window is the global average on 32x32 inputs)."""

    def __init__(self, n_classes: int, in_channels: int = 3, width: float = WIDTH):
        super().__init__()
        n_in = int(32 * width)
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, n_in, 3, stride=2))
        stages = []
        for expansion, channels, n_blocks, stride in STAGES:
            n_out, blocks = int(channels * width), []
            for index in range(n_blocks):
                blocks.append(InvertedResidual(n_in, n_out, stride if index == 0 else 1, expansion))
                n_in = n_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(*conv_bn_relu(n_in, LAST_CHANNELS, 1))
        self.classifier = nn.Linear(LAST_CHANNELS, n_classes)
        # The reference's init: convolutions N(0, 2 / (k * k * out_channels)), BN scale 1 and
        # shift 0, the read-out N(0, 0.01^2) with bias 0.
        reference_init(self, linear_std=0.01, linear_bias_zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.stages(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> MobileNetV2:
    if name != "mobilenetv2":
        raise KeyError(name)
    return MobileNetV2(n_classes, in_channels)
