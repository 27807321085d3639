"""CIFAR ResNets and their plain twins (He et al. 2015, arXiv 1512.03385, section 4.2).

depth = 6n + 2: a 3x3 conv with 16 filters, then three stages of n two-conv units with
16/32/64 filters on 32x32/16x16/8x8 maps (the first conv of stages 2 and 3 has stride 2),
global average pooling and a fully-connected layer. Plain nets are the same stack without
shortcuts.

Shortcuts (section 3.3, "Identity vs. Projection Shortcuts"):
  A  identity; where the shape changes, stride-2 subsampling and zero-padded channels
     (parameter-free; the paper's CIFAR nets use this).
  B  1x1 projection (+BN) only where the shape changes, identity elsewhere.
  C  1x1 projection (+BN) on every unit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_choice, conv1x1, conv3x3, he_init, norm_or_identity
from ._registry import ModelConfigError, register_model

REF = "He et al. 2015, Deep Residual Learning, arXiv 1512.03385, Sec. 4.2 / Table 6"


class PadShortcut(nn.Module):
    """Option A: subsample by stride and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # pads dim 1 (channels) at the end


def make_shortcut(cin: int, cout: int, stride: int, shortcut: str, batchnorm: bool = True) -> nn.Module:
    """Shortcut path of a unit for options A/B/C (used by the ImageNet basic-block nets too)."""
    changes = stride != 1 or cin != cout
    if shortcut == "C" or (shortcut == "B" and changes):
        return nn.Sequential(conv1x1(cin, cout, stride, bias=not batchnorm), norm_or_identity(cout, batchnorm))
    if shortcut == "A" and changes:
        return PadShortcut(cin, cout, stride)
    return nn.Identity()


class BasicUnit(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, (+ shortcut), ReLU: the unit of the paper's Fig. 2."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str | None = "A", batchnorm: bool = True):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, bias=not batchnorm)
        self.bn1 = norm_or_identity(cout, batchnorm)
        self.conv2 = conv3x3(cout, cout, bias=not batchnorm)
        self.bn2 = norm_or_identity(cout, batchnorm)
        # shortcut None = plain net: the same two convs, nothing added
        self.shortcut = None if shortcut is None else make_shortcut(cin, cout, stride, shortcut, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        residual: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "A",
        batchnorm: bool = True,
        widths: tuple[int, int, int] = (16, 32, 64),
    ):
        super().__init__()
        kind = "resnet" if residual else "plain"
        if depth < 8 or (depth - 2) % 6:
            raise ModelConfigError(f"{kind}: depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, 1202), got {depth}")
        check_choice(kind, "shortcut", shortcut, ("A", "B", "C"))
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, widths[0], bias=not batchnorm)
        self.bn1 = norm_or_identity(widths[0], batchnorm)
        units, cin = [], widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                units.append(BasicUnit(cin, w, stride, shortcut if residual else None, batchnorm))
                cin = w
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        x = self.units(x)  # (B, 64, H/4, W/4)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _resnet(depth, residual, num_classes, in_channels, shortcut, batchnorm):
    return CifarResNet(depth, residual, num_classes, in_channels, shortcut, batchnorm)


# Plain nets accept `shortcut` (and ignore it) so one grid over the family can set it for both.

@register_model(family="resnet_cifar", paper_params=0.27e6, paper_ref=REF)
def resnet20(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(20, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_params=0.46e6, paper_ref=REF)
def resnet32(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(32, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_params=0.66e6, paper_ref=REF)
def resnet44(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(44, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_params=0.85e6, paper_ref=REF)
def resnet56(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(56, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_params=1.7e6, paper_ref=REF)
def resnet110(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(110, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_params=19.4e6, paper_ref=REF)
def resnet1202(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(1202, True, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain20(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(20, False, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain32(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(32, False, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain44(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(44, False, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain56(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(56, False, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain110(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(110, False, num_classes, in_channels, shortcut, batchnorm)


@register_model(family="resnet_cifar", paper_ref=REF)
def plain1202(num_classes=10, in_channels=3, shortcut="A", batchnorm=True):
    return _resnet(1202, False, num_classes, in_channels, shortcut, batchnorm)
