"""Suite validation, trial expansion, config hashes and lr schedules: pure logic, no Ray/MLflow."""

import sys
from pathlib import Path

import pytest
import yaml

from bench.trials import Trial, flatten, waves
from helpers import expand, proto
from bench.spec import SpecError, list_suites, load_suite, resolve_protocol
from bench.train.schedule import lr_at, milestone_steps, total_steps


REPO = Path(__file__).resolve().parent.parent

MINIMAL = {
    "name": "mini",
    "title": "t",
    "paper": {"citation": "c", "ref": "Table 1", "dataset": "cifar10"},
    "dataset": "synthetic",
    "cells": [{"id": "a", "model": "resnet20", "row": "r"}, {"id": "b", "model": "plain20", "row": "r"}],
    "protocol": {"iterations": 100, "schedule": {"milestones": [50, 75]}},
    "claims": [{"id": "c1", "text": "a < b", "metric": "train_error", "lhs": "a", "op": "<", "rhs": "b"}],
    "profiles": {"smoke": {"protocol": {"epochs": 1, "schedule": {"unit": "fraction"}}}},
}


def write(tmp_path, doc, name="mini.yaml"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("path", list_suites(), ids=lambda p: p.stem)
def test_shipped_suites_validate(path):
    s = load_suite(path)
    assert s.name == path.stem
    assert "smoke" in s.profiles, "every suite needs a smoke profile for the tests"
    for prof in s.profile_names():
        assert expand(s, prof)


def test_minimal_suite_loads(tmp_path):
    s = load_suite(write(tmp_path, MINIMAL))
    assert [c.id for c in s.cells] == ["a", "b"]
    assert s.claims[0].lhs == ["a"]


def _broken(mutate):
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("paper"), "paper"),
    (lambda d: d["protocol"].update(batch_size="big"), "protocol.batch_size"),
    (lambda d: d["protocol"].update(epochs=3), "protocol"),                       # epochs and iterations
    (lambda d: d["protocol"]["optimizer"].update({"lr": -1}) if "optimizer" in d["protocol"]
     else d["protocol"].update(optimizer={"lr": -1}), "protocol.optimizer.lr"),
    (lambda d: d["cells"][0].update(colour="red"), "cells.0.colour"),
    (lambda d: d["cells"].append({"id": "a", "model": "x", "row": "r"}), "duplicate cell ids"),
    (lambda d: d["claims"][0].update(rhs="zzz"), "unknown cell 'zzz'"),
    (lambda d: d["claims"][0].update(metric="accuracy_at_dawn"), "claims.0.metric"),
    (lambda d: d["claims"][0].update(metric="best_test_error"), "claims.0.metric"),   # test-set selection
    (lambda d: d["protocol"]["schedule"].update(milestones=[75, 50]), "milestones"),
    (lambda d: d["profiles"]["smoke"]["protocol"].update(batch_size=0), "profile smoke"),
    (lambda d: d["cells"][1].update(method="fitnet"), "needs a teacher"),
    (lambda d: d["profiles"]["smoke"].update(resources={"worker": 2}), "profiles.smoke.resources"),
    (lambda d: d["cells"][0].update(resources={"gpus": -1}), "cells.0.resources"),
])
def test_malformed_suites_name_the_field(tmp_path, mutate, field):
    with pytest.raises(SpecError) as e:
        load_suite(write(tmp_path, _broken(mutate)))
    msg = str(e.value)
    assert field in msg and "mini.yaml" in msg and "\n" not in msg


def _four_cells(d):
    d["cells"] += [{"id": "c", "model": "resnet32", "row": "s"}, {"id": "d", "model": "plain32", "row": "s"}]


def _interaction(**kw):
    def mutate(d):
        _four_cells(d)
        d["claims"].append({"id": "ix", "text": "t", "metric": "train_error", "kind": "interaction",
                            "lhs": ["a", "b"], "op": ">", "rhs": ["c", "d"], **kw})
    return mutate


