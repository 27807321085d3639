"""The paper suites: they load, every profile expands, the cheap profiles stay cheap, and they say what the papers say.

Pure spec logic (no Ray, MLflow or training). Paper numbers are checked against the seed's tables and the papers'
own tables, copied here so the test does not depend on files outside the repository.
"""

from __future__ import annotations

import functools
import math
import re

import pytest

from bench.data import DATASETS
from bench.models import list_models, model_options
from bench.trials import waves
from helpers import expand, proto
from bench.spec import Protocol, SpecError, Suite, load_suite, resolve_protocol


SUITES = [
    "resnet_cifar", "degradation", "preact", "resnext_imagenet", "resnext_cifar", "densenet", "highway_fitnet",
    "highway_depth", "insights", "resnet_fig4",
]
IMAGENET_SUITES = {"resnext_imagenet", "resnet_fig4"}
# Suites whose giant nets leave no cheap cell pair: the smoke profile runs one net (no claim to exercise).
ONE_NET_SMOKE = {"resnext_imagenet", "resnext_cifar", "densenet"}


@functools.cache
def suite(name: str) -> Suite:
    return load_suite(name)


@functools.cache
def trials(name: str, profile: str) -> tuple:
    return tuple(expand(suite(name), profile))


# ---- every suite ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SUITES)
def test_suite_loads_and_every_profile_expands(name):
    s = suite(name)
    assert s.name == name
    assert {"paper", "reduced", "smoke"} <= set(s.profile_names())
    for prof in s.profile_names():
        ts = trials(name, prof)
        assert ts, f"{name}/{prof}: no trials"
        for t in ts:
            Protocol.model_validate(t.protocol)  # every resolved protocol is valid on its own
            assert t.dataset in DATASETS, f"{name}/{prof}: unknown dataset {t.dataset!r}"
        assert len({t.config_hash for t in ts}) == len(ts), f"{name}/{prof}: two trials share a config hash"


@pytest.mark.parametrize("name", SUITES)
def test_sources_cite_the_protocol(name):
    s = suite(name)
    for key in ("optimizer", "batch_size", "schedule"):
        assert s.sources.get(key, "").strip(), f"{name}: sources has no passage for {key!r}"
    assert all(isinstance(v, str) and v.strip() for v in s.sources.values())
    assert s.paper.arxiv and s.paper.ref


@pytest.mark.parametrize("name", SUITES)
def test_paper_profile_resources(name):
    res = suite(name).resources
    if name in IMAGENET_SUITES:
        assert res.gpus == 1 and res.workers == 8  # 8 GPUs per net, as in the paper (data-parallel)
    else:
        assert 0 < res.gpus <= 1
    assert 2 <= res.cpus <= 8  # per worker; resnext_imagenet has 8 data-parallel workers of 8 CPUs


@pytest.mark.parametrize("name", SUITES)
def test_smoke_profile_is_tiny(name):
    s = suite(name)
    p = s.profiles["smoke"]
    assert p.dataset == "synthetic"
    assert p.description
    seeds = p.seeds if isinstance(p.seeds, int) else len(p.seeds or s.seeds)
    assert 1 <= seeds <= 2
    if s.search is not None:
        assert p.search is not None and p.search.get("num_samples", s.search.num_samples) <= 2
    for t in trials(name, "smoke"):
        pr = proto(t)
        assert pr["iterations"] is None and pr["epochs"] in (1, 2), f"{t.cell}: {pr['epochs']} epochs"
        assert pr["train_subset"] is not None and pr["train_subset"] <= 128
        assert pr["test_subset"] is not None and pr["test_subset"] <= 64
        assert pr["batch_size"] == 32
        assert t.resources.model_dump() == {"cpus": 1, "gpus": 0, "workers": 1}


