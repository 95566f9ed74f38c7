"""ShuffleNet (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural
Network for Mobile Devices") for CIFAR, as the KD benchmarks use it (HobbitLong/RepDistiller
`models/ShuffleNetv1.py`, `ShuffleV1`): 3 groups, stages 240, 480 and 960 wide of 4, 8 and
4 units, a 1x1 stem of 24 channels and no max-pool, so the three stages run at 16x16, 8x8
and 4x4 on 32x32 inputs. PyTorch's default initialisation, as the reference.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

STEM = 24
STAGES = ((240, 4), (480, 8), (960, 4))  # (output channels, units)
GROUPS = 3


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, groups * c, H, W): channel g * c + i moves to i * groups + g, so the next grouped
    convolution sees channels from every group (the paper's §3.1)."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """1x1 group conv (ReLU), channel shuffle, 3x3 depthwise conv, 1x1 group conv; added to
    the input at stride 1, concatenated with a 3x3 average pool of it at stride 2 (the
    paper's Fig. 2 b, c). The first unit after the stem does not group its first 1x1 conv:
    its 24 input channels are too few (the paper's §3.2)."""

    def __init__(self, n_in: int, n_out: int, stride: int, groups: int):
        super().__init__()
        bottleneck = n_out // 4
        self.first_groups = 1 if n_in == STEM else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(n_in, bottleneck, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(bottleneck)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, kernel_size=3, stride=stride, padding=1,
                               groups=bottleneck, bias=False)
        self.bn2 = nn.BatchNorm2d(bottleneck)
        self.conv3 = nn.Conv2d(bottleneck, n_out, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)], dim=1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes); pooled adaptively (the reference's
    fixed 4x4 window is the global average on 32x32 inputs)."""

    def __init__(self, n_classes: int, in_channels: int = 3, groups: int = GROUPS):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        stages, n_in = [], STEM
        for n_out, n_units in STAGES:
            # A stride-2 unit's own output is concatenated with its pooled input, so it makes
            # n_out - n_in channels.
            units = [ShuffleUnit(n_in, n_out - n_in, stride=2, groups=groups)]
            units += [ShuffleUnit(n_out, n_out, stride=1, groups=groups) for _ in range(n_units - 1)]
            stages.append(nn.Sequential(*units))
            n_in = n_out
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(n_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    if name != "shufflev1":
        raise KeyError(name)
    return ShuffleNetV1(n_classes, in_channels)