@pytest.mark.parametrize("mutate, field", [
    (_interaction(lhs=["a", "b", "c"]), "exactly 2 distinct cells in lhs"),
    (_interaction(rhs=["c"]), "exactly 2 distinct cells in rhs"),
    (_interaction(rhs=["c", "c"]), "exactly 2 distinct cells in rhs"),
    (_interaction(op="~="), "not '~='"),
    (_interaction(rhs=["c", "zzz"]), "unknown cell 'zzz'"),
    (_interaction(kind="ratio"), "claims.1.kind"),
    (lambda d: d["claims"].append(dict(d["claims"][0])), "duplicate claim ids: c1"),
    (lambda d: d["claims"][0].update(lhs=[]), "at least one cell"),
    (lambda d: d["profiles"]["smoke"].update(claim_notes={"c2": "x"}), "claim_notes names unknown claim 'c2'"),
    (lambda d: d["claims"][0].update(paper_effect="big"), "claims.0.paper_effect"),
])
def test_malformed_claims_name_the_problem(tmp_path, mutate, field):
    with pytest.raises(SpecError) as e:
        load_suite(write(tmp_path, _broken(mutate)))
    assert field in str(e.value) and "\n" not in str(e.value)


def test_interaction_claim_and_claim_notes_load(tmp_path):
    def mutate(d):
        _interaction(op=">=", margin=0.01, paper_effect=0.2, paper_effect_note="Table 6",
                     if_fails="needs the paper schedule")(d)
        d["profiles"]["smoke"]["claim_notes"] = {"ix": "one epoch cannot show degradation"}
    s = load_suite(write(tmp_path, _broken(mutate)))
    ix = s.claims[1]
    assert (ix.kind, ix.lhs, ix.op, ix.rhs, ix.paper_effect) == ("interaction", ["a", "b"], ">=", ["c", "d"], 0.2)
    assert ix.if_fails == "needs the paper schedule" and ix.paper_effect_note == "Table 6"
    assert s.claims[0].kind == "order" and s.claims[0].paper_effect is None and s.claims[0].if_fails == ""
    assert s.profiles["smoke"].claim_notes == {"ix": "one epoch cannot show degradation"}


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"line \d+: invalid YAML"):
        load_suite(write(tmp_path, "name: x\ncells: [a, b\n"))
    with pytest.raises(SpecError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")


def _run_cli(tmp_path, monkeypatch, capsys, *args):
    """`bench run ...` through bench.cli.main, in this process (what the `bench` script calls)."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["run", *map(str, args)])
    return rc, capsys.readouterr().err


def test_cli_rejects_malformed_suite_without_creating_runs(tmp_path, monkeypatch, capsys):
    bad = write(tmp_path, _broken(lambda d: d["cells"][0].pop("model")))
    rc, err = _run_cli(tmp_path, monkeypatch, capsys, bad)
    assert rc == 2
    assert "cells.0.model" in err and err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".bench").exists()


def test_cli_rejects_unknown_model(tmp_path, monkeypatch, capsys):
    bad = write(tmp_path, _broken(lambda d: d["cells"][0].update(model="resnet21")))
    rc, err = _run_cli(tmp_path, monkeypatch, capsys, bad)
    assert rc == 2, err
    assert "resnet21" in err and "cell a" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_profile_overrides_and_cell_overrides(tmp_path):
    doc = _broken(lambda d: d["cells"][0].update(protocol={"schedule": {"warmup": {"lr": 0.01, "iterations": 4}}}))
    s = load_suite(write(tmp_path, doc))
    paper = resolve_protocol(s, "paper", s.cell("a"))
    assert paper.iterations == 100 and paper.schedule.warmup.lr == 0.01
    smoke = resolve_protocol(s, "smoke", s.cell("a"))
    assert smoke.epochs == 1 and smoke.iterations is None and smoke.schedule.unit == "fraction"
    with pytest.raises(SpecError, match="unknown profile 'fast'"):
        expand(s, "fast")


TRIAL = Trial.from_dict(dict(suite="mini", cell="a", seed=3, profile="smoke", dataset="synthetic", model="resnet20",
                             model_kwargs={"shortcut": "A"}, protocol={"iterations": 100, "optimizer": {"lr": 0.1}},
                             resources={"cpus": 1}))


def test_config_hash_is_stable_and_sensitive():
    # A golden value: changing it silently would make every earlier run look unfinished (or wrongly finished).
    # HASH_VERSION 2 (lr metric and FitNet hint-loss semantics) changed it from 0424d6f6f111d729.
    assert TRIAL.config_hash == "9ddf0a6357a1deaa"
    same = Trial.from_dict({**TRIAL.to_dict(), "profile": "other", "resources": {"cpus": 8, "gpus": 1}})
    assert same.config_hash == TRIAL.config_hash
    for change in ({"seed": 4}, {"dataset": "cifar10"}, {"model_kwargs": {"shortcut": "B"}},
                   {"protocol": {"iterations": 101, "optimizer": {"lr": 0.1}}}):
        assert Trial.from_dict({**TRIAL.to_dict(), **change}).config_hash != TRIAL.config_hash


def test_expand_seeds_and_teacher_order(tmp_path):
    doc = _broken(lambda d: d["cells"].insert(0, {"id": "s", "model": "resnet20", "row": "r",
                                                  "method": "fitnet", "teacher": "b"}))
    s = load_suite(write(tmp_path, doc))
    ts = expand(s, "paper", seeds=2)
    assert [t.name for t in ts] == ["a-s0", "a-s1", "b-s0", "b-s1", "s-s0", "s-s1"]
    student = ts[4]
    assert student.teacher == ts[2].config_hash
    w = waves(ts)
    assert [t.cell for t in w[1]] == ["s", "s"] and {t.cell for t in w[0]} == {"a", "b"}
    only = expand(s, "paper", cells=["s"])
    assert {t.cell for t in only} == {"s", "b"}


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}


def _proto(**kw):
    from bench.spec import Protocol
    return Protocol.model_validate(kw)


def test_lr_schedule_in_iterations_as_resnet():
    p = _proto(iterations=64000, schedule={"milestones": [32000, 48000]})
    assert [lr_at(s, p, 391) for s in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    warm = _proto(iterations=64000, schedule={"milestones": [32000, 48000], "warmup": {"lr": 0.01, "iterations": 400}})
    assert lr_at(399, warm, 391) == 0.01 and lr_at(400, warm, 391) == 0.1


def test_lr_schedule_fraction_and_epochs():
    p = _proto(epochs=4, schedule={"unit": "fraction", "milestones": [0.5, 0.75]})
    assert total_steps(p, 10) == 40 and milestone_steps(p, 10) == [20, 30]
    e = _proto(epochs=300, schedule={"unit": "epochs", "milestones": [150, 225]})
    assert milestone_steps(e, 391) == [150 * 391, 225 * 391]
    assert lr_at(150 * 391, e, 391) == pytest.approx(0.01)


def test_first_seed_numbers_pilot_seeds_apart_from_the_reported_ones(tmp_path):
    from bench.trials import make_plan

    s = load_suite(write(tmp_path, MINIMAL))
    pilot = make_plan(s, "smoke", seeds=2, first_seed=1000)
    assert pilot.seeds == [1000, 1001] and {t.seed for t in pilot.trials} == {1000, 1001}
    confirm = make_plan(s, "smoke", seeds=2)
    assert confirm.seeds == [0, 1]
    assert not {t.config_hash for t in pilot.trials} & {t.config_hash for t in confirm.trials}
    doc = _broken(lambda d: d["profiles"]["smoke"].update(seeds=[3, 5]))
    with pytest.raises(SpecError, match="lists its seeds: pass --seeds N"):
        make_plan(load_suite(write(tmp_path, doc)), "smoke", first_seed=1000)
    with pytest.raises(SpecError, match="--first-seed must be at least 0"):
        make_plan(s, "smoke", seeds=1, first_seed=-1)


def test_a_profile_proxy_replaces_the_cells_net_and_its_kwargs_win(tmp_path):
    from bench.trials import make_plan

    doc = _broken(lambda d: d["profiles"]["smoke"].update(
        model_kwargs={"width": 8},
        proxies={"a": {"model": "preresnet", "kwargs": {"depth": 8, "unit": "a", "width": 4}, "note": "shallower"}}))
    s = load_suite(write(tmp_path, doc))
    by_cell = {t.cell: t for t in make_plan(s, "smoke", seeds=1).trials}
    assert (by_cell["a"].model, by_cell["a"].model_kwargs) == ("preresnet", {"depth": 8, "unit": "a", "width": 4})
    assert (by_cell["b"].model, by_cell["b"].model_kwargs) == ("plain20", {"width": 8})
    assert by_cell["a"].config_hash != make_plan(load_suite(write(tmp_path, MINIMAL, "m2.yaml")), "smoke",
                                                 seeds=1).trials[0].config_hash
    bad = _broken(lambda d: d["profiles"]["smoke"].update(proxies={"zz": {"model": "resnet20", "note": "n"}}))
    with pytest.raises(SpecError, match="proxies names unknown cell 'zz'"):
        load_suite(write(tmp_path, bad))
    bad = _broken(lambda d: d["profiles"]["smoke"].update(proxies={"a": {"model": "resnet20"}}))
    with pytest.raises(SpecError, match="note"):
        load_suite(write(tmp_path, bad))