@pytest.mark.parametrize("name", SUITES)
def test_reduced_profile_fits_a_small_cpu(name):
    s = suite(name)
    p = s.profiles["reduced"]
    assert p.dataset in ("fashion-mnist", "fashion-mnist-28")  # the real data here; -28 is it unpadded
    # Every reduced profile says how long it takes here, and it fits the 45-minute budget per suite.
    minutes = [float(m) for m in re.findall(r"(\d+(?:\.\d+)?) min", p.description)]
    assert minutes and max(minutes) <= 45, f"{name}: reduced profile states no time, or more than 45 min"
    seeds = p.seeds if isinstance(p.seeds, int) else len(p.seeds or s.seeds)
    assert 2 <= seeds <= 4   # a spread to test claims on, and a budget (degradation's 4 decide its ResNet pair)
    for t in trials(name, "reduced"):
        pr = proto(t)
        assert t.resources.model_dump() == {"cpus": 1, "gpus": 0, "workers": 1}
        # Fashion-MNIST: 60,000 training images. At most 160,000 images trained per trial.
        n_train = min(pr["train_subset"] or 60_000, 60_000)
        steps = pr["iterations"] or pr["epochs"] * n_train / pr["batch_size"]
        assert steps * pr["batch_size"] <= 160_000
        assert pr["test_subset"] is None or pr["test_subset"] <= 10_000
        # A warm-up, where the paper has one, stays a small part of the run (He et al.: 400 of 64k iterations).
        assert pr["schedule"]["warmup"] is None or pr["schedule"]["warmup"]["iterations"] <= 0.1 * steps
        unknown = set(t.model_kwargs) - set(model_options(t.model))
        assert not unknown, f"{name}/{t.cell}: {t.model} does not take {sorted(unknown)}"
    # Each profile-wide kwarg reaches some cell (make_plan refuses one that reaches none).
    given = set().union(*(t.model_kwargs for t in trials(name, "reduced")))
    assert set(p.model_kwargs) <= given, f"{name}: profile model_kwargs {sorted(set(p.model_kwargs) - given)} unused"


def _milestone_fractions(pr: dict) -> list[float]:
    """Where the lr drops, as fractions of the run."""
    sch = pr["schedule"]
    if sch["unit"] == "fraction":
        return [round(m, 6) for m in sch["milestones"]]
    total = pr["iterations"] if sch["unit"] == "iterations" else pr["epochs"]
    assert total is not None, "milestone unit and run length disagree"
    return [round(m / total, 6) for m in sch["milestones"]]


@pytest.mark.parametrize("name", SUITES)
def test_reduced_keeps_the_schedule_shape(name):
    s = suite(name)
    for t in trials(name, "reduced"):
        paper = resolve_protocol(s, "paper", s.cell(t.cell)).model_dump()
        red = proto(t)
        if paper["schedule"]["kind"] != "multistep":
            assert red["schedule"]["kind"] == paper["schedule"]["kind"]
            continue
        if name == "highway_depth":
            # Exponential decay, one step per epoch, in the paper and in the reduced run alike.
            for pr in (paper, red):
                assert pr["schedule"]["unit"] == "epochs"
                assert pr["schedule"]["milestones"] == list(range(1, int(pr["epochs"])))
            continue
        assert red["schedule"]["unit"] == "fraction"
        assert _milestone_fractions(red) == _milestone_fractions(paper), t.cell
        assert red["schedule"]["gamma"] == paper["schedule"]["gamma"]


@pytest.mark.parametrize("name", SUITES)
def test_cheap_profiles_exercise_a_claim(name):
    s = suite(name)
    for prof in ("reduced",) if name in ONE_NET_SMOKE else ("reduced", "smoke"):
        cells = {t.cell for t in trials(name, prof)}
        usable = [c.id for c in s.claims if set(c.lhs) | set(c.rhs) <= cells]
        assert usable, f"{name}/{prof}: no claim has all its cells in {sorted(cells)}"


