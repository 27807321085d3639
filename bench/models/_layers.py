"""Layers, blocks and trunks shared by the families; a family file holds only its configs.

ResNet is one trunk: CIFAR or ImageNet stem, a `block` (BasicBlock or Bottleneck, one
signature), units grouped in stages with the stride rule below, then global pooling and a FC
layer. ResNeXt is the Bottleneck trunk with `cardinality` groups of `base_width` channels.
PreActNet is the same trunk for the pre-activation units of He 2016 Fig. 4, whose op order
differs.

Shortcuts (He 2015 Sec. 3.3, "Identity vs. Projection Shortcuts"):
  A  identity; where the shape changes, stride-2 subsampling and zero-padded channels
     (parameter-free; the paper's CIFAR nets use this).
  B  1x1 projection (+BN) only where the shape changes, identity elsewhere.
  C  1x1 projection (+BN) on every unit.
  None: no shortcut at all (the plain nets).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import ModelConfigError

SHORTCUTS = ("A", "B", "C")
UNITS = ("a", "b", "c", "d", "e")
STEMS = ("cifar", "imagenet")

# ---------------------------------------------------------------------------------------------
# Helpers


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)


def norm_or_identity(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def he_init(model: nn.Module) -> None:
    """He et al. 2015 init as the ResNet papers' Torch code does it.

    Conv weights ~ N(0, 2 / (k*k*out_channels)) (kaiming normal, fan_out), BN gamma 1 / beta 0,
    all biases 0; Linear weights keep PyTorch's default uniform(+-1/sqrt(fan_in)).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def check_choice(model: str, key: str, value, choices) -> None:
    if value not in choices:
        raise ModelConfigError(f"{model}: {key}={value!r} is not one of {list(choices)}")


def check_dropout(model: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ModelConfigError(f"{model}: dropout must be in [0, 1), got {p}")


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): the global average pooling before every classifier here."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def unit_strides(layers: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """(stage, stride) per unit: stride 2 in the first unit of every stage after the first."""
    for stage, n in enumerate(layers):
        for i in range(n):
            yield stage, 2 if stage > 0 and i == 0 else 1


def make_stem(stem: str, cin: int, cout: int, batchnorm: bool = True) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(conv, norm, pool): 3x3 conv for CIFAR; 7x7/2 conv and 3x3/2 max-pool for ImageNet."""
    check_choice("resnet", "stem", stem, STEMS)
    if stem == "cifar":
        return conv3x3(cin, cout, bias=not batchnorm), norm_or_identity(cout, batchnorm), nn.Identity()
    conv = nn.Conv2d(cin, cout, 7, stride=2, padding=3, bias=not batchnorm)
    return conv, norm_or_identity(cout, batchnorm), nn.MaxPool2d(3, stride=2, padding=1)


# ---------------------------------------------------------------------------------------------
# Shortcuts


