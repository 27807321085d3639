"""Highway networks (Srivastava et al. 2015: arXiv 1505.00387 and 1507.06228).

A highway layer computes y = H(x) * T(x) + x * (1 - T(x)) with H = ReLU(W_H x + b_H) and the
transform gate T = sigmoid(W_T x + b_T). b_T starts negative so every layer begins by carrying
its input. Highway layers keep the shape, so a plain layer changes widths.

Convolutional nets (CIFAR-10, 1505.00387 Table 1 / 1507.06228 Table 2). Each stage is a plain
3x3 conv (ReLU) that sets the width, then highway convs, then 2x2 max-pooling (dropout 0.2 on the
input and after each pooling); the head is a 1x1 conv to the classes (ReLU), global average
pooling and a fully-connected layer. Gate biases start at -2 and weights use Caffe's "xavier"
fill, U(+-sqrt(3 / fan_in)).
- highway2 ("Highway 2 (Fitnet 4)", 19 layers, ~2.3M) is the authors' released CIFAR 19-layer
  net (flukeskywalker/highway-networks, cifar10-19layers): widths 32/80/128 with 4/5/5 highway convs.
- highway1/3/4 are RECONSTRUCTIONS: the supplementary layer lists could not be retrieved. They keep
  the paper's layer counts and budgets and the released net's layout: highway1 follows Fitnet 1's
  three 3-layer stages (16/32/64), highway3 the 19-layer layout at widths 32/64/96, highway4
  (32 layers, "alternating receptive fields of size 3x3 and 1x1", 1507.06228 Sec. 3.3.1) three
  stages of a plain 3x3 conv + 9 highway convs alternating 1x1/3x3 at widths 32/64/96.

Fully-connected nets (1507.06228 Sec. 3.1, Fig. 1): a plain layer from the flattened image to the
width, then depth-1 plain or highway layers, then softmax; widths 50 (highway) and 71 (plain) give
~5000 parameters per layer. Gate bias and activation were searched (bias in [-1, -10], ReLU or
tanh); defaults here: -2 and ReLU. Weights use the normalized init (He for ReLU, Glorot for tanh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_choice, check_dropout, global_pool
from ._registry import ModelConfigError, register_model

REF_CONV = "Srivastava et al. 2015, Highway Networks, arXiv 1505.00387, Table 1 (architectures: 1507.06228)"
REF_FC = "Srivastava et al. 2015, Training Very Deep Networks, arXiv 1507.06228, Sec. 3.1 / Fig. 1"


def _caffe_xavier(w: torch.Tensor) -> None:
    fan_in = w[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(w, -bound, bound)


class HighwayConv2d(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, gate_bias: float = -2.0):
        super().__init__()
        pad = kernel_size // 2  # zero-padding keeps the map size (1505.00387 Sec. 2.1)
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=pad)  # H
        self.gate = nn.Conv2d(channels, channels, kernel_size, padding=pad)  # T
        for m in (self.conv, self.gate):
            _caffe_xavier(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        t = torch.sigmoid(self.gate(x))
        return x + t * (h - x)  # = h * t + x * (1 - t)


class HighwayLinear(nn.Module):
    def __init__(self, width: int, gate_bias: float, activation: str):
        super().__init__()
        self.linear = nn.Linear(width, width)  # H
        self.gate = nn.Linear(width, width)  # T
        self.act = torch.tanh if activation == "tanh" else F.relu
        nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(self.gate(x))
        return x + t * (self.act(self.linear(x)) - x)


class PlainLinear(nn.Module):
    def __init__(self, fin: int, fout: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(fin, fout)
        self.act = torch.tanh if activation == "tanh" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class ConvHighwayNet(nn.Module):
    """`stages`: per stage (width, highway kernel sizes); stages after the first start with a 2x2 max-pool."""

    def __init__(
        self,
        stages: tuple[tuple[int, tuple[int, ...]], ...],
        num_classes: int = 10,
        in_channels: int = 3,
        gate_bias: float = -2.0,
        dropout: float = 0.2,
        scale: float = 1.0,
    ):
        super().__init__()
        if not 0 < scale <= 4:
            raise ModelConfigError(f"highway: scale must be in (0, 4], got {scale}")
        if gate_bias >= 0:
            raise ModelConfigError(f"highway: gate_bias should be negative (carry at start), got {gate_bias}")
        check_dropout("highway", dropout)
        self.dropout = dropout
        blocks, cin = [], in_channels
        for width, kernels in stages:
            width = max(1, int(round(width * scale)))   # a reduced profile's narrower stages, same depth
            plain = nn.Conv2d(cin, width, 3, padding=1)
            _caffe_xavier(plain.weight)
            nn.init.zeros_(plain.bias)
            blocks.append(nn.Sequential(plain, nn.ReLU(), *(HighwayConv2d(width, k, gate_bias) for k in kernels)))
            cin = width
        self.stages = nn.ModuleList(blocks)
        self.classifier_conv = nn.Conv2d(cin, num_classes, 1)
        self.fc = nn.Linear(num_classes, num_classes)
        for m in (self.classifier_conv, self.fc):
            _caffe_xavier(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(F.dropout(x, self.dropout, self.training))
        x = F.relu(self.classifier_conv(x))  # (B, classes, H/4, W/4)
        return self.fc(F.dropout(global_pool(x), self.dropout, self.training))


class FCNet(nn.Module):
    """Flatten -> plain layer -> (depth - 1) plain or highway layers -> classifier."""

    def __init__(
        self,
        depth: int,
        width: int,
        highway: bool,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        gate_bias: float = -2.0,
        activation: str = "relu",
    ):
        super().__init__()
        kind = "highway_fc" if highway else "plain_fc"
        check_choice(kind, "activation", activation, ("relu", "tanh"))
        if depth < 1 or width < 1 or image_size < 1:
            raise ModelConfigError(
                f"{kind}: depth, width and image_size must be >= 1, got {depth}, {width}, {image_size}"
            )
        if highway and gate_bias >= 0:
            raise ModelConfigError(f"{kind}: gate_bias should be negative, got {gate_bias}")
        self.first = PlainLinear(in_channels * image_size * image_size, width, activation)
        layer = (lambda: HighwayLinear(width, gate_bias, activation)) if highway else (
            lambda: PlainLinear(width, width, activation)
        )
        self.layers = nn.Sequential(*(layer() for _ in range(depth - 1)))
        self.out = nn.Linear(width, num_classes)
        gain = "tanh" if activation == "tanh" else "relu"
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if gain == "relu":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("tanh"))
                if m.bias is not None and not any(m is h.gate for h in self.layers if isinstance(h, HighwayLinear)):
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(self.first(torch.flatten(x, 1))))


def _conv(stages, num_classes, in_channels, gate_bias, dropout, scale=1.0):
    return ConvHighwayNet(stages, num_classes, in_channels, gate_bias, dropout, scale)


@register_model(family="highway", paper_params=236e3, paper_ref=REF_CONV + " [reconstructed layer list]")
def highway1(num_classes=10, in_channels=3, gate_bias=-2.0, dropout=0.2, scale=1.0):
    return _conv(((16, (3, 3)), (32, (3, 3)), (64, (3, 3))), num_classes, in_channels, gate_bias, dropout, scale)


@register_model(family="highway", paper_params=2.3e6, paper_ref=REF_CONV + "; authors' cifar10-19layers prototxt")
def highway2(num_classes=10, in_channels=3, gate_bias=-2.0, dropout=0.2, scale=1.0):
    return _conv(((32, (3,) * 4), (80, (3,) * 5), (128, (3,) * 5)), num_classes, in_channels, gate_bias, dropout, scale)


@register_model(family="highway", paper_params=1.4e6, paper_ref=REF_CONV + " [reconstructed layer list]")
def highway3(num_classes=10, in_channels=3, gate_bias=-2.0, dropout=0.2, scale=1.0):
    return _conv(((32, (3,) * 4), (64, (3,) * 5), (96, (3,) * 5)), num_classes, in_channels, gate_bias, dropout, scale)


@register_model(family="highway", paper_params=1.25e6, paper_ref=REF_CONV + " [reconstructed layer list]")
def highway4(num_classes=10, in_channels=3, gate_bias=-2.0, dropout=0.2, scale=1.0):
    alt = (1, 3, 1, 3, 1, 3, 1, 3, 1)
    return _conv(((32, alt), (64, alt), (96, alt)), num_classes, in_channels, gate_bias, dropout, scale)


@register_model(family="highway", paper_ref=REF_FC)
def highway_fc(num_classes=10, in_channels=3, depth=10, width=50, gate_bias=-2.0, activation="relu", image_size=32):
    return FCNet(depth, width, True, num_classes, in_channels, image_size, gate_bias, activation)


@register_model(family="highway", paper_ref=REF_FC)
def plain_fc(num_classes=10, in_channels=3, depth=10, width=71, activation="relu", image_size=32):
    return FCNet(depth, width, False, num_classes, in_channels, image_size, activation=activation)


# The depths of Fig. 1.
@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 10})
def highway_fc10(num_classes=10, in_channels=3, width=50, gate_bias=-2.0, activation="relu", image_size=32):
    return FCNet(10, width, True, num_classes, in_channels, image_size, gate_bias, activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 20})
def highway_fc20(num_classes=10, in_channels=3, width=50, gate_bias=-2.0, activation="relu", image_size=32):
    return FCNet(20, width, True, num_classes, in_channels, image_size, gate_bias, activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 50})
def highway_fc50(num_classes=10, in_channels=3, width=50, gate_bias=-2.0, activation="relu", image_size=32):
    return FCNet(50, width, True, num_classes, in_channels, image_size, gate_bias, activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 100})
def highway_fc100(num_classes=10, in_channels=3, width=50, gate_bias=-2.0, activation="relu", image_size=32):
    return FCNet(100, width, True, num_classes, in_channels, image_size, gate_bias, activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 10})
def plain_fc10(num_classes=10, in_channels=3, width=71, activation="relu", image_size=32):
    return FCNet(10, width, False, num_classes, in_channels, image_size, activation=activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 20})
def plain_fc20(num_classes=10, in_channels=3, width=71, activation="relu", image_size=32):
    return FCNet(20, width, False, num_classes, in_channels, image_size, activation=activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 50})
def plain_fc50(num_classes=10, in_channels=3, width=71, activation="relu", image_size=32):
    return FCNet(50, width, False, num_classes, in_channels, image_size, activation=activation)


@register_model(family="highway", paper_ref=REF_FC, fixed={"depth": 100})
def plain_fc100(num_classes=10, in_channels=3, width=71, activation="relu", image_size=32):
    return FCNet(100, width, False, num_classes, in_channels, image_size, activation=activation)