@pytest.mark.parametrize("name", SUITES)
def test_claims_reference_cells_and_notes_reference_claims(name):
    s = suite(name)
    cells = {c.id for c in s.cells}
    ids = [cl.id for cl in s.claims]
    assert len(ids) == len(set(ids)), f"{name}: duplicate claim ids"
    for cl in s.claims:
        assert set(cl.lhs) | set(cl.rhs) <= cells, f"{name}/{cl.id}: unknown cells"
        if cl.kind == "interaction":
            assert len(set(cl.lhs)) == 2 and len(set(cl.rhs)) == 2 and cl.op != "~=", f"{name}/{cl.id}"
    for pname, p in s.profiles.items():
        assert set(p.claim_notes) <= set(ids), f"{name}/{pname}: claim_notes for unknown claims"


@pytest.mark.parametrize("name", SUITES)
def test_models_are_registered_and_take_the_kwargs(name):
    s = suite(name)
    registered = set(list_models())
    missing = sorted({c.model for c in s.cells} - registered)
    assert not missing, f"{name}: models not registered: {', '.join(missing)}"
    for c in s.cells:
        unknown = set(c.kwargs) - set(model_options(c.model))
        assert not unknown, f"{name}/{c.id}: {c.model} does not take {sorted(unknown)}"
    if s.search is not None:
        for key in s.search.space:
            if key.startswith("model."):
                kw = key.removeprefix("model.")
                takers = [c.id for c in s.cells if kw in model_options(c.model)]
                assert takers, f"{name}: no cell's model takes searched kwarg {kw!r}"


def _paper_value(s: Suite, cid: str, metric: str) -> float | None:
    pv = s.cell(cid).paper
    return pv.value if pv is not None and pv.metric == metric else None


@pytest.mark.parametrize("name", SUITES)
def test_claims_hold_on_the_papers_own_numbers(name):
    """Where the paper prints numbers for both sides, its claim must hold on them (catches flipped operators)."""
    s = suite(name)
    for cl in s.claims:
        lhs = [_paper_value(s, c, cl.metric) for c in cl.lhs]
        rhs = [_paper_value(s, c, cl.metric) for c in cl.rhs]
        if None in lhs or None in rhs:
            continue
        if cl.kind == "interaction":   # (a - b) op (c - d)
            a, b = lhs[0] - lhs[1], rhs[0] - rhs[1]
        else:
            a, b = sum(lhs) / len(lhs), sum(rhs) / len(rhs)
        m = cl.margin * 100  # margins are fractions, paper values percent
        ok = {"<": a < b, ">": a > b, "<=": a <= b + m, ">=": a >= b - m, "~=": abs(a - b) <= m}[cl.op]
        assert ok, f"{name}/{cl.id}: paper has {a} {cl.op} {b} (margin {m}) false"


# ---- paper numbers -------------------------------------------------------------------------------------------------

# The seed's tables (He 2016 Table 2; Xie 2016 Table 4, top-1; Srivastava 2015 Table 1 as 100 - accuracy) and the
# papers' own tables for the other suites (He 2015 Table 6, Huang 2017 Table 2 C10+, Xie 2016 Tables 3 and 7).
PAPER_VALUES = {
    "preact": {
        "preresnet110_a": 6.61, "preresnet164_a": 5.93, "preresnet110_b": 8.17, "preresnet164_b": 6.50,
        "preresnet110_c": 7.84, "preresnet164_c": 6.14, "preresnet110_d": 6.71, "preresnet164_d": 5.91,
        "preresnet110_e": 6.37, "preresnet164_e": 5.46,
    },
    "resnext_imagenet": {
        "resnet101": 22.0, "resnext101_32x4d": 21.2, "resnet200": 21.7, "resnet101_1x100d": 21.3,
        "resnext101_2x64d": 20.7, "resnext101_64x4d": 20.4, "resnet50": 23.9, "resnext50_32x4d": 22.2,
    },
    "highway_fitnet": {
        "teacher": 100 - 90.18, "fitnet1": 100 - 89.01, "fitnet2": 100 - 91.06, "fitnet3": 100 - 91.10,
        "fitnet4": 100 - 91.61, "highway1": 100 - 89.18, "highway2": 100 - 92.24, "highway3": 100 - 90.68,
        "highway4": 100 - 90.34,
    },
    "resnet_cifar": {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.61,
                     "resnet1202": 7.93},
    "degradation": {"resnet20": 8.75, "resnet56": 6.97},
    "insights": {"resnet20": 8.75, "resnet32": 7.51, "resnet56": 6.97},
    "densenet": {"densenet40_k12": 5.24, "densenet100_k12": 4.10, "densenet100_k24": 3.74, "densenet_bc100_k12": 4.51,
                 "densenet_bc250_k24": 3.62, "densenet_bc190_k40": 3.46},
    "resnext_cifar": {"resnext29_8x64d": 3.65, "resnext29_16x64d": 3.58},
}
# Top-5 of the seed's Table 4 lives in the cell notes (a cell holds one paper number).
TOP5 = {"resnet101": "6.0", "resnext101_32x4d": "5.6", "resnet200": "5.8", "resnet101_1x100d": "5.7",
        "resnext101_2x64d": "5.5", "resnext101_64x4d": "5.3"}


