"""CIFAR ResNeXt-29 (Xie et al. 2016, arXiv 1611.05431, Sec. 5.3 / Table 7).

A 3x3 conv (64), three stages of three bottleneck blocks on 32/16/8 maps with outputs
256/512/1024, global average pooling and a FC layer: 1 + 3*3*3 + 1 = 29 layers. The grouped
3x3 conv of stage s has C x d x 2^s channels in C groups (8x64d: 512/1024/2048). Stride-2 in
the 3x3 conv of the first block of stages 2 and 3; projection shortcuts where dimensions change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import conv3x3, he_init
from ._registry import register_model
from .resnext_imagenet import Bottleneck

REF = "Xie et al. 2016, Aggregated Residual Transformations, arXiv 1611.05431, Sec. 5.3 / Table 7"


class CifarResNeXt(nn.Module):
    def __init__(self, cardinality: int, base_width: int, depth: int = 29, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 9
        self.conv1 = conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for s in range(3):
            planes = 64 * 2**s  # block output = 4 * planes = 256/512/1024
            for j in range(n):
                stride = 2 if s > 0 and j == 0 else 1
                width = cardinality * base_width * 2**s
                blocks.append(Bottleneck(cin, planes, stride, "B", width=width, groups=cardinality))
                cin = planes * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H, W)
        x = self.blocks(x)  # (B, 1024, H/4, W/4)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model(family="resnext_cifar", paper_params=34.4e6, paper_ref=REF)
def resnext29_8x64d(num_classes=10, in_channels=3):
    return CifarResNeXt(8, 64, 29, num_classes, in_channels)


@register_model(family="resnext_cifar", paper_params=68.1e6, paper_ref=REF)
def resnext29_16x64d(num_classes=10, in_channels=3):
    return CifarResNeXt(16, 64, 29, num_classes, in_channels)
