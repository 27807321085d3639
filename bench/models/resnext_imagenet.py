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

import math

from ._layers import BasicBlock, Bottleneck, PreActNet, ResNet, check_choice
from ._registry import ModelConfigError, register_model

REF_RESNET = "He et al. 2015, Deep Residual Learning, arXiv 1512.03385, Table 1 / Sec. 3.3"
REF_RESNEXT = "Xie et al. 2016, Aggregated Residual Transformations, arXiv 1611.05431, Tables 1/3/4"
IMAGENET = dict(family="resnext_imagenet", input_size=224)


def _bottleneck(layers, cardinality, base_width, num_classes, in_channels, width=64, stem="imagenet"):
    # width scales every stage's planes by width/64, and with them each group's width d (Bottleneck computes
    # planes * d / 64 per group): every conv's cost then scales by (width/64)^2, so a ResNet and a ResNeXt of
    # equal FLOPs stay equal. Used by the small-image stand-in; the defaults are Table 1's.
    planes = tuple(width * 2**i for i in range(4))
    if width < 1 or (width * base_width) % 64:
        raise ModelConfigError(f"width {width} leaves a fractional group width ({base_width}d x {width}/64); "
                               f"use a multiple of {64 // math.gcd(64, base_width)}")
    return ResNet(
        Bottleneck, layers, planes, num_classes, in_channels, stem,
        shortcut="B", cardinality=cardinality, base_width=base_width,
    )


def _basic(layers, residual, num_classes, in_channels, shortcut, width=64, stem="imagenet"):
    # width/stem serve small-image stand-ins of Fig. 4 (a 3x3 stem, narrower stages); the defaults are Table 1's.
    if width < 1:
        raise ModelConfigError(f"width must be >= 1, got {width}")
    return ResNet(BasicBlock, layers, tuple(width * 2**i for i in range(4)), num_classes, in_channels, stem,
                  shortcut=shortcut, residual=residual)


def _preact_bottleneck(layers, num_classes, in_channels):
    """Full pre-activation bottleneck ResNet (1603.05027 Fig. 4(e)) on the ImageNet stem."""
    return PreActNet(
        layers, (256, 512, 1024, 2048), "e", True, num_classes, in_channels, "imagenet", stem_width=64
    )


@register_model(**IMAGENET, paper_flops=1.8e9, paper_ref=REF_RESNET)
def resnet18(num_classes=1000, in_channels=3, shortcut="A", width=64, stem="imagenet"):
    return _basic((2, 2, 2, 2), True, num_classes, in_channels, shortcut, width, stem)


@register_model(**IMAGENET, paper_flops=3.6e9, paper_ref=REF_RESNET)
def resnet34(num_classes=1000, in_channels=3, shortcut="A", width=64, stem="imagenet"):
    return _basic((3, 4, 6, 3), True, num_classes, in_channels, shortcut, width, stem)


@register_model(**IMAGENET, paper_flops=1.8e9, paper_ref=REF_RESNET)
def plain18(num_classes=1000, in_channels=3, shortcut="A", width=64, stem="imagenet"):
    return _basic((2, 2, 2, 2), False, num_classes, in_channels, shortcut, width, stem)


@register_model(**IMAGENET, paper_flops=3.6e9, paper_ref=REF_RESNET)
def plain34(num_classes=1000, in_channels=3, shortcut="A", width=64, stem="imagenet"):
    return _basic((3, 4, 6, 3), False, num_classes, in_channels, shortcut, width, stem)


@register_model(**IMAGENET, paper_params=25.5e6, paper_flops=4.1e9, paper_ref=REF_RESNEXT)
def resnet50(num_classes=1000, in_channels=3, width=64, stem="imagenet"):
    return _bottleneck((3, 4, 6, 3), 1, 64, num_classes, in_channels, width, stem)


@register_model(**IMAGENET, paper_params=44.5e6, paper_flops=7.8e9, paper_ref=REF_RESNEXT)
def resnet101(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 1, 64, num_classes, in_channels)


# The 2x-complexity rows of ResNeXt Table 4 (about twice ResNet-101's FLOPs).
# ResNeXt Table 4 cites ResNet-200 from [15] (1603.05027): full pre-activation units by default;
# unit="a" builds it from the original bottleneck block instead.
@register_model(**IMAGENET, paper_ref=REF_RESNEXT + "; ResNet-200 of 1603.05027 (pre-activation)")
def resnet200(num_classes=1000, in_channels=3, unit="e"):
    check_choice("resnet200", "unit", unit, ("a", "e"))
    if unit == "a":
        return _bottleneck((3, 24, 36, 3), 1, 64, num_classes, in_channels)
    return _preact_bottleneck((3, 24, 36, 3), num_classes, in_channels)


@register_model(**IMAGENET, paper_ref=REF_RESNEXT)
def resnet101_1x100d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 1, 100, num_classes, in_channels)


@register_model(**IMAGENET, paper_params=25.0e6, paper_flops=4.2e9, paper_ref=REF_RESNEXT)
def resnext50_32x4d(num_classes=1000, in_channels=3, width=64, stem="imagenet"):
    return _bottleneck((3, 4, 6, 3), 32, 4, num_classes, in_channels, width, stem)


@register_model(**IMAGENET, paper_params=44.2e6, paper_flops=8.0e9, paper_ref=REF_RESNEXT)
def resnext101_32x4d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 32, 4, num_classes, in_channels)


@register_model(**IMAGENET, paper_ref=REF_RESNEXT)
def resnext101_2x64d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 2, 64, num_classes, in_channels)


@register_model(**IMAGENET, paper_params=83.6e6, paper_flops=15.6e9, paper_ref=REF_RESNEXT)
def resnext101_64x4d(num_classes=1000, in_channels=3):
    return _bottleneck((3, 4, 23, 3), 64, 4, num_classes, in_channels)


@register_model(**IMAGENET, paper_ref=REF_RESNEXT + "; any depth and template, for reduced profiles' proxies")
def resnext(num_classes=1000, in_channels=3, layers=(1, 1, 1, 1), cardinality=1, base_width=64, width=64,
            stem="imagenet"):
    """Table 3/4's bottleneck template (C groups of d = base_width channels in the first stage) at another depth:
    `layers` blocks per stage. A ResNet is cardinality 1, base_width 64. For proxies of the 50/101/200-layer nets
    at a base depth that trains within a reduced profile's budget."""
    layers = tuple(int(n) for n in layers)
    if len(layers) != 4 or min(layers) < 1:
        raise ModelConfigError(f"resnext: layers must be 4 block counts >= 1, got {list(layers)}")
    if cardinality < 1 or base_width < 1:
        raise ModelConfigError(f"resnext: cardinality and base_width must be >= 1, got {cardinality}, {base_width}")
    return _bottleneck(layers, cardinality, base_width, num_classes, in_channels, width, stem)