@pytest.mark.parametrize("name", sorted(PAPER_VALUES))
def test_paper_values_match_the_tables(name):
    s = suite(name)
    expected = PAPER_VALUES[name]
    got = {c.id: c.paper.value for c in s.cells if c.paper is not None}
    assert got == pytest.approx(expected, abs=1e-9)
    for c in s.cells:
        if c.paper is not None:
            assert c.paper.unit == "percent" and c.paper.metric == "test_error"


def test_top5_errors_are_in_the_notes():
    s = suite("resnext_imagenet")
    for cid, top5 in TOP5.items():
        assert f"top-5 {top5}" in s.cell(cid).paper.note


def test_highway_table_is_converted_from_accuracy():
    s = suite("highway_fitnet")
    assert "100 - accuracy" in s.paper.note
    for c in s.cells:
        assert "accuracy ->" in c.paper.note and "% error" in c.paper.note, c.id


# ---- suite by suite ------------------------------------------------------------------------------------------------

def test_preact_paper_profile_is_ten_cells_by_five_seeds():
    s = suite("preact")
    ts = trials("preact", "paper")
    assert len(ts) == 50
    assert {t.cell for t in ts} == {f"preresnet{d}_{v}" for d in (110, 164) for v in "abcde"}
    assert s.layout.stat == "median" and all(c.paper.stat == "median" for c in s.cells)
    assert {c.col for c in s.cells} == {"ResNet-110", "ResNet-164"}
    assert [c.row for c in s.cells[::2]] == ["original Residual Unit", "BN after addition", "ReLU before addition",
                                             "ReLU-only pre-activation", "full pre-activation"]
    claims = {(tuple(c.lhs), c.op, tuple(c.rhs)) for c in s.claims}
    assert (("preresnet164_e",), "<", ("preresnet164_a",)) in claims
    assert (("preresnet110_b",), ">", ("preresnet110_a",)) in claims


