"""FitNets and their maxout teacher (Romero et al. 2014, arXiv 1412.6550, appendix A.1, Tables 5 and 7).

Teacher (A.1.1, Goodfellow et al. 2013's CIFAR-10 maxout net): three maxout conv layers of
96-192-192 units (2 pieces; 8x8 pad 4, 8x8 pad 3, 5x5 pad 3), each followed by max-pooling
4x4/2, 4x4/2, 2x2/2 (overlapping; pylearn2/cuda-convnet pooling rounds up, so 33->16, 15->7,
9->5), a fully-connected maxout layer of 500 units and a softmax layer.

FitNets (A.1.2, Table 7): zero-padded 3x3 maxout convs (2 pieces), non-overlapping 2x2
max-pooling after the layers Table 7 marks, a last pooling over all remaining positions (8x8),
then a fully-connected maxout layer of 500 units and a softmax layer.

FC maxout pieces: A.1.1 says the teacher's FC layer has 5 pieces and FitNets copy it, but
every parameter count the paper prints (Teacher ~9M, FitNet 1 ~250K, FitNet 2 ~862K, FitNet 4
~2.5M) is what a 2-piece FC layer gives (9.04M, 250K, 862K, 2.54M; with 5 pieces: 16.3M, 346K,
1.05M, 2.74M). We default to fc_pieces=2 so the nets match the table being reproduced;
fc_pieces=5 builds the text's variant.

Hints (Sec. 2.2, Table 7 "hint: g <- h"): the teacher's hint is its 2nd layer (192 x 7 x 7 for
a 32x32 input); the student's guided layer is layer 6, 6, 8, 11 of FitNet 1-4 (80/32 x 8 x 8,
after its pooling). HintRegressor maps guided to hint with a conv whose kernel makes the
spatial sizes match (N_g - k + 1 = N_h) and the same non-linearity as the hint (maxout).
Init (A.1.2): all parameters U(-0.005, 0.005) ("paper"); "he" gives He-normal convs instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._layers import check_choice, he_init
from ._registry import ModelConfigError, register_model

REF = "Romero et al. 2014, FitNets, arXiv 1412.6550, Table 5 / Table 7 / appendix A.1"


def _init(model: nn.Module, init: str) -> None:
    check_choice("fitnet", "init", init, ("paper", "he"))
    if init == "he":
        he_init(model)
        return
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(m.weight, -0.005, 0.005)
            nn.init.zeros_(m.bias)


class MaxoutConv2d(nn.Module):
    """Conv to out*pieces channels, then the max over each group of `pieces` consecutive channels."""

    def __init__(self, cin: int, cout: int, kernel_size: int | tuple[int, int], padding: int = 0, pieces: int = 2):
        super().__init__()
        self.cout, self.pieces = cout, pieces
        self.conv = nn.Conv2d(cin, cout * pieces, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, cout * pieces, H', W')
        if self.pieces == 1:
            return y
        b, _, h, w = y.shape
        return y.view(b, self.cout, self.pieces, h, w).amax(2)


class MaxoutLinear(nn.Module):
    def __init__(self, fin: int, fout: int, pieces: int):
        super().__init__()
        self.fout, self.pieces = fout, pieces
        self.linear = nn.Linear(fin, fout * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(y.shape[0], self.fout, self.pieces).amax(2)


class _HintNet(nn.Module):
    """Layers run in order; `hint_index` (1-based) names the layer whose output is the hint/guided feature."""

    layers: nn.ModuleList
    hint_index: int

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = None
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i == self.hint_index:
                feat = x
        return x, feat

    def forward_hint(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, hint feature): the teacher's hint layer or the student's guided layer output."""
        x, feat = self._features(x)
        return self.head(torch.flatten(x, 1)), feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_hint(x)[0]


def scaled(channels: int, scale: float) -> int:
    """A reduced profile's channel count: `scale` times the paper's, at least 1 (same depth, same pieces)."""
    if not 0 < scale <= 4:
        raise ModelConfigError(f"scale must be in (0, 4], got {scale}")
    return max(1, int(round(channels * scale)))


class MaxoutTeacher(_HintNet):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, fc_pieces: int = 2, init: str = "paper",
                 scale: float = 1.0):
        super().__init__()
        pool = lambda k: nn.MaxPool2d(k, 2, ceil_mode=True)  # noqa: E731  (cuda-convnet rounds up)
        c1, c2, c3, fc = (scaled(c, scale) for c in (96, 192, 192, 500))
        self.layers = nn.ModuleList([
            nn.Sequential(MaxoutConv2d(in_channels, c1, 8, padding=4), pool(4)),  # (96, 16, 16)
            nn.Sequential(MaxoutConv2d(c1, c2, 8, padding=3), pool(4)),  # (192, 7, 7): the hint
            nn.Sequential(MaxoutConv2d(c2, c3, 5, padding=3), pool(2)),  # (192, 5, 5)
        ])
        self.hint_index = 2
        self.hint_shape = (c2, 7, 7)
        self.head = nn.Sequential(MaxoutLinear(c3 * 5 * 5, fc, fc_pieces), nn.Linear(fc, num_classes))
        _init(self, init)


