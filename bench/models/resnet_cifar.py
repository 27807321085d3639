"""CIFAR ResNets and their plain twins (He et al. 2015, arXiv 1512.03385, section 4.2).

depth = 6n + 2: a 3x3 conv with 16 filters, then three stages of n two-conv units with
16/32/64 filters on 32x32/16x16/8x8 maps (`width` scales them: w/2w/4w; the reduced profiles train narrower nets, since
depth is what the paper's comparisons are about) (the first conv of stages 2 and 3 has stride 2),
global average pooling and a fully-connected layer. Plain nets are the same stack without
shortcuts. Shortcut options A/B/C as in _layers (the paper's CIFAR nets use A).
"""

from __future__ import annotations

from ._layers import BasicBlock, ResNet
from ._registry import ModelConfigError, register_model

REF = "He et al. 2015, Deep Residual Learning, arXiv 1512.03385, Sec. 4.2 / Table 6"


class CifarResNet(ResNet):
    def __init__(
        self,
        depth: int,
        residual: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "A",
        batchnorm: bool = True,
        width: int = 16,
    ):
        if width < 1:
            raise ModelConfigError(f"width must be >= 1, got {width}")
        if depth < 8 or (depth - 2) % 6:
            kind = "resnet" if residual else "plain"
            raise ModelConfigError(f"{kind}: depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, 1202), got {depth}")
        n = (depth - 2) // 6
        super().__init__(
            BasicBlock, (n, n, n), (width, 2 * width, 4 * width), num_classes, in_channels, "cifar",
            shortcut=shortcut, residual=residual, batchnorm=batchnorm,
        )


@register_model(family="resnet_cifar", paper_params=0.27e6, paper_ref=REF)
def resnet20(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(20, True, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_params=0.46e6, paper_ref=REF)
def resnet32(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(32, True, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_params=0.66e6, paper_ref=REF)
def resnet44(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(44, True, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_params=0.85e6, paper_ref=REF)
def resnet56(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(56, True, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_params=1.7e6, paper_ref=REF)
def resnet110(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(110, True, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_params=19.4e6, paper_ref=REF)
def resnet1202(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(1202, True, num_classes, in_channels, shortcut, batchnorm, width)


# Plain nets accept `shortcut` (and ignore it) so one grid over the family can set it for both.

@register_model(family="resnet_cifar", paper_ref=REF)
def plain20(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(20, False, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain32(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(32, False, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain44(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(44, False, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain56(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(56, False, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain110(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(110, False, num_classes, in_channels, shortcut, batchnorm, width)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain1202(num_classes=10, in_channels=3, shortcut="A", batchnorm=True, width=16):
    return CifarResNet(1202, False, num_classes, in_channels, shortcut, batchnorm, width)
