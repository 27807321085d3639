"""ImageNet ResNets (He et al. 2015, arXiv 1512.03385, Table 1) and ResNeXts (Xie et al. 2016, arXiv 1611.05431).

A ResNeXt is a bottleneck ResNet whose 3x3 conv is grouped: `cardinality` groups of
`base_width` channels in the first stage, doubling each stage (template C x d). ResNet-50 is
1 x 64d. Stem: 7x7/2 conv 64 + BN + ReLU + 3x3/2 max-pool; stages conv2..conv5 on
56/28/14/7 maps; bottleneck outputs 256/512/1024/2048; global average pool; 1000-way FC.

Per ResNeXt Sec. 4: BN after each conv, ReLU after each BN except the block output (ReLU after
the addition); shortcuts are identity except where dimensions increase, which use projections
(option B of He 2015); stage 3-5 downsampling is a stride-2 3x3 conv in the first block.
Basic-block nets (ResNet-18/34, plain-18/34) take He 2015's shortcut option A/B/C (default A,
as the paper's Table 2 comparison with plain nets uses). ResNet-200 is the pre-activation net of
1603.05027 that ResNeXt Table 4 cites.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_choice, conv1x1, conv3x3, he_init
from ._registry import register_model
from .preact import PreActUnit
from .resnet_cifar import make_shortcut

REF_RESNET = "He et al. 2015, Deep Residual Learning, arXiv 1512.03385, Table 1 / Sec. 3.3"
REF_RESNEXT = "Xie et al. 2016, Aggregated Residual Transformations, arXiv 1611.05431, Tables 1/3/4"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, shortcut: str | None = "A", **_):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None if shortcut is None else make_shortcut(cin, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 (width) - 3x3 grouped (width, stride) - 1x1 (planes * 4), + shortcut, ReLU."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        shortcut: str | None = "B",
        width: int | None = None,
        groups: int = 1,
    ):
        super().__init__()
        width = width or planes
        cout = planes * self.expansion
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups=groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = None if shortcut is None else make_shortcut(cin, cout, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class ImageNetResNet(nn.Module):
    def __init__(
        self,
        block: type[nn.Module],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
        shortcut: str = "B",
        residual: bool = True,
    ):
        super().__init__()
        check_choice("resnet", "shortcut", shortcut, ("A", "B", "C"))
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, n in enumerate(layers):
            planes = 64 * 2**i
            width = cardinality * base_width * 2**i  # C x d, doubled per stage
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                sc = shortcut if residual else None
                blocks.append(block(cin, planes, stride, sc, width=width, groups=cardinality))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 2048, H/32, W/32)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreActImageNetResNet(nn.Module):
    """Full pre-activation bottleneck ResNet (1603.05027 Fig. 4(e)) on the ImageNet stem.

    The stem's BN-ReLU is the first unit's pre-activation; an extra BN-ReLU follows the last unit.
    """

    def __init__(self, layers: tuple[int, int, int, int], num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        units, cin = [], 64
        for i, n in enumerate(layers):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                units.append(PreActUnit("e", cin, 256 * 2**i, stride, bottleneck=True, preact_in=(i, j) != (0, 0)))
                cin = 256 * 2**i
        self.units = nn.Sequential(*units)
        self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)  # (B, 64, H/4, W/4)
        x = F.relu(self.final_bn(self.units(x)))  # (B, 2048, H/32, W/32)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_imagenet = functools.partial(register_model, family="resnext_imagenet", input_size=224)


def _bottleneck(layers, cardinality, base_width, num_classes, in_channels):
    return ImageNetResNet(Bottleneck, layers, num_classes, in_channels, cardinality, base_width, "B")


def _basic(layers, residual, num_classes, in_channels, shortcut):
    return ImageNetResNet(BasicBlock, layers, num_classes, in_channels, shortcut=shortcut, residual=residual)


@_imagenet(paper_flops=1.8e9, paper_ref=REF_RESNET)
def resnet18(num_classes=1000, in_channels=3, shortcut="A"):
    return _basic((2, 2, 2, 2), True, num_classes, in_channels, shortcut)


@_imagenet(paper_flops=3.6e9, paper_ref=REF_RESNET)
def resnet34(num_classes=1000, in_channels=3, shortcut="A"):
    return _basic((3, 4, 6, 3), True, num_classes, in_channels, shortcut)


@_imagenet(paper_flops=1.8e9, paper_ref=REF_RESNET)
def plain18(num_classes=1000, in_channels=3, shortcut="A"):
    return _basic((2, 2, 2, 2), False, num_classes, in_channels, shortcut)


@_imagenet(paper_flops=3.6e9, paper_ref=REF_RESNET)
def plain34(num_classes=1000, in_channels=3, shortcut="A"):
    return _basic((3, 4, 6, 3), False, num_classes, in_channels, shortcut)


@_imagenet(paper_params=25.5e6, paper_flops=4.1e9, paper_ref=REF_RESNEXT)
def resnet50(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 6, 3), 1, 64, num_classes, in_channels)


@_imagenet(paper_params=44.5e6, paper_flops=7.8e9, paper_ref=REF_RESNEXT)
def resnet101(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 1, 64, num_classes, in_channels)


# The 2x-complexity rows of ResNeXt Table 4 (about twice ResNet-101's FLOPs).
# ResNeXt Table 4 cites ResNet-200 from [15] (1603.05027): full pre-activation units by default;
# unit="a" builds it from the original bottleneck block instead.
@_imagenet(paper_ref=REF_RESNEXT + "; ResNet-200 of 1603.05027 (pre-activation)")
def resnet200(num_classes=1000, in_channels=3, unit="e"):
    check_choice("resnet200", "unit", unit, ("a", "e"))
    if unit == "a":
        return _bottleneck((3, 24, 36, 3), 1, 64, num_classes, in_channels)
    return PreActImageNetResNet((3, 24, 36, 3), num_classes, in_channels)


@_imagenet(paper_ref=REF_RESNEXT)
def resnet101_1x100d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 1, 100, num_classes, in_channels)


@_imagenet(paper_params=25.0e6, paper_flops=4.2e9, paper_ref=REF_RESNEXT)
def resnext50_32x4d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 6, 3), 32, 4, num_classes, in_channels)


@_imagenet(paper_params=44.2e6, paper_flops=8.0e9, paper_ref=REF_RESNEXT)
def resnext101_32x4d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 32, 4, num_classes, in_channels)


@_imagenet(paper_ref=REF_RESNEXT)
def resnext101_2x64d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 2, 64, num_classes, in_channels)


@_imagenet(paper_params=83.6e6, paper_flops=15.6e9, paper_ref=REF_RESNEXT)
def resnext101_64x4d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 64, 4, num_classes, in_channels)