class FitNet(_HintNet):
    """`stages`: conv widths per pooling stage; the last stage ends with a global max-pool."""

    def __init__(
        self,
        stages: tuple[tuple[int, ...], ...],
        guided: int,
        num_classes: int = 10,
        in_channels: int = 3,
        fc_pieces: int = 2,
        init: str = "paper",
        scale: float = 1.0,
    ):
        super().__init__()
        layers, cin, size = [], in_channels, 32
        for s, widths in enumerate(stages):
            for j, w in enumerate(widths):
                w = scaled(w, scale)
                mods: list[nn.Module] = [MaxoutConv2d(cin, w, 3, padding=1)]
                if j == len(widths) - 1:
                    mods.append(nn.MaxPool2d(2) if s < len(stages) - 1 else nn.AdaptiveMaxPool2d(1))
                layers.append(nn.Sequential(*mods))
                if len(layers) == guided:
                    self.hint_shape = (w, size // 2, size // 2) if len(mods) > 1 else (w, size, size)
                cin = w
            size //= 2
        self.layers = nn.ModuleList(layers)
        self.hint_index = guided
        fc = scaled(500, scale)
        self.head = nn.Sequential(MaxoutLinear(cin, fc, fc_pieces), nn.Linear(fc, num_classes))
        _init(self, init)


class HintRegressor(nn.Module):
    """Maps the student's guided feature (C_g, N_g, N_g) to the teacher's hint shape (C_h, N_h, N_h).

    A conv with kernel N_g - N_h + 1 per spatial dim (no padding), C_h outputs, and the hint's own
    non-linearity (maxout with `pieces`; pieces=1 gives a linear conv).
    """

    def __init__(self, student_shape: tuple[int, int, int], teacher_shape: tuple[int, int, int], pieces: int = 2):
        super().__init__()
        (cg, hg, wg), (ch, hh, wh) = student_shape, teacher_shape
        if hg < hh or wg < wh:
            raise ModelConfigError(f"HintRegressor: guided map {hg}x{wg} is smaller than hint map {hh}x{wh}")
        self.kernel = (hg - hh + 1, wg - wh + 1)
        self.conv = MaxoutConv2d(cg, ch, self.kernel, padding=0, pieces=pieces)
        bound = 1.0 / math.sqrt(cg * self.kernel[0] * self.kernel[1])
        nn.init.uniform_(self.conv.conv.weight, -bound, bound)
        nn.init.zeros_(self.conv.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def hint_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """Eq. (3): 1/2 ||u_h - r(v_g)||^2, averaged over the batch."""
    return 0.5 * (regressed - hint).pow(2).flatten(1).sum(1).mean()


@register_model(family="fitnet", paper_params=9e6, paper_flops=725e6, paper_ref=REF)
def fitnet_teacher(num_classes=10, in_channels=3, fc_pieces=2, init="paper", scale=1.0):
    return MaxoutTeacher(num_classes, in_channels, fc_pieces, init, scale)


@register_model(family="fitnet", paper_params=250e3, paper_flops=30e6, paper_ref=REF)
def fitnet1(num_classes=10, in_channels=3, fc_pieces=2, init="paper", scale=1.0):
    return FitNet(((16, 16, 16), (32, 32, 32), (48, 48, 64)), 6, num_classes, in_channels, fc_pieces, init, scale)


@register_model(family="fitnet", paper_params=862e3, paper_flops=108e6, paper_ref=REF)
def fitnet2(num_classes=10, in_channels=3, fc_pieces=2, init="paper", scale=1.0):
    return FitNet(((16, 32, 32), (48, 64, 80), (96, 96, 128)), 6, num_classes, in_channels, fc_pieces, init, scale)


@register_model(family="fitnet", paper_params=1.6e6, paper_flops=392e6, paper_ref=REF)
def fitnet3(num_classes=10, in_channels=3, fc_pieces=2, init="paper", scale=1.0):
    return FitNet(((32, 48, 64, 64), (80, 80, 80, 80), (128, 128, 128)), 8, num_classes, in_channels, fc_pieces, init, scale)


@register_model(family="fitnet", paper_params=2.5e6, paper_flops=382e6, paper_ref=REF)
def fitnet4(num_classes=10, in_channels=3, fc_pieces=2, init="paper", scale=1.0):
    return FitNet(((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6), 11, num_classes, in_channels, fc_pieces, init, scale)
