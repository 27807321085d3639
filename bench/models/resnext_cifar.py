"""CIFAR ResNeXt-29 (Xie et al. 2016, arXiv 1611.05431, Sec. 5.3 / Table 7).

A 3x3 conv (64), three stages of three bottleneck blocks on 32/16/8 maps with outputs
256/512/1024, global average pooling and a FC layer: 1 + 3*3*3 + 1 = 29 layers. The grouped
3x3 conv of stage s has C x d x 2^s channels in C groups (8x64d: 512/1024/2048). Stride-2 in
the 3x3 conv of the first block of stages 2 and 3; projection shortcuts where dimensions change.
"""

from __future__ import annotations

from ._layers import Bottleneck, ResNet
from ._registry import register_model

REF = "Xie et al. 2016, Aggregated Residual Transformations, arXiv 1611.05431, Sec. 5.3 / Table 7"


def _resnext29(cardinality, base_width, num_classes, in_channels):
    return ResNet(
        Bottleneck, (3, 3, 3), (64, 128, 256), num_classes, in_channels, "cifar", stem_width=64,
        shortcut="B", cardinality=cardinality, base_width=base_width,
    )


@register_model(family="resnext_cifar", paper_params=34.4e6, paper_ref=REF)
def resnext29_8x64d(num_classes=10, in_channels=3):
    return _resnext29(8, 64, num_classes, in_channels)


@register_model(family="resnext_cifar", paper_params=68.1e6, paper_ref=REF)
def resnext29_16x64d(num_classes=10, in_channels=3):
    return _resnext29(16, 64, num_classes, in_channels)
