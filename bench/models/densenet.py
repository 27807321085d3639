"""DenseNets for CIFAR (Huang et al. 2016, arXiv 1608.06993, Sec. 3 "Implementation Details" / Table 2).

Three dense blocks on 32/16/8 maps. Each layer is BN-ReLU-Conv3x3 producing k (growth rate)
channels, concatenated to its input. DenseNet-B layers are BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k);
DenseNet-C transitions compress channels by theta = 0.5. Transitions: BN-ReLU-Conv1x1-AvgPool2x2.
The first conv has 16 output channels (2k for DenseNet-BC). After the last block: BN-ReLU,
global average pooling, softmax classifier. L counts the conv layers + first conv + FC:
n = (L - 4) / 3 layers per block, or (L - 4) / 6 bottleneck layers for BC.
Without data augmentation the paper adds dropout 0.2 after each conv except the first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_dropout, conv1x1, conv3x3, global_pool, he_init
from ._registry import ModelConfigError, register_model

REF = "Huang et al. 2016, Densely Connected Convolutional Networks, arXiv 1608.06993, Table 2"


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: bool, dropout: float):
        super().__init__()
        self.bottleneck = bottleneck
        self.dropout = dropout
        if bottleneck:
            self.bn0 = nn.BatchNorm2d(cin)
            self.conv0 = conv1x1(cin, 4 * growth)
            cin = 4 * growth
        self.bn = nn.BatchNorm2d(cin)
        self.conv = conv3x3(cin, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.bottleneck:
            out = F.dropout(self.conv0(F.relu(self.bn0(out))), self.dropout, self.training)
        out = F.dropout(self.conv(F.relu(self.bn(out))), self.dropout, self.training)
        return torch.cat([x, out], 1)  # (B, cin + k, H, W)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = conv1x1(cin, cout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.dropout(self.conv(F.relu(self.bn(x))), self.dropout, self.training)
        return F.avg_pool2d(out, 2)


class DenseNet(nn.Module):
    def __init__(
        self,
        depth: int,
        growth: int,
        bc: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        per_layer = 6 if bc else 3
        if depth < 4 + per_layer or (depth - 4) % per_layer:
            raise ModelConfigError(f"densenet: depth must be {per_layer}n+4, got {depth}")
        check_dropout("densenet", dropout)
        n = (depth - 4) // per_layer
        channels = 2 * growth if bc else 16
        self.conv1 = conv3x3(in_channels, channels)
        features: list[nn.Module] = []
        for b in range(3):
            for _ in range(n):
                features.append(DenseLayer(channels, growth, bc, dropout))
                channels += growth
            if b < 2:
                out = channels // 2 if bc else channels  # compression theta = 0.5 for -C
                features.append(Transition(channels, out, dropout))
                channels = out
        self.features = nn.Sequential(*features)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))  # (B, C, H/4, W/4)
        return self.fc(global_pool(F.relu(self.bn(x))))


@register_model(family="densenet", paper_params=1.0e6, paper_ref=REF)
def densenet40_k12(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(40, 12, False, num_classes, in_channels, dropout)


@register_model(family="densenet", paper_params=7.0e6, paper_ref=REF)
def densenet100_k12(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(100, 12, False, num_classes, in_channels, dropout)


@register_model(family="densenet", paper_params=27.2e6, paper_ref=REF)
def densenet100_k24(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(100, 24, False, num_classes, in_channels, dropout)


@register_model(family="densenet", paper_params=0.8e6, paper_ref=REF)
def densenet_bc100_k12(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(100, 12, True, num_classes, in_channels, dropout)


@register_model(family="densenet", paper_params=15.3e6, paper_ref=REF)
def densenet_bc250_k24(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(250, 24, True, num_classes, in_channels, dropout)


@register_model(family="densenet", paper_params=25.6e6, paper_ref=REF)
def densenet_bc190_k40(num_classes=10, in_channels=3, dropout=0.0):
    return DenseNet(190, 40, True, num_classes, in_channels, dropout)
