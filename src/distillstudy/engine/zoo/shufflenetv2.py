"""ShuffleNet V2 1x (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design") for CIFAR, as the KD benchmarks use it (HobbitLong/RepDistiller
`models/ShuffleNetv2.py`, `ShuffleV2`): stages 116, 232 and 464 wide, each a down-sampling
unit and then 3, 7 and 3 basic units, a 1x1 stem of 24 channels and no max-pool, and a
1x1 conv to 1024 channels before pooling. PyTorch's default initialisation, as the reference.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.zoo.shufflenetv1 import channel_shuffle

STEM = 24
STAGES = ((116, 3), (232, 7), (464, 3))  # (output channels, basic units after the down-sampling one)
LAST_CHANNELS = 1024


def conv_bn(n_in: int, n_out: int, kernel_size: int, stride: int = 1, depthwise: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, kernel_size, stride, kernel_size // 2,
                                   groups=n_in if depthwise else 1, bias=False),
                         nn.BatchNorm2d(n_out))


class BasicUnit(nn.Module):
    """Channel split in halves; the second goes through 1x1 (ReLU), 3x3 depthwise, 1x1
    (ReLU); the halves are concatenated and shuffled (the paper's Fig. 3 c)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = conv_bn(half, half, 1)
        self.conv2 = conv_bn(half, half, 3, depthwise=True)
        self.conv3 = conv_bn(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = x.chunk(2, dim=1)
        branch = F.relu(self.conv3(self.conv2(F.relu(self.conv1(branch)))))
        return channel_shuffle(torch.cat([kept, branch], dim=1), 2)


class DownUnit(nn.Module):
    """Both branches see the whole input at stride 2: 3x3 depthwise then 1x1 (ReLU) on the
    left, 1x1 (ReLU), 3x3 depthwise, 1x1 (ReLU) on the right, each n_out / 2 wide;
    concatenated and shuffled (the paper's Fig. 3 d)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        half = n_out // 2
        self.left_depthwise = conv_bn(n_in, n_in, 3, stride=2, depthwise=True)
        self.left_pointwise = conv_bn(n_in, half, 1)
        self.right_pointwise_in = conv_bn(n_in, half, 1)
        self.right_depthwise = conv_bn(half, half, 3, stride=2, depthwise=True)
        self.right_pointwise_out = conv_bn(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.left_pointwise(self.left_depthwise(x)))
        right = self.right_depthwise(F.relu(self.right_pointwise_in(x)))
        right = F.relu(self.right_pointwise_out(right))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes); pooled adaptively (the reference's
    fixed 4x4 window is the global average on 32x32 inputs)."""

    def __init__(self, n_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = conv_bn(in_channels, STEM, 1)
        stages, n_in = [], STEM
        for n_out, n_units in STAGES:
            stages.append(nn.Sequential(DownUnit(n_in, n_out), *(BasicUnit(n_out) for _ in range(n_units))))
            n_in = n_out
        self.layer1, self.layer2, self.layer3 = stages
        self.head = conv_bn(n_in, LAST_CHANNELS, 1)
        self.linear = nn.Linear(LAST_CHANNELS, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(self.head(self.layer3(self.layer2(self.layer1(h)))))
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    if name != "shufflev2":
        raise KeyError(name)
    return ShuffleNetV2(n_classes, in_channels)
