"""The CIFAR knowledge-distillation model zoo (params.yaml's student family `cifar`, and
`teacher: {family: cifar, size: <name>}`): the architectures every KD paper's CIFAR-100
table uses, under the names of HobbitLong/RepDistiller `models/` (also mdistiller's
`mdistiller/models/cifar/`), each with exactly that reference's parameter count
(tests/test_zoo.py): e.g. resnet8x4 1,233,540 and resnet32x4 7,433,860 for 100 classes.

    from distillstudy.engine import zoo
    model = zoo.build("resnet8x4", n_classes=100)   # (B, 3, H, W) -> logits (B, 100)

Each model maps a float batch (B, in_channels, H, W), any H, W >= 8 (CIFAR: 32x32), to
logits (B, n_classes) (no feature lists: the study distils logits), and draws its initial
weights from torch's global generator as the reference does (seed it first).
"""

from __future__ import annotations

from typing import Callable

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import torch
from torch import nn

from distillstudy.engine.zoo import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn

# name -> family module (its build(name, n_classes, in_channels)), in the order the names are listed.
_FAMILIES: dict[str, Callable[..., nn.Module]] = {
    **{name: resnet.build for name in resnet.CONFIGS},
    **{name: wrn.build for name in wrn.CONFIGS},
    **{name: vgg.build for name in vgg.CONFIGS},
    "mobilenetv2": mobilenetv2.build,
    "shufflev1": shufflenetv1.build,
    "shufflev2": shufflenetv2.build,
}
NAMES: tuple[str, ...] = tuple(_FAMILIES)


def build(name: str, n_classes: int, in_channels: int = 3) -> nn.Module:
    """The zoo model `name` for `n_classes` classes and `in_channels` input channels, its
    weights drawn from torch's global generator (torch.manual_seed first for a given init)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown CIFAR zoo model {name!r}; the zoo has: {', '.join(NAMES)}")
    for key, value in (("n_classes", n_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"zoo model {name!r}: {key} must be a positive integer, got {value!r}")
    return _FAMILIES[name](name, n_classes, in_channels)


def n_params(name: str, n_classes: int = 100, in_channels: int = 3) -> int:
    """The number of trainable parameters of build(name, n_classes, in_channels) (BatchNorm's
    running statistics are buffers, not counted). Built on the meta device: no memory, no
    time, and torch's generator is left as it was."""
    with torch.device("meta"):
        model = build(name, n_classes, in_channels)
    return sum(parameter.numel() for parameter in model.parameters())
