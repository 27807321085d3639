"""Model zoo: registry behaviour, paper parameter/FLOP counts, unit layouts, forward/backward.

Parameter and FLOP counts come from `describe` (meta device, cached), so the whole zoo is
counted once per session. Forward/backward runs on real tensors, one thread, small batches.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import bench.models as bm
from bench import BenchError
from bench.models import UnknownModelError, create, describe, describe_all, list_models
from bench.models._registry import ModelConfigError
from bench.models.fitnet import HintRegressor, hint_loss
from bench.models.flops import count_flops
from bench.models.preact import PreActUnit

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# Paper numbers (3-channel input; 10 classes for CIFAR, 1000 for ImageNet)

# Counts printed as exact figures: within 1%.
PAPER_PARAMS_EXACT = {
    "resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6,
    "resnet110": 1.7e6, "resnet1202": 19.4e6,  # He 2015, Table 6
    **{f"preresnet110_{u}": 1.7e6 for u in "abcde"},  # 1603.05027 Table 4 (ResNet-110)
    **{f"preresnet164_{u}": 1.7e6 for u in "abcde"},  # 1603.05027 Table 4 (ResNet-164)
    "preresnet1001": 10.2e6,
    "resnet50": 25.5e6, "resnext50_32x4d": 25.0e6, "resnet101": 44.5e6,
    "resnext101_32x4d": 44.2e6, "resnext101_64x4d": 83.6e6,  # ResNeXt Tables 3/5
    "resnext29_8x64d": 34.4e6, "resnext29_16x64d": 68.1e6,  # ResNeXt Table 7
    "densenet40_k12": 1.0e6, "densenet100_k12": 7.0e6, "densenet100_k24": 27.2e6,
    "densenet_bc100_k12": 0.8e6, "densenet_bc250_k24": 15.3e6, "densenet_bc190_k40": 25.6e6,  # DenseNet Table 2
}
# Counts printed with "~": within 5%.
PAPER_PARAMS_APPROX = {
    "highway1": 236e3, "highway2": 2.3e6, "highway3": 1.4e6, "highway4": 1.25e6,  # Highway Table 1
    "fitnet_teacher": 9e6, "fitnet1": 250e3, "fitnet2": 862e3, "fitnet3": 1.6e6, "fitnet4": 2.5e6,  # FitNets Table 5
}

# Exact architectures whose count rounds to the paper's printed figure but misses it by > 1%:
# the paper prints two or three significant digits. Checked at printed precision below.
ROUNDING = {
    "resnet110": "1,727,962 params = 1.73M: rounds to the printed 1.7M but is 1.6% above 1.7e6 "
    "(He 2015 Table 6 gives two significant digits)",
    **{
        f"preresnet110_{u}": "ResNet-110 has 1,727,962 params (1.73M): rounds to the printed 1.7M "
        "but is 1.6% above 1.7e6"
        for u in "abcde"
    },
    "densenet40_k12": "1,019,722 params = 1.02M: rounds to the printed 1.0M, 2.0% above 1.0e6",
    "densenet_bc100_k12": "769,162 params = 0.77M: rounds to the printed 0.8M, 3.9% below 0.8e6",
}
NOT_MATCHED = {
    "preresnet1001": "10,327,706 params (1.25% above 10.2M). The conv + FC weights alone are "
    "10.18M, so the paper's figure appears to leave out the ~149K BatchNorm parameters; the "
    "layer list (333 bottleneck units, 16/32/64 widths, projections) is as the appendix states",
    "highway1": "218,328 params vs ~236K (-7.5%): the supplementary layer list could not be "
    "retrieved; this is a reconstruction (Fitnet-1 stages 16/32/64, one plain + two highway "
    "3x3 convs each, the released 19-layer net's head)",
    "fitnet3": "1,506,138 params vs ~1.6M (-5.9%) for Table 7's FitNet 3; its multiplications "
    "(324M) also miss Table 5's ~392M by 17%, while the same counting matches FitNet 1/2/4 and "
    "the Teacher to <2%: Table 7's FitNet 3 entry disagrees with Table 5",
}

PAPER_FLOPS = {"resnet50": 4.1e9, "resnet101": 7.8e9, "resnext50_32x4d": 4.2e9, "resnext101_32x4d": 8.0e9}
TWICE_RESNET101 = ("resnet200", "resnet101_1x100d", "resnext101_2x64d", "resnext101_64x4d")

REQUIRED = {
    "resnet_cifar": [f"{k}{d}" for k in ("resnet", "plain") for d in (20, 32, 44, 56, 110, 1202)],
    "preact": [f"preresnet{d}_{u}" for d in (110, 164) for u in "abcde"] + ["preresnet1001"],
    "resnext_imagenet": [
        "resnet50", "resnet101", "resnet200", "resnet101_1x100d", "resnext50_32x4d",
        "resnext101_32x4d", "resnext101_2x64d", "resnext101_64x4d",
    ],
    "resnext_cifar": ["resnext29_8x64d", "resnext29_16x64d"],
    "densenet": [
        "densenet40_k12", "densenet100_k12", "densenet100_k24",
        "densenet_bc100_k12", "densenet_bc250_k24", "densenet_bc190_k40",
    ],
    "highway": ["highway1", "highway2", "highway3", "highway4", "highway_fc", "plain_fc"]
    + [f"{k}_fc{d}" for k in ("highway", "plain") for d in (10, 20, 50, 100)],
    "fitnet": ["fitnet_teacher", "fitnet1", "fitnet2", "fitnet3", "fitnet4"],
}


def _params(name: str) -> int:
    return describe(name)["params"]


def _within(value: float, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


# ---------------------------------------------------------------------------------------------
# Registry


def test_required_names_registered_in_their_family():
    for family, names in REQUIRED.items():
        registered = list_models(family)
        missing = sorted(set(names) - set(registered))
        assert not missing, f"{family} lacks {missing}"
    assert set(REQUIRED) == set(bm.families()), "a family without required names here"


def _model_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(Path(bm.__file__).parent.glob("*.py"))}


def test_registry_lists_exactly_the_register_model_functions_in_the_source():
    decorated = set()
    for src in _model_sources().values():
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_model" for d in node.decorator_list
            ):
                decorated.add(node.name)
    assert sorted(decorated) == list_models()


def test_every_registered_name_appears_literally_in_the_source():
    # a grep for a model name must find its builder (no names made up in a loop)
    src = "\n".join(_model_sources().values())
    missing = [n for n in list_models() if not re.search(rf"^def {n}\(", src, re.M)]
    assert not missing


def test_describe_fields_and_paper_numbers_match_this_table():
    rows = describe_all()
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert set(r) >= {"name", "family", "input_size", "params", "flops", "paper_params", "paper_flops", "paper_ref"}
        assert r["input_size"] in (32, 224) and r["params"] > 0 and r["flops"] > 0
    for name, n in {**PAPER_PARAMS_EXACT, **PAPER_PARAMS_APPROX}.items():
        assert describe(name)["paper_params"] == int(n), name
    assert describe("resnet50")["input_size"] == 224 and describe("resnet20")["input_size"] == 32


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownModelError, match="did you mean 'resnet20'") as err:
        create("resnt20")
    assert isinstance(err.value, BenchError) and "\n" not in str(err.value)


def test_bad_kwargs_are_clear_errors():
    with pytest.raises(bm.ModelConfigError, match="does not take foo"):
        create("resnet20", foo=1)
    with pytest.raises(bm.ModelConfigError, match="shortcut"):
        create("resnet20", shortcut="D")
    with pytest.raises(bm.ModelConfigError, match="6n\\+2"):
        bm.resnet_cifar.CifarResNet(depth=21)
    with pytest.raises(bm.ModelConfigError, match="unit"):
        create("preresnet110_e", unit="f")
    with pytest.raises(bm.ModelConfigError):
        create("highway_fc", depth=0)
    assert issubclass(bm.ModelConfigError, BenchError) and issubclass(bm.ModelConfigError, ValueError)


def test_registered_name_cannot_be_built_as_another_variant():
    cases = [("preresnet110_a", "unit", "e"), ("preresnet164_e", "unit", "a"), ("preresnet1001", "unit", "a"),
             ("highway_fc10", "depth", 50), ("plain_fc100", "depth", 10)]
    for name, key, other in cases:
        with pytest.raises(bm.ModelConfigError, match=f"{name}.*{key}={other!r}") as err:
            create(name, **{key: other})
        assert "\n" not in str(err.value)
        assert key not in bm.model_options(name)
    # the name's own value is no override; ordinary options keep working
    m = create("preresnet110_a", unit="a", num_classes=5, in_channels=1)
    assert m.unit == "a" and m.fc.out_features == 5 and m.conv1.in_channels == 1


def test_flop_counting_leaves_nn_init_and_the_callers_model_untouched():
    from bench.models import flops

    inits = {n: getattr(nn.init, n) for n in dir(nn.init) if not n.startswith("__")}
    row = flops._describe.__wrapped__("resnet20")  # uncached: builds and counts now
    assert {n: getattr(nn.init, n) for n in dir(nn.init) if not n.startswith("__")} == inits
    assert row["flops"] == describe("resnet20")["flops"]
    for device in ("meta", "cpu"):
        m = create("resnet20").to(device)
        m.units[0].eval()  # mixed train/eval flags must come back as they were
        modes = [x.training for x in m.modules()]
        state = {k: v.clone() for k, v in m.state_dict().items()} if device == "cpu" else None
        assert flops.count_flops(m, 32) == row["flops"]
        assert not any("forward" in vars(x) for x in m.modules()), device
        assert [x.training for x in m.modules()] == modes
        if state is not None:  # eval while counting: BN running stats not updated
            assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_none_kwargs_mean_default_and_image_size_only_reaches_fc_nets():
    m = create("resnet20", shortcut=None, batchnorm=None, image_size=28)
    assert sum(p.numel() for p in m.parameters()) == _params("resnet20")
    fc = create("plain_fc", in_channels=1, image_size=28, depth=3)
    assert fc.first.linear.in_features == 28 * 28
    assert fc(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet20_grayscale_any_classes():
    m = create("resnet20", num_classes=7, in_channels=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)


# ---------------------------------------------------------------------------------------------
# Parameter and FLOP counts


def _marked(names, rel):
    out = []
    for n in names:
        reason = ROUNDING.get(n) if rel == 0.01 else None
        reason = NOT_MATCHED.get(n, reason)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(n, marks=marks, id=n))
    return out


@pytest.mark.parametrize("name", _marked(PAPER_PARAMS_EXACT, 0.01))
def test_params_match_paper_within_1pct(name):
    assert _within(_params(name), PAPER_PARAMS_EXACT[name], 0.01), (_params(name), PAPER_PARAMS_EXACT[name])


@pytest.mark.parametrize("name", _marked(PAPER_PARAMS_APPROX, 0.05))
def test_params_match_paper_within_5pct(name):
    assert _within(_params(name), PAPER_PARAMS_APPROX[name], 0.05), (_params(name), PAPER_PARAMS_APPROX[name])


@pytest.mark.parametrize("name", sorted(ROUNDING))
def test_params_agree_at_the_papers_printed_precision(name):
    # half a unit of the last printed digit: 1.7M -> +-0.05M, 0.8M -> +-0.05M
    assert abs(_params(name) - PAPER_PARAMS_EXACT[name]) <= 0.05e6


def test_preresnet1001_weights_without_batchnorm_match_paper():
    m = bm.preact.PreActResNet(1001, bottleneck=True, unit="e")
    bn = sum(p.numel() for mod in m.modules() if isinstance(mod, nn.BatchNorm2d) for p in mod.parameters())
    assert _within(_params("preresnet1001") - bn, 10.2e6, 0.01)


@pytest.mark.parametrize("name", sorted(PAPER_FLOPS))
def test_imagenet_flops_match_paper_within_5pct(name):
    assert _within(describe(name)["flops"], PAPER_FLOPS[name], 0.05), describe(name)["flops"]


@pytest.mark.parametrize("name", TWICE_RESNET101)
def test_2x_complexity_models_are_twice_resnet101(name):
    assert _within(describe(name)["flops"], 2 * describe("resnet101")["flops"], 0.10)


def test_fitnet_multiplications_match_table5():
    # Table 5 (~mult): same counting convention as its parameter counts (FC maxout 2 pieces)
    for name, mult in {"fitnet_teacher": 725e6, "fitnet1": 30e6, "fitnet2": 108e6, "fitnet4": 382e6}.items():
        assert _within(describe(name)["flops"], mult, 0.05), name


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet options


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_shortcut_options_and_plain_twins():
    a, b, c = (create("resnet20", shortcut=s) for s in "ABC")
    # A is parameter-free; B projects (1x1 conv + BN) at the two stage changes; C on all 9 units
    assert _count(a) == _count(create("plain20"))
    assert _count(b) - _count(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert sum(isinstance(u.shortcut, nn.Sequential) for u in c.units) == 9
    assert all(u.shortcut is None for u in create("plain20").units)


def test_batchnorm_switch_removes_bn_and_keeps_bias():
    m = create("resnet56", batchnorm=False)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert all(x.bias is not None for x in m.modules() if isinstance(x, nn.Conv2d))
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_he_init_fan_out():
    conv = create("resnet20").units[-1].conv2  # 64 -> 64, 3x3
    expected = (2.0 / (9 * 64)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05


# ---------------------------------------------------------------------------------------------
# Pre-activation units: the op order of Fig. 4, read from the traced graph


def _ops(unit: nn.Module) -> tuple[list[str], fx.Graph, dict]:
    gm = fx.symbolic_trace(unit)
    mods = dict(gm.named_modules())
    kinds, nodes = [], {}
    for node in gm.graph.nodes:
        kind = None
        if node.op == "call_module" and isinstance(mods[node.target], nn.Conv2d):
            kind = "conv"
        elif node.op == "call_module" and isinstance(mods[node.target], nn.BatchNorm2d):
            kind = "bn"
        elif node.op == "call_module" and isinstance(mods[node.target], nn.ReLU):
            kind = "relu"
        elif node.op == "call_function" and node.target in (F.relu, torch.relu):
            kind = "relu"
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            kind = "add"
        if kind:
            nodes[node] = kind
            kinds.append(kind)
    return kinds, gm.graph, nodes


BASIC = {
    "a": "conv bn relu conv bn add relu",
    "b": "conv bn relu conv add bn relu",
    "c": "conv bn relu conv bn relu add",
    "d": "relu conv bn relu conv bn add",
    "e": "bn relu conv bn relu conv add",
}
BOTTLENECK = {
    "a": "conv bn relu conv bn relu conv bn add relu",
    "b": "conv bn relu conv bn relu conv add bn relu",
    "c": "conv bn relu conv bn relu conv bn relu add",
    "d": "relu conv bn relu conv bn relu conv bn add",
    "e": "bn relu conv bn relu conv bn relu conv add",
}


@pytest.mark.parametrize("unit", "abcde")
def test_preact_unit_order_matches_fig4(unit):
    basic, _, _ = _ops(create(f"preresnet110_{unit}").units[5])
    bottleneck, _, _ = _ops(create(f"preresnet164_{unit}").units[5])
    assert " ".join(basic) == BASIC[unit]
    assert " ".join(bottleneck) == BOTTLENECK[unit]


@pytest.mark.parametrize("unit", "abcde")
def test_preact_identity_shortcut_adds_the_unit_input(unit):
    unit_mod = PreActUnit(unit, 16, 16)
    _, graph, nodes = _ops(unit_mod)
    (add,) = [n for n, k in nodes.items() if k == "add"]
    placeholder = next(n for n in graph.nodes if n.op == "placeholder")
    # nothing but nn.Identity on the shortcut path
    operands = [a.args[0] if a.op == "call_module" and isinstance(unit_mod.get_submodule(a.target), nn.Identity) else a for a in add.args]
    assert placeholder in operands


def test_preact_projection_reads_the_shared_preactivation():
    # appendix: "when pre-activation is used, these projection shortcuts are also with pre-activation"
    kinds, graph, nodes = _ops(PreActUnit("e", 64, 128, stride=2, bottleneck=True))
    assert kinds == "bn relu conv bn relu conv bn relu conv conv add".split()
    convs = [n for n, k in nodes.items() if k == "conv"]
    first_relu = next(n for n, k in nodes.items() if k == "relu")
    assert convs[0].args[0] is first_relu and convs[-1].args[0] is first_relu


def test_preact_first_and_last_units():
    # (e): BN-ReLU right after conv1, so the first unit starts with its conv; extra BN-ReLU at the end
    net = create("preresnet164_e")
    first, _, _ = _ops(net.units[0])
    assert first[0] == "conv"
    assert isinstance(net.final_bn, nn.BatchNorm2d) and net.final_relu
    orig = create("preresnet110_a")
    assert isinstance(orig.final_bn, nn.Identity) and not orig.final_relu


# ---------------------------------------------------------------------------------------------
# Highway and FitNets


def test_highway_gate_bias_init():
    # the authors' released CIFAR net initialises every transform-gate bias to -2
    for name in ("highway1", "highway2", "highway3", "highway4"):
        gates = [m.gate for m in create(name).modules() if isinstance(m, bm.highway.HighwayConv2d)]
        assert gates and all(torch.all(g.bias == -2.0) for g in gates), name
    fc = create("highway_fc", gate_bias=-4.0, depth=5)
    assert all(torch.all(h.gate.bias == -4.0) for h in fc.layers)


def test_highway_conv_layer_counts():
    # conv layers + 1x1 classifier conv + FC = 11, 19, 19, 32 layers
    for name, layers in {"highway1": 11, "highway2": 19, "highway3": 19, "highway4": 32}.items():
        m = create(name)
        plain = sum(isinstance(x, nn.Conv2d) for s in m.stages for x in s if isinstance(x, nn.Conv2d))
        hw = sum(isinstance(x, bm.highway.HighwayConv2d) for x in m.modules())
        assert plain + hw + 2 == layers, name


def test_fc_nets_depth_and_widths():
    # 1507.06228 Sec. 3.1: 50 highway blocks or 71 plain units per layer, ~5000 params per layer
    hw, plain = create("highway_fc50"), create("plain_fc50")
    assert len(hw.layers) == 49 and len(plain.layers) == 49
    assert hw.first.linear.out_features == 50 and plain.first.linear.out_features == 71
    per_layer = _count(hw.layers[0]), _count(plain.layers[0])
    assert all(4900 < p < 5200 for p in per_layer)


def test_fitnet_hints_and_regressor():
    x = torch.randn(2, 3, 32, 32)
    teacher = create("fitnet_teacher")
    logits, hint = teacher.forward_hint(x)
    assert logits.shape == (2, 10) and tuple(hint.shape[1:]) == teacher.hint_shape == (192, 7, 7)
    for name, guided in {"fitnet1": (32, 8, 8), "fitnet2": (80, 8, 8), "fitnet3": (80, 8, 8), "fitnet4": (80, 8, 8)}.items():
        student = create(name)
        logits, feat = student.forward_hint(x)
        assert tuple(feat.shape[1:]) == student.hint_shape == guided, name
        reg = HintRegressor(student.hint_shape, teacher.hint_shape)
        assert reg.kernel == (2, 2)  # N_g - k + 1 = N_h
        out = reg(feat)
        assert out.shape == hint.shape
        hint_loss(out, hint.detach()).backward()
        assert reg.conv.conv.weight.grad is not None


def test_fitnet_guided_layer_index_matches_table7():
    assert [create(n).hint_index for n in ("fitnet1", "fitnet2", "fitnet3", "fitnet4")] == [6, 6, 8, 11]
    assert create("fitnet_teacher").hint_index == 2


def test_densenet_dropout_option():
    m = create("densenet40_k12", dropout=0.2)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    a = m(x)
    assert not torch.allclose(a, m(x))  # dropout active in training
    m.eval()
    assert torch.allclose(m(x), m(x))


# ---------------------------------------------------------------------------------------------
# Forward and backward for every registered model

# Kept off the full input size to fit the 2-core test budget: the four 2x-complexity ImageNet
# nets run at 64x64 (each ~15 GMACs at 224), the deepest/widest CIFAR nets at 16x16. All are
# fully convolutional with global pooling, so a smaller map exercises every layer.
REDUCED = {
    "resnet200": 64, "resnet101_1x100d": 64, "resnext101_2x64d": 64, "resnext101_64x4d": 64,
    "resnet1202": 16, "plain1202": 16, "densenet_bc190_k40": 16, "densenet100_k24": 16,
    "densenet_bc250_k24": 16, "resnext29_16x64d": 16,
}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    size = REDUCED.get(name, describe(name)["input_size"])
    batch = 1 if describe(name)["input_size"] == 224 else 2
    model = create(name, num_classes=10)
    out = model(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, 10)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "some parameters got no gradient"
    if name != "plain1202":  # a 1202-layer plain BN net's gradients overflow at init: the degradation itself
        assert all(torch.isfinite(g).all() for g in grads)


def test_narrow_stand_ins_keep_resnet50_and_resnext50_at_equal_flops():
    # resnext_imagenet's reduced profile relies on it: a quarter of every channel count scales each conv by 1/16.
    full = [describe(n)["flops"] for n in ("resnet50", "resnext50_32x4d")]
    small = [count_flops(create(n, num_classes=10, in_channels=1, width=16, stem="cifar"), 28, 1)
             for n in ("resnet50", "resnext50_32x4d")]
    assert abs(small[1] / small[0] - 1) < 0.05 and abs(full[1] / full[0] - 1) < 0.05
    m = create("resnext50_32x4d", width=16)
    assert m.units[0].conv2.groups == 32 and m.units[0].conv2.out_channels == 32  # 32 groups of 1 channel
    with pytest.raises(ModelConfigError, match="fractional group width"):
        create("resnext50_32x4d", width=8)


# ---------------------------------------------------------------------------------------------
# Proxies: the same families at another depth or width (reduced profiles' stand-ins)


def test_generic_preresnet_and_resnext_rebuild_the_named_nets_at_their_depth():
    # The proxy builders are the named nets' own code: at the named depth they give the same net.
    same = [
        (create("preresnet", depth=110, unit="c"), create("preresnet110_c")),
        (create("preresnet", depth=164, unit="e", bottleneck=True), create("preresnet164_e")),
        (create("resnext", num_classes=1000, layers=[3, 4, 6, 3], cardinality=32, base_width=4),
         create("resnext50_32x4d", num_classes=1000)),
        (create("resnext", num_classes=1000, layers=[3, 4, 23, 3], base_width=100),
         create("resnet101_1x100d", num_classes=1000)),
        (create("resnext_cifar", blocks=3, cardinality=16, width=8), create("resnext29_16x64d", width=8)),
    ]
    for a, b in same:
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    with pytest.raises(ModelConfigError, match="unit must be one of a-e"):
        create("preresnet", depth=32, unit="f")
    with pytest.raises(ModelConfigError, match="6n\\+2"):
        create("preresnet", depth=33)
    with pytest.raises(ModelConfigError, match="layers must be 4 block counts"):
        create("resnext", layers=[1, 1, 1])
    with pytest.raises(ModelConfigError, match="blocks must be a positive integer"):
        create("resnext_cifar", blocks=0)


def test_scale_narrows_fitnets_teacher_and_highway_nets_at_the_same_depth():
    teacher = create("fitnet_teacher", scale=0.25)
    assert teacher.hint_shape == (48, 7, 7)
    full, quarter = create("fitnet4"), create("fitnet4", scale=0.25)
    assert len(full.layers) == len(quarter.layers) == 17
    assert quarter.hint_shape[0] == full.hint_shape[0] // 4
    hw, hw4 = create("highway2"), create("highway2", scale=0.25)
    assert sum(1 for _ in hw.modules()) == sum(1 for _ in hw4.modules())
    assert count_flops(hw4, 32) < count_flops(hw, 32) / 10
    # A half-width student still regresses to a quarter-width teacher's hint.
    student = create("fitnet1", scale=0.5)
    reg = HintRegressor(student.hint_shape, teacher.hint_shape)
    x = torch.randn(2, 3, 32, 32)
    assert reg(student.forward_hint(x)[1]).shape == teacher.forward_hint(x)[1].shape
    with pytest.raises(ModelConfigError, match="scale"):
        create("highway1", scale=0)