class PadShortcut(nn.Module):
    """Option A: subsample by stride and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # pads dim 1 (channels) at the end


def make_shortcut(
    cin: int, cout: int, stride: int, shortcut: str | None, batchnorm: bool = True, bias: bool | None = None
) -> nn.Module | None:
    """Shortcut path for options A/B/C; None for a plain unit. The projection's conv has a bias
    only without BN unless `bias` says otherwise (pre-activation projections have neither)."""
    if shortcut is None:
        return None
    changes = stride != 1 or cin != cout
    if shortcut == "C" or (shortcut == "B" and changes):
        bias = not batchnorm if bias is None else bias
        return nn.Sequential(conv1x1(cin, cout, stride, bias=bias), norm_or_identity(cout, batchnorm))
    if shortcut == "A" and changes:
        return PadShortcut(cin, cout, stride)
    return nn.Identity()


# ---------------------------------------------------------------------------------------------
# Blocks: block(cin, planes, stride, shortcut, cardinality, base_width, batchnorm), output
# planes * expansion channels


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, (+ shortcut), ReLU: the unit of He 2015 Fig. 2."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        shortcut: str | None = "B",
        cardinality: int = 1,
        base_width: int = 64,
        batchnorm: bool = True,
    ):
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ModelConfigError(
                f"BasicBlock: cardinality/base_width are Bottleneck options, got {cardinality}x{base_width}d"
            )
        self.conv1 = conv3x3(cin, planes, stride, bias=not batchnorm)
        self.bn1 = norm_or_identity(planes, batchnorm)
        self.conv2 = conv3x3(planes, planes, bias=not batchnorm)
        self.bn2 = norm_or_identity(planes, batchnorm)
        self.shortcut = make_shortcut(cin, planes, stride, shortcut, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 (width) - 3x3 grouped (width, stride) - 1x1 (planes * 4), (+ shortcut), ReLU.

    width = planes * base_width / 64 * cardinality: ResNet-50 is 1 x 64d, ResNeXt C x d (Xie 2016).
    """

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        shortcut: str | None = "B",
        cardinality: int = 1,
        base_width: int = 64,
        batchnorm: bool = True,
    ):
        super().__init__()
        width = planes * base_width // 64 * cardinality
        cout = planes * self.expansion
        self.conv1 = conv1x1(cin, width, bias=not batchnorm)
        self.bn1 = norm_or_identity(width, batchnorm)
        self.conv2 = conv3x3(width, width, stride, groups=cardinality, bias=not batchnorm)
        self.bn2 = norm_or_identity(width, batchnorm)
        self.conv3 = conv1x1(width, cout, bias=not batchnorm)
        self.bn3 = norm_or_identity(cout, batchnorm)
        self.shortcut = make_shortcut(cin, cout, stride, shortcut, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class PreActUnit(nn.Module):
    """One residual unit drawn as He 2016 Fig. 4 (a)-(e); basic (two 3x3) or bottleneck (1x1-3x3-1x1).

    forward: [pre-activation] -> branch, (+ shortcut), [post-activation]. `preact_in=False` marks
    a unit whose pre-activation already ran (the first unit after conv1 for (d)/(e)). Where a
    bottleneck unit projects, the pre-activation runs before the split so the projection reads it.
    """

    def __init__(
        self,
        variant: str,
        cin: int,
        cout: int,
        stride: int = 1,
        bottleneck: bool = False,
        preact_in: bool = True,
    ):
        super().__init__()
        width = cout // 4 if bottleneck else cout
        shapes = [(cin, width, 1, 1), (width, width, 3, stride), (width, cout, 1, 1)] if bottleneck else [
            (cin, cout, 3, stride),
            (cout, cout, 3, 1),
        ]
        convs = [conv3x3(i, o, s) if k == 3 else conv1x1(i, o, s) for i, o, k, s in shapes]
        last = len(convs) - 1
        branch: list[nn.Module] = []
        pre: list[nn.Module] = []
        post: list[nn.Module] = []
        for i, conv in enumerate(convs):
            c_in, c_out = shapes[i][0], shapes[i][1]
            if variant == "e":  # BN-ReLU-conv
                (pre if i == 0 else branch).extend([nn.BatchNorm2d(c_in), nn.ReLU()])
                branch.append(conv)
            elif variant == "d":  # ReLU-conv-BN
                (pre if i == 0 else branch).append(nn.ReLU())
                branch.extend([conv, nn.BatchNorm2d(c_out)])
            else:  # conv-BN-ReLU, the variants differ only around the last conv
                branch.append(conv)
                if i < last:
                    branch.extend([nn.BatchNorm2d(c_out), nn.ReLU()])
                elif variant == "a":
                    branch.append(nn.BatchNorm2d(c_out))
                    post.append(nn.ReLU())
                elif variant == "b":
                    post.extend([nn.BatchNorm2d(c_out), nn.ReLU()])
                else:  # "c"
                    branch.extend([nn.BatchNorm2d(c_out), nn.ReLU()])

        # basic units: option A, as in He 2015's ResNet-110; bottleneck units: a 1x1 projection,
        # with a BN where the branch's last conv has one ((a), (c), (d))
        self.shortcut = make_shortcut(
            cin, cout, stride, "B" if bottleneck else "A", batchnorm=variant in ("a", "c", "d"), bias=False
        )
        changes = stride != 1 or cin != cout
        self.preact = nn.Sequential(*pre) if pre and preact_in else None
        self.shared_preact = self.preact is not None and changes and bottleneck
        self.branch = nn.Sequential(*branch)
        self.post = nn.Sequential(*post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact is None:
            out = x
        elif self.shared_preact:
            x = out = self.preact(x)
        else:
            out = self.preact(x)
        return self.post(self.branch(out) + self.shortcut(x))


# ---------------------------------------------------------------------------------------------
# Nets


class ResNet(nn.Module):
    """stem -> units (stage s: layers[s] blocks of planes[s]) -> global pool -> FC.

    `shortcut` None or `residual=False` builds the plain twin: the same convs, nothing added.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        planes: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        stem_width: int | None = None,
        shortcut: str = "B",
        residual: bool = True,
        batchnorm: bool = True,
        cardinality: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        check_choice("resnet" if residual else "plain", "shortcut", shortcut, SHORTCUTS)
        cin = stem_width or planes[0]
        self.conv1, self.bn1, self.pool = make_stem(stem, in_channels, cin, batchnorm)
        units = []
        for s, stride in unit_strides(layers):
            sc = shortcut if residual else None
            units.append(block(cin, planes[s], stride, sc, cardinality, base_width, batchnorm))
            cin = planes[s] * block.expansion
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(global_pool(self.units(x)))


class PreActNet(nn.Module):
    """stem -> pre-activation units (stage s: layers[s] units with widths[s] outputs) -> FC.

    For (d)/(e) the stem's BN-ReLU is the first unit's pre-activation ("the first activation
    right after conv1", He 2016 appendix), and an extra activation follows the last addition:
    BN-ReLU for (e), ReLU for (d).
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        unit: str = "e",
        bottleneck: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        stem_width: int = 16,
    ):
        super().__init__()
        check_choice("preresnet", "unit", unit, UNITS)
        self.unit = unit
        self.conv1, self.bn1, self.pool = make_stem(stem, in_channels, stem_width)
        units, cin = [], stem_width
        for k, (s, stride) in enumerate(unit_strides(layers)):
            units.append(PreActUnit(unit, cin, widths[s], stride, bottleneck, preact_in=k > 0))
            cin = widths[s]
        self.units = nn.Sequential(*units)
        self.final_bn = nn.BatchNorm2d(cin) if unit == "e" else nn.Identity()
        self.final_relu = unit in ("d", "e")
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.final_bn(self.units(x))
        if self.final_relu:
            x = F.relu(x)
        return self.fc(global_pool(x))
