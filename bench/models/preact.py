"""Pre-activation study (He et al. 2016, arXiv 1603.05027): residual units (a)-(e) of Fig. 4.

  (a) original           x -> conv-BN-ReLU-conv-BN -> (+x) -> ReLU
  (b) BN after addition  x -> conv-BN-ReLU-conv    -> (+x) -> BN-ReLU
  (c) ReLU before add    x -> conv-BN-ReLU-conv-BN-ReLU -> (+x)
  (d) ReLU-only pre-act  x -> ReLU-conv-BN-ReLU-conv-BN -> (+x)
  (e) full pre-act       x -> BN-ReLU-conv-BN-ReLU-conv -> (+x)

Bottleneck units (ResNet-164/1001) use the same orders with 1x1-3x3-1x1 convs.

CIFAR nets (appendix): conv1 3x3/16, three stages on 32/16/8 maps, global average pool, FC.
- Basic units (ResNet-110): 16/32/64 filters, 18 units per stage. Where the shape changes the
  shortcut is option A of He 2015 (zero-padded identity): Table 2's "original" ResNet-110 is [1]'s
  net (same 6.61%), and the appendix asks for projections only for the bottleneck nets.
- Bottleneck units (ResNet-164: 18, ResNet-1001: 111 units per stage): widths 16/32/64, outputs
  64/128/256. "When reducing the feature map size we use projection shortcuts for increasing
  dimensions, and when pre-activation is used, these projection shortcuts are also with
  pre-activation" (appendix): for (d)/(e) the unit's pre-activation is applied once, before the
  split, and the 1x1 projection reads the activated input.
- First/last units for (d)/(e) (appendix): "we adopt the first activation right after conv1 and
  before splitting into two paths" and "an extra activation right after [the last unit's]
  element-wise addition". Following Fig. 5's derivation from the original net, conv1 keeps its
  BN-ReLU for every variant; for (d)/(e) that is the first unit's pre-activation, so the first unit
  has none of its own. The extra activation is BN-ReLU for (e), ReLU for (d).
The stride-2 subsampling sits in the 3x3 conv of the bottleneck (the paper does not say which).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_choice, conv1x1, conv3x3, he_init
from ._registry import ModelConfigError, register_model
from .resnet_cifar import PadShortcut

REF = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv 1603.05027, Fig. 4 / Table 2 / appendix"
UNITS = ("a", "b", "c", "d", "e")


class PreActUnit(nn.Module):
    """One residual unit drawn as Fig. 4 (a)-(e); basic (two 3x3) or bottleneck (1x1-3x3-1x1).

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

        changes = stride != 1 or cin != cout
        if not changes:
            self.shortcut = nn.Identity()
        elif bottleneck:
            # 1x1 projection, with a BN where the branch's last conv has one ((a), (c), (d))
            bn = [nn.BatchNorm2d(cout)] if variant in ("a", "c", "d") else []
            self.shortcut = nn.Sequential(conv1x1(cin, cout, stride), *bn)
        else:
            self.shortcut = PadShortcut(cin, cout, stride)  # option A, as in He 2015's ResNet-110
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


class PreActResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        bottleneck: bool,
        unit: str = "e",
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        name = "preresnet"
        check_choice(name, "unit", unit, UNITS)
        per_unit = 9 if bottleneck else 6
        if depth < per_unit + 2 or (depth - 2) % per_unit:
            kind = "9n+2 (164, 1001)" if bottleneck else "6n+2 (110)"
            unit_kind = "bottleneck" if bottleneck else "basic"
            raise ModelConfigError(f"{name}: {unit_kind} depth must be {kind}, got {depth}")
        n = (depth - 2) // per_unit
        self.unit = unit
        widths = (64, 128, 256) if bottleneck else (16, 32, 64)
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        units, cin = [], 16
        for stage, w in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                first = stage == 0 and i == 0
                units.append(PreActUnit(unit, cin, w, stride, bottleneck, preact_in=not first))
                cin = w
        self.units = nn.Sequential(*units)
        # extra activation after the last addition for the pre-activation units
        self.final_bn = nn.BatchNorm2d(cin) if unit == "e" else nn.Identity()
        self.final_relu = unit in ("d", "e")
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W); for (d)/(e) this is unit 1's pre-activation
        x = self.units(x)
        x = self.final_bn(x)
        if self.final_relu:
            x = F.relu(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _build(depth, bottleneck, unit, num_classes, in_channels):
    return PreActResNet(depth, bottleneck, unit, num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "a"})
def preresnet110_a(num_classes=10, in_channels=3):
    return _build(110, False, "a", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "b"})
def preresnet110_b(num_classes=10, in_channels=3):
    return _build(110, False, "b", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "c"})
def preresnet110_c(num_classes=10, in_channels=3):
    return _build(110, False, "c", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "d"})
def preresnet110_d(num_classes=10, in_channels=3):
    return _build(110, False, "d", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet110_e(num_classes=10, in_channels=3):
    return _build(110, False, "e", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "a"})
def preresnet164_a(num_classes=10, in_channels=3):
    return _build(164, True, "a", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "b"})
def preresnet164_b(num_classes=10, in_channels=3):
    return _build(164, True, "b", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "c"})
def preresnet164_c(num_classes=10, in_channels=3):
    return _build(164, True, "c", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "d"})
def preresnet164_d(num_classes=10, in_channels=3):
    return _build(164, True, "d", num_classes, in_channels)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet164_e(num_classes=10, in_channels=3):
    return _build(164, True, "e", num_classes, in_channels)


@register_model(family="preact", paper_params=10.2e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet1001(num_classes=10, in_channels=3):
    return _build(1001, True, "e", num_classes, in_channels)
