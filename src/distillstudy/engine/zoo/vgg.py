"""VGG with batch normalisation for CIFAR (Simonyan & Zisserman 2015, "Very Deep
Convolutional Networks for Large-Scale Image Recognition"; BN after every convolution as
in Ioffe & Szegedy 2015), as the KD benchmarks use it (HobbitLong/RepDistiller
`models/vgg.py`, `vgg8_bn` ... `vgg19_bn`): five blocks of 3x3 convolutions, 64, 128, 256,
512 and 512 wide, with max-pooling between the first four; no fully-connected layers
but one linear read-out after global average pooling.

`vgg11`/`13`/`16`/`19` are the paper's configurations A, B, D, E; `vgg8` is the KD
benchmarks' smaller "S" (one convolution per block).
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
import torch.nn.functional as F
from torch import nn

from distillstudy.engine.zoo.init import reference_init

CONFIGS = {  # output channels of each convolution, block by block
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def conv_block(n_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv3x3 (with bias) - BN - ReLU per width, without the last ReLU: the network
    applies it (the reference keeps the block's output pre-activation for feature KD)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(n_in, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        n_in = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """(B, in_channels, H, W) -> logits (B, n_classes), any H, W >= 8. On CIFAR's 32x32 the
    last two blocks both run at 4x4: the reference max-pools before the fifth block only on
    64x64 inputs (Tiny-ImageNet), and so does this."""

    def __init__(self, widths: tuple[tuple[int, ...], ...], n_classes: int, in_channels: int = 3):
        super().__init__()
        blocks, n_in = [], in_channels
        for block_widths in widths:
            blocks.append(conv_block(n_in, block_widths))
            n_in = block_widths[-1]
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(n_in, n_classes)
        # The reference's init: convolutions N(0, 2 / (k * k * out_channels)) with bias 0,
        # BN scale 1 and shift 0, the read-out N(0, 0.01^2) with bias 0.
        reference_init(self, conv_bias_zero=True, linear_std=0.01, linear_bias_zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool_before_last = x.shape[2] == 64
        h = x
        for index, block in enumerate(self.blocks):
            h = F.relu(block(h))
            if index < 3 or (index == 3 and pool_before_last):
                h = F.max_pool2d(h, kernel_size=2, stride=2)
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(name: str, n_classes: int, in_channels: int = 3) -> VGG:
    return VGG(CONFIGS[name], n_classes, in_channels)
