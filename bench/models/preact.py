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

from ._layers import PreActNet, PreActUnit
from ._registry import ModelConfigError, register_model

__all__ = ["PreActResNet", "PreActUnit"]

REF = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv 1603.05027, Fig. 4 / Table 2 / appendix"


class PreActResNet(PreActNet):
    """CIFAR net of the appendix: depth 6n+2 (basic units) or 9n+2 (bottleneck units)."""

    def __init__(self, depth: int, bottleneck: bool, unit: str = "e", num_classes: int = 10, in_channels: int = 3,
                 width: int = 16):
        per_unit = 9 if bottleneck else 6
        if depth < per_unit + 2 or (depth - 2) % per_unit:
            kind = "9n+2 (164, 1001)" if bottleneck else "6n+2 (110)"
            unit_kind = "bottleneck" if bottleneck else "basic"
            raise ModelConfigError(f"preresnet: {unit_kind} depth must be {kind}, got {depth}")
        n = (depth - 2) // per_unit
        if width < 1:
            raise ModelConfigError(f"preresnet: width must be >= 1, got {width}")
        # `width` (default 16, the paper's) scales every stage; reduced profiles train narrower nets.
        widths = (4 * width, 8 * width, 16 * width) if bottleneck else (width, 2 * width, 4 * width)
        super().__init__((n, n, n), widths, unit, bottleneck, num_classes, in_channels, "cifar", stem_width=width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "a"})
def preresnet110_a(num_classes=10, in_channels=3, width=16):
    return PreActResNet(110, False, "a", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "b"})
def preresnet110_b(num_classes=10, in_channels=3, width=16):
    return PreActResNet(110, False, "b", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "c"})
def preresnet110_c(num_classes=10, in_channels=3, width=16):
    return PreActResNet(110, False, "c", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "d"})
def preresnet110_d(num_classes=10, in_channels=3, width=16):
    return PreActResNet(110, False, "d", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet110_e(num_classes=10, in_channels=3, width=16):
    return PreActResNet(110, False, "e", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "a"})
def preresnet164_a(num_classes=10, in_channels=3, width=16):
    return PreActResNet(164, True, "a", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "b"})
def preresnet164_b(num_classes=10, in_channels=3, width=16):
    return PreActResNet(164, True, "b", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "c"})
def preresnet164_c(num_classes=10, in_channels=3, width=16):
    return PreActResNet(164, True, "c", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "d"})
def preresnet164_d(num_classes=10, in_channels=3, width=16):
    return PreActResNet(164, True, "d", num_classes, in_channels, width)


@register_model(family="preact", paper_params=1.7e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet164_e(num_classes=10, in_channels=3, width=16):
    return PreActResNet(164, True, "e", num_classes, in_channels, width)


@register_model(family="preact", paper_params=10.2e6, paper_ref=REF, fixed={"unit": "e"})
def preresnet1001(num_classes=10, in_channels=3, width=16):
    return PreActResNet(1001, True, "e", num_classes, in_channels, width)


@register_model(family="preact", paper_ref=REF + "; any depth, for reduced profiles' proxies")
def preresnet(num_classes=10, in_channels=3, depth=20, unit="e", bottleneck=False, width=16):
    """Table 2's units at another depth: a proxy where 110/164 layers do not train within a profile's budget."""
    if unit not in ("a", "b", "c", "d", "e"):
        raise ModelConfigError(f"preresnet: unit must be one of a-e (Fig. 4), got {unit!r}")
    return PreActResNet(depth, bool(bottleneck), unit, num_classes, in_channels, width)
