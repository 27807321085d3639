"""Small pieces shared by several families."""

from __future__ import annotations


from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)


def he_init(model: nn.Module) -> None:
    """He et al. 2015 init as the ResNet papers' Torch code does it.

    Conv weights ~ N(0, 2 / (k*k*out_channels)) (kaiming normal, fan_out), BN gamma 1 / beta 0,
    all biases 0; Linear weights keep PyTorch's default uniform(+-1/sqrt(fan_in)).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def norm_or_identity(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def check_choice(model: str, key: str, value, choices) -> None:
    from ._registry import ModelConfigError

    if value not in choices:
        raise ModelConfigError(f"{model}: {key}={value!r} is not one of {list(choices)}")