def test_preact_warms_up_every_paper_cell_but_not_the_short_runs():
    for t in trials("preact", "paper"):
        assert proto(t)["schedule"]["warmup"] == {"lr": 0.01, "iterations": 400}
        assert proto(t)["iterations"] == 64000
        assert proto(t)["schedule"]["milestones"] == [32000, 48000]
    # The reduced run keeps the warm-up (the original units stall without it), scaled to 10% of its length.
    for t in trials("preact", "reduced"):
        pr = proto(t)
        assert pr["schedule"]["warmup"] == {"lr": 0.01, "iterations": pr["iterations"] // 10}
    assert all(proto(t)["schedule"]["warmup"] is None for t in trials("preact", "smoke"))


def test_resnet110_alone_gets_the_warmup():
    s = suite("resnet_cifar")
    by_cell = {t.cell: t for t in trials("resnet_cifar", "paper") if t.seed == 0}
    assert proto(by_cell["resnet110"])["schedule"]["warmup"] == {"lr": 0.01, "iterations": 400}
    for cid in ("resnet20", "resnet56", "resnet1202", "plain56"):
        assert proto(by_cell[cid])["schedule"]["warmup"] is None
    # A short run drops it even if ResNet-110 is asked for explicitly (400 steps would be the whole run).
    for prof in ("reduced", "smoke"):
        (t, *_) = expand(s, prof, cells=["resnet110"])
        assert proto(t)["schedule"]["warmup"] is None


def test_fitnet_students_follow_their_teacher():
    s = suite("highway_fitnet")
    students = [c for c in s.cells if c.method == "fitnet"]
    assert {c.id for c in students} == {"fitnet1", "fitnet2", "fitnet3", "fitnet4"}
    assert all(c.teacher == "teacher" and s.cell("teacher").method == "supervised" for c in students)
    for prof in s.profile_names():
        ts = list(trials("highway_fitnet", prof))
        pos = {(t.cell, t.seed): i for i, t in enumerate(ts)}
        for i, t in enumerate(ts):
            if t.method != "fitnet":
                assert t.teacher is None
                continue
            j = pos[("teacher", t.seed)]
            assert j < i, f"{prof}: {t.name} is expanded before its teacher"
            assert t.teacher == ts[j].config_hash
            d = proto(t)["distill"]
            assert d["temperature"] == 3.0 and d["lambda_start"] == 4.0 and d["lambda_end"] == 1.0
            assert 0 < d["hint_epochs"] < proto(t)["epochs"], "the hint stage must leave room for distillation"
        order = waves(ts)
        assert all(t.method != "fitnet" for t in order[0]) and all(t.method == "fitnet" for t in order[1])
    # Selecting a student pulls its teacher in.
    assert {t.cell for t in expand(s, "reduced", cells=["fitnet4"])} == {"teacher", "fitnet4"}


def test_highway_asterisk_nets_train_on_40k():
    s = suite("highway_fitnet")
    paper = {t.cell: proto(t)["train_subset"] for t in trials("highway_fitnet", "paper")}
    assert paper["highway3"] == paper["highway4"] == 40000
    assert paper["highway1"] is None and paper["highway2"] is None and paper["teacher"] is None
    # A profile's own subset would replace the cell's (smoke's does); the reduced profile keeps the asterisk:
    # Highway 4 trains on 40,000 of Fashion-MNIST's 60,000 images.
    (t, *_) = expand(s, "smoke", cells=["highway3"])
    assert proto(t)["train_subset"] == s.profiles["smoke"].protocol["train_subset"]
    by_cell = {t.cell: proto(t) for t in trials("highway_fitnet", "reduced")}
    assert by_cell["highway4"]["train_subset"] == 40000 and by_cell["highway2"]["train_subset"] is None


def test_highway_depth_searches_like_the_paper():
    s = suite("highway_depth")
    assert s.search is not None
    assert s.search.num_samples == 100 and s.search.metric == "train_loss" and s.search.mode == "min"
    lr = s.search.space["optimizer.lr"]
    assert lr.dist == "loguniform" and 0 < lr.low < lr.high
    gate = s.search.space["model.gate_bias"]
    assert gate.dist in ("uniform", "choice")
    lo, hi = (gate.low, gate.high) if gate.dist == "uniform" else (min(gate.values), max(gate.values))
    assert -10 <= lo < hi <= -1  # "the initial value for the transform gate bias (between -1 and -10)"
    assert s.profiles["smoke"].search == {"num_samples": 2}
    assert s.layout.metric == "train_loss" and s.layout.figure == "loss_curves"
    assert s.paper.dataset == "cifar100" and all(c.paper is None for c in s.cells)
    assert {c.id for c in s.cells} == {f"{k}_fc{d}" for k in ("plain", "highway") for d in (10, 20, 50, 100)}
    claims = {(tuple(c.lhs), c.op, tuple(c.rhs), c.metric) for c in s.claims}
    assert (("highway_fc100",), "<", ("plain_fc100",), "train_loss") in claims
    assert (("plain_fc100",), ">", ("plain_fc10",), "train_loss") in claims


def test_imagenet_smoke_runs_only_the_smallest_net():
    s = suite("resnext_imagenet")
    assert {t.cell for t in trials("resnext_imagenet", "smoke")} == {"resnet50"}
    paper = trials("resnext_imagenet", "paper")
    assert all(proto(t)["batch_size"] == 256 and proto(t)["epochs"] == 100 for t in paper)
    assert all(proto(t)["schedule"]["milestones"] == [30, 60, 90] for t in paper)
    assert s.dataset == "imagenet"


def test_insights_measure_convergence_in_iterations():
    s = suite("insights")
    iters = [c for c in s.claims if c.metric.startswith("iters_to:")]
    assert iters and all(c.op == "<" for c in iters)
    assert all(s.cell(c.lhs[0]).model.startswith("resnet") and s.cell(c.rhs[0]).model.startswith("plain")
               for c in iters)
    equiv = [c for c in s.claims if c.op == "~="]
    assert equiv and all(c.margin > 0 for c in equiv)
    kw = {c.id: c.kwargs for c in s.cells}
    assert kw["resnet20_nobn"] == {"batchnorm": False} and kw["resnet20_b"] == {"shortcut": "B"}
    assert kw["resnet20_c"] == {"shortcut": "C"}


def test_paper_protocols_are_the_papers():
    def proto(name):
        t = trials(name, "paper")[0]
        return t.protocol.model_dump()

    he = proto("resnet_cifar")
    assert (he["batch_size"], he["iterations"], he["optimizer"]["lr"], he["optimizer"]["weight_decay"]) == \
        (128, 64000, 0.1, 1e-4)
    dn = proto("densenet")
    assert (dn["batch_size"], dn["epochs"], dn["optimizer"]["nesterov"]) == (64, 300, True)
    assert dn["schedule"]["unit"] == "fraction" and dn["schedule"]["milestones"] == [0.5, 0.75]
    assert dn["dropout"] is None  # C10+: no dropout
    rx = proto("resnext_cifar")
    assert (rx["batch_size"], rx["epochs"], rx["optimizer"]["weight_decay"]) == (128, 300, 5e-4)
    assert rx["schedule"]["milestones"] == [150, 225] and rx["schedule"]["unit"] == "epochs"
    assert suite("resnext_cifar").seeds == list(range(10))  # "the average of 10 runs"
    assert suite("preact").seeds == list(range(5))
    assert not math.isnan(sum(c.paper.value for c in suite("densenet").cells))


def test_profile_model_kwargs_reach_the_models_that_take_them_and_typos_fail():
    s = suite("highway_fitnet")
    by_cell = {t.cell: t.model_kwargs for t in trials("highway_fitnet", "reduced")}
    assert by_cell["teacher"]["init"] == by_cell["fitnet1"]["init"] == "he" and "init" not in by_cell["highway1"]
    bad = s.model_copy(deep=True)
    bad.profiles["reduced"].model_kwargs = {"widht": 8}
    with pytest.raises(SpecError, match="widht taken by no model"):
        expand(bad, "reduced")


ABLATION_TABLES = ("preact", "resnext_imagenet", "resnext_cifar", "highway_fitnet")


@pytest.mark.parametrize("name", ABLATION_TABLES)
def test_the_ablation_tables_run_every_claim_until_decided_within_45_minutes(name):
    from bench.spec import parse_duration

    s = suite(name)
    p = s.profiles["reduced"]
    cells = {t.cell for t in trials(name, "reduced")}
    for cl in s.claims:
        assert set(cl.lhs) | set(cl.rhs) <= cells, f"{name}/{cl.id} is not run by the reduced profile"
    d = p.until_decided
    assert d is not None and d.max_seeds and d.budget and parse_duration(d.budget) <= 45 * 60
    assert p.seeds == 2     # the sequence's first look; seeds 0, 1, ... are the confirmatory ones
    # The recipe was chosen on pilot seeds (1000 and up), and the profile says which figures chose it.
    assert "pilot" in p.description and "1000" in p.description
