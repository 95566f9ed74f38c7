"""The zoo's initialisation, as RepDistiller's models do it (one loop, the variations named):
convolutions He-normal with fan-out, N(0, 2 / (k * k * out_channels)) (He et al. 2015), BN
scale 1 and shift 0; then per family a zero convolution bias (vgg), a read-out weight from
N(0, linear_std^2) (vgg, mobilenetv2) and a zero read-out bias (wrn, vgg, mobilenetv2). The
calls run module by module in `model.modules()` order, so a seeded build draws the same
numbers as the reference does.
"""

from __future__ import annotations

from torch import nn


def reference_init(model: nn.Module, *, conv_bias_zero: bool = False, linear_std: float | None = None,
                   linear_bias_zero: bool = False) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if conv_bias_zero:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            if linear_bias_zero:
                nn.init.zeros_(module.bias)
