"""CIFAR ResNeXt-29 (Xie et al. 2016, arXiv 1611.05431, Sec. 5.3 / Table 7).

A 3x3 conv (64), three stages of three bottleneck blocks on 32/16/8 maps with outputs
256/512/1024, global average pooling and a FC layer: 1 + 3*3*3 + 1 = 29 layers. The grouped
3x3 conv of stage s has C x d x 2^s channels in C groups (8x64d: 512/1024/2048). Stride-2 in
the 3x3 conv of the first block of stages 2 and 3; projection shortcuts where dimensions change.
"""

from __future__ import annotations

from ._layers import Bottleneck, ResNet
from ._registry import ModelConfigError, register_model

REF = "Xie et al. 2016, Aggregated Residual Transformations, arXiv 1611.05431, Sec. 5.3 / Table 7"


def _resnext29(cardinality, base_width, num_classes, in_channels, width=64, blocks=3):
    # `width` scales every channel count by width/64 (stem, planes, and so the group width d: 8x64d at width 8 has
    # 8 groups of 8 channels in stage 1); 64 is the paper's net.
    if width < 1 or width % 1:
        raise ModelConfigError(f"resnext29: width must be a positive integer, got {width}")
    if blocks < 1 or blocks % 1:
        raise ModelConfigError(f"resnext_cifar: blocks must be a positive integer, got {blocks}")
    w, b = int(width), int(blocks)
    return ResNet(
        Bottleneck, (b, b, b), (w, 2 * w, 4 * w), num_classes, in_channels, "cifar", stem_width=w,
        shortcut="B", cardinality=cardinality, base_width=base_width,
    )


@register_model(family="resnext_cifar", paper_params=34.4e6, paper_ref=REF)
def resnext29_8x64d(num_classes=10, in_channels=3, width=64):
    return _resnext29(8, 64, num_classes, in_channels, width)


@register_model(family="resnext_cifar", paper_params=68.1e6, paper_ref=REF)
def resnext29_16x64d(num_classes=10, in_channels=3, width=64):
    return _resnext29(16, 64, num_classes, in_channels, width)


@register_model(family="resnext_cifar", paper_ref=REF + "; any depth, for reduced profiles' proxies")
def resnext_cifar(num_classes=10, in_channels=3, blocks=3, cardinality=8, base_width=64, width=64):
    """Table 7's template with `blocks` bottleneck blocks per stage (depth 9 * blocks + 2; 3 is ResNeXt-29)."""
    if cardinality < 1 or base_width < 1:
        raise ModelConfigError(f"resnext_cifar: cardinality and base_width must be >= 1, got {cardinality}, "
                               f"{base_width}")
    return _resnext29(cardinality, base_width, num_classes, in_channels, width, blocks)
