"""The report layer: pure table/claim logic on DataFrames, then a full report from a real SQLite MLflow store."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import BenchError
from bench import track
from bench.report import (ReportError, build_report, cell_stats, check_claims, iters_to, judge, paper_table,
                          select_runs)
from helpers import expand
from bench.spec import load_suite


SUITE_YAML = """
name: tiny
title: "Tiny degradation table"
paper: {citation: "He et al. 2015", ref: "Table 9", dataset: cifar10, arxiv: "1512.03385"}
dataset: cifar10
layout: {rows: depth, cols: net, metric: test_error, stat: mean, figure: train_test_curves}
protocol: {iterations: 500}
seeds: 3
profiles:
  reduced: {dataset: fashion-mnist, description: "short runs on Fashion-MNIST"}
cells:
  - {id: P20, model: plain20, row: "20", col: plain, paper: {value: 9.0}}
  - {id: R20, model: resnet20, row: "20", col: resnet, paper: {value: 8.75}}
  - {id: P32, model: plain32, row: "32", col: plain, paper: {value: 10.0}}
  - {id: R32, model: resnet32, row: "32", col: resnet, paper: {value: 7.51}}
  - {id: R44, model: resnet44, row: "44", col: resnet, paper: {value: 7.17}}
claims:
  - {id: res_better, text: "ResNet-20 beats plain-20", metric: test_error, lhs: R20, op: "<", rhs: P20}
  - {id: reversed, text: "plain-20 beats ResNet-20", metric: test_error, lhs: P20, op: "<", rhs: R20}
  - {id: single, text: "ResNet-32 beats plain-20", metric: test_error, lhs: R32, op: "<", rhs: P20}
  - {id: equiv, text: "ResNet-20 ~ ResNet-44", metric: test_error, lhs: R20, op: "~=", rhs: R44, margin: 0.03}
  - {id: not_equiv, text: "ResNet-20 ~ plain-20", metric: test_error, lhs: R20, op: "~=", rhs: P20, margin: 0.01}
  - {id: faster, text: "ResNet-20 trains faster", metric: "iters_to:train_error<=0.3", lhs: R20, op: "<", rhs: P20}
"""

STEPS = [100, 200, 300, 400, 500]
# Final test errors (fractions) per (cell, seed) on the 'reduced' profile. P32 has no runs: missing.
FINAL = {("R20", 0): 0.100, ("R20", 1): 0.110, ("R20", 2): 0.120,
         ("P20", 0): 0.200, ("P20", 1): 0.210, ("P20", 2): 0.225,
         ("R32", 0): 0.150,
         ("R44", 0): 0.105, ("R44", 1): 0.110, ("R44", 2): 0.115}
# Train-error curves: R20 crosses 0.3 at steps 100, 200, 200; P20 at 400 for seed 0 and never for seeds 1-2.
TRAIN = {"R20": [[0.25, 0.2, 0.1, 0.05, 0.02], [0.5, 0.3, 0.2, 0.1, 0.05], [0.6, 0.28, 0.2, 0.1, 0.05]],
         "P20": [[0.8, 0.6, 0.5, 0.3, 0.3], [0.8, 0.7, 0.6, 0.5, 0.4], [0.9, 0.7, 0.6, 0.5, 0.35]]}


def _train_curve(cell: str, seed: int) -> list[float]:
    return TRAIN.get(cell, [[0.9, 0.5, 0.2, 0.1, 0.05]] * 3)[seed]


def _log_trial(uri, exp, parent, trial, final, status="FINISHED", train=None, tags=None):
    rid = track.create_trial_run(uri, exp, parent, trial)
    tr = track.TrialTracker(uri, rid)
    tr.set_tags({"device": "cpu (2 threads)", "torch": "2.13.0", "lightning": "2.6.6", "host": "box"})
    train = train or _train_curve(trial.cell, trial.seed)
    for i, step in enumerate(STEPS):
        test = final + 0.1 * (len(STEPS) - 1 - i)     # ends exactly at `final`
        tr.log_metrics({"train_error": train[i], "test_error": test, "train_loss": 2 * train[i] + 0.01}, step)
    tr.log_metrics({"wall_time_s": 12.0, "params": 1000}, STEPS[-1])
    tr.set_tags(tags or {})
    tr.finish(status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "tiny.yaml").write_text(SUITE_YAML)
    suite = load_suite(tmp / "tiny.yaml")
    uri = f"sqlite:///{tmp}/mlflow.db"
    exp = track.ensure_experiment(uri, suite.name)

    # An older `bench run` on the paper's dataset: two seeds of R20 and P20.
    paper = expand(suite, "paper", seeds=2, cells=["R20", "P20"])
    pid = track.start_parent(uri, exp, suite=suite.name, profile="paper", dataset="cifar10", argv=[],
                             n_trials=len(paper), n_skipped=0)
    for t in paper:
        _log_trial(uri, exp, pid, t, 0.07 if t.cell == "R20" else 0.09)
    time.sleep(0.01)

    # The newest `bench run`: the 'reduced' profile on fashion-mnist.
    trials = {(t.cell, t.seed): t for t in expand(suite, "reduced")}
    pid = track.start_parent(uri, exp, suite=suite.name, profile="reduced", dataset="fashion-mnist", argv=[],
                             n_trials=len(trials), n_skipped=0)
    # A re-run: the older finished run of (R20, 1) has a wrong value and must be superseded.
    _log_trial(uri, exp, pid, trials[("R20", 1)], 0.5)
    time.sleep(0.01)
    for key, final in FINAL.items():
        _log_trial(uri, exp, pid, trials[key], final)
    time.sleep(0.01)
    # The newest run of (R20, 0) failed: not counted.
    _log_trial(uri, exp, pid, trials[("R20", 0)], 0.9, status="FAILED")
    return suite, uri, tmp


@pytest.fixture(scope="module")
def report(store):
    suite, uri, tmp = store
    return build_report(suite, uri, out_dir=tmp / "out")


def test_table_layout_and_values(report):
    t = report.table
    assert list(t.index) == ["20", "32", "44"] and t.index.name == "depth"
    assert t.loc["20", "resnet mean"] == pytest.approx(11.0)      # percent; FAILED and superseded runs left out
    assert t.loc["20", "resnet sd"] == pytest.approx(1.0)
    assert t.loc["20", "resnet n"] == 3
    assert t.loc["20", "resnet paper"] == pytest.approx(8.75)
    assert math.isnan(t.loc["20", "resnet delta"])   # fashion-mnist runs: no delta against a CIFAR number
    assert t.loc["20", "plain mean"] == pytest.approx(np.mean([20.0, 21.0, 22.5]))
    assert t.loc["32", "resnet n"] == 1 and math.isnan(t.loc["32", "resnet sd"])
    assert t.loc["32", "plain n"] == 0 and math.isnan(t.loc["32", "plain mean"])   # missing cell
    assert pd.isna(t.loc["44", "plain n"])                                               # no cell at that position
    md = report.markdown
    assert "11.00 ± 1.00 (3)" in md and "+2.25" not in md and "Δ is not computed" in md
    assert "**Missing** (no finished runs, shown as —): P32" in md


def test_claim_verdicts(report):
    v = {c["id"]: c for c in report.claims}
    assert v["res_better"]["verdict"] == "holds" and v["res_better"]["p_value"] < 0.05
    assert v["reversed"]["verdict"] == "fails"
    assert v["single"]["verdict"] == "inconclusive" and "n<2: no test possible" in v["single"]["detail"]
    assert v["equiv"]["verdict"] == "holds"
    assert v["not_equiv"]["verdict"] == "fails"
    assert (v["res_better"]["n_lhs"], v["res_better"]["n_rhs"]) == (3, 3)
    assert v["res_better"]["lhs_mean"] == pytest.approx(0.11)
    for c in report.claims:
        assert c["verdict"] != "holds" or c["p_value"] < 0.05


def test_iters_to_from_curves(report):
    c = next(c for c in report.claims if c["id"] == "faster")
    assert c["lhs_mean"] == pytest.approx(np.mean([100, 200, 200]))
    # P20 seeds 1 and 2 never reach 0.3: censored at last step + 1.
    assert c["rhs_mean"] == pytest.approx(np.mean([400, 501, 501]))
    assert "2 censored" in c["detail"]
    assert c["verdict"] == "holds"


def test_header_warning_and_files(report, store):
    suite, uri, tmp = store
    md = report.markdown
    assert "WARNING" in md and "Runs are on fashion-mnist; the paper's numbers are on cifar10" in md
    assert "ours (fashion-mnist, reduced)" in md
    for s in ("He et al. 2015", "Table 9", "cpu (2 threads)", "2.13.0", "0, 1, 2", "Welch"):
        assert s in md
    names = sorted(p.name for p in report.files)
    assert names == sorted(["report.md", "report.html", "table.csv", "runs.parquet", "curves.png"])
    assert all(p.is_file() and p.stat().st_size > 0 for p in report.files)
    assert not list(report.out_dir.glob(".report-*"))          # staging dir cleaned up
    assert "data:image/png;base64," in (report.out_dir / "report.html").read_text()
    runs = pq.read_table(report.out_dir / "runs.parquet").to_pandas()
    assert len(runs) == 10 and set(runs["status"]) == {"FINISHED"}
    assert runs.set_index(["tags.bench.cell", "tags.bench.seed"]).loc[("R20", "1"), "metrics.test_error"] == 0.11
    csv = pd.read_csv(report.out_dir / "table.csv", index_col=0)
    assert csv.loc[20, "resnet mean"] == pytest.approx(11.0)
    assert "newest (for a search" in md and "FAILED" in md


def test_paper_dataset_has_no_warning(store):
    suite, uri, tmp = store
    r = build_report(suite, uri, out_dir=tmp / "paper", profile="paper")
    assert "WARNING" not in r.markdown and "ours (cifar10, paper)" in r.markdown
    assert r.table.loc["20", "resnet mean"] == pytest.approx(7.0)
    assert r.table.loc["20", "resnet n"] == 2
    assert r.table.loc["20", "resnet delta"] == pytest.approx(7.0 - 8.75)   # same dataset: Δ is meaningful
    assert "-1.75" in r.markdown and "Δ is not computed" not in r.markdown


def test_no_runs_is_a_report_error(store):
    suite, uri, tmp = store
    with pytest.raises(ReportError, match="no finished runs of suite tiny .*run 'bench run tiny' first"):
        build_report(suite, uri, out_dir=tmp / "none", profile="reduced", dataset="cifar100")
    other = suite.model_copy(update={"name": "absent"})
    with pytest.raises(ReportError, match="no finished runs of suite absent"):
        build_report(other, uri, out_dir=tmp / "none")
    assert not (tmp / "none").exists()
    assert issubclass(ReportError, BenchError)


def test_crash_leaves_no_partial_report(store, monkeypatch):
    suite, uri, tmp = store
    import bench.report.build as build

    def boom(*a, **k):
        raise RuntimeError("plot failed")
    monkeypatch.setattr(build, "plot_curves", boom)
    with pytest.raises(RuntimeError):
        build_report(suite, uri, out_dir=tmp / "crash")
    assert list((tmp / "crash").iterdir()) == []


# ---- pure functions ------------------------------------------------------------------------------------------------

def _runs(rows):
    return pd.DataFrame([{"run_id": f"r{i}", "status": st, "start_time": pd.Timestamp(1_700_000_000 + i, unit="s"),
                          "tags.bench.profile": "p", "tags.bench.dataset": "d", "tags.bench.cell": c,
                          "tags.bench.seed": str(s), "metrics.test_error": v}
                         for i, (c, s, v, st) in enumerate(rows)])


def test_select_runs_newest_finished():
    df = _runs([("A", 0, 0.5, "FINISHED"), ("A", 0, 0.1, "FINISHED"), ("A", 0, 0.9, "FAILED"),
                ("A", 1, 0.2, "RUNNING"), ("B", 0, 0.3, "FINISHED")])
    sel = select_runs(df, "p", "d", cells=["A", "B"])
    assert list(sel["run_id"]) == ["r1", "r4"]
    assert select_runs(df, "p", "other").empty


def test_judge_operators():
    a, b = np.array([0.10, 0.11, 0.12]), np.array([0.20, 0.21, 0.22])
    assert judge(a, b, "<", 0, 0.05)[0] == "holds"
    assert judge(a, b, ">", 0, 0.05)[0] == "fails"
    assert judge(a, b, ">=", 0.2, 0.05)[0] == "holds"        # a is no more than 0.2 worse... i.e. a >= b - 0.2
    assert judge(a, b, "<=", 0, 0.05)[0] == "holds"
    assert judge(a, a + 0.001, "~=", 0.0, 0.05)[0] != "holds"  # margin 0: equivalence can't be shown
    assert judge(a[:1], b, "<", 0, 0.05) == ("inconclusive", judge(a[:1], b, "<", 0, 0.05)[1], "n<2: no test possible")
    # Both sides constant: the exact rank test decides; 3 vs 3 can't reach p < 0.05.
    v, p, test = judge(np.ones(3), np.full(3, 2.0), "<", 0, 0.05)
    assert v == "inconclusive" and p == pytest.approx(0.05) and "Mann-Whitney" in test
    assert judge(np.ones(5), np.full(5, 2.0), "<", 0, 0.05)[0] == "holds"


def test_iters_to_censoring():
    curves = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "metric": "train_error", "step": [10, 20, 30] * 2,
                           "value": [0.5, 0.3, 0.1, 0.9, 0.8, 0.7]})
    it = iters_to(curves, "train_error", 0.3)
    assert it.loc["a", "value"] == 20 and not it.loc["a", "censored"]
    assert it.loc["b", "value"] == 31 and it.loc["b", "censored"]


def test_median_layout(store):
    suite = store[0].model_copy(deep=True)
    suite.layout.stat = "median"
    df = _runs([("R20", s, v, "FINISHED") for s, v in enumerate([0.1, 0.3, 0.2])])
    df["tags.bench.cell"] = "R20"
    sel = select_runs(df, "p", "d", cells=[c.id for c in suite.cells])
    st = cell_stats(suite, sel)
    r = st.set_index("cell").loc["R20"]
    assert (r["median"], r["min"], r["max"], r["delta"]) == pytest.approx((20.0, 10.0, 30.0, 20.0 - 8.75))
    from bench.report.tables import fmt_cell
    assert fmt_cell(r, "test_error", "median") == "20.00 [10.00–30.00] (3)"
    assert paper_table(suite, sel).loc["20", "resnet n"] == 3
    assert check_claims(suite, sel)[0]["verdict"] == "inconclusive"   # no P20 runs


def test_search_keeps_best_sample():
    df = _runs([("A", 0, 0.30, "FINISHED"), ("A", 0, 0.10, "FINISHED"), ("A", 0, 0.20, "FINISHED")])
    df["tags.bench.config_hash"] = ["h1", "h2", "h3"]
    assert select_runs(df, "p", "d", cells=["A"])["run_id"].tolist() == ["r2"]             # newest
    assert select_runs(df, "p", "d", cells=["A"], best_of=("test_error", "min"))["run_id"].tolist() == ["r1"]


def test_loss_plot_and_iters_to_table(store, tmp_path):
    from bench.report import plot_curves
    from bench.report.tables import fmt_cell
    suite = store[0].model_copy(deep=True)
    suite.layout.figure = "loss_curves"
    suite.layout.metric = "iters_to:train_error<=0.3"
    df = _runs([("P20", s, 0.2, "FINISHED") for s in range(2)])
    df["tags.bench.cell"] = "P20"
    sel = select_runs(df, "p", "d", cells=[c.id for c in suite.cells])
    curves = pd.DataFrame({"run_id": ["r0"] * 2 + ["r1"] * 2, "metric": "train_error", "step": [10, 20] * 2,
                           "value": [0.5, 0.2, 0.6, 0.4]})
    curves = pd.concat([curves, curves.assign(metric="train_loss")])
    r = cell_stats(suite, sel, curves).set_index("cell").loc["P20"]
    assert (r["n"], r["mean"], r["censored"]) == (2, 20.5, 1)            # r1 never reaches 0.3: 20 + 1
    assert fmt_cell(r, suite.layout.metric, "mean") == "20 ± 1 (2, 1 censored)"
    out = plot_curves(suite, sel, curves, tmp_path / "c.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


# ---- interaction claims, effect intervals, power, explanations ------------------------------------------------------

def _stat_suite(claims, cells=("P56", "P20", "R56", "R20"), profiles=None, paper=None, paper_metric="train_error"):
    from bench.spec import Suite
    return Suite.model_validate({
        "name": "stat", "title": "t", "paper": {"citation": "c", "ref": "Table 1", "dataset": "cifar10"},
        "dataset": "cifar10", "protocol": {"iterations": 10}, "profiles": profiles or {},
        "cells": [{"id": c, "model": "resnet20", "row": c, **({"paper": {"value": paper[c], "metric": paper_metric}} if paper else {})}
                  for c in cells],
        "claims": claims})


def _seed_runs(values: dict[str, list[float]], metric="train_error") -> pd.DataFrame:
    """values: cell -> per-seed values (None: no run for that seed)."""
    rows = [(c, s, v) for c, vs in values.items() for s, v in enumerate(vs) if v is not None]
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(len(rows))], "cell": [r[0] for r in rows],
                         "seed": [r[1] for r in rows], f"metrics.{metric}": [r[2] for r in rows]})


IX = {"id": "ix", "text": "shortcuts remove the degradation", "kind": "interaction", "metric": "train_error",
      "lhs": ["P56", "P20"], "op": ">", "rhs": ["R56", "R20"]}
# A shared per-seed offset (a good or bad seed moves all cells): pairing by seed removes it.
_OFF = np.array([0.00, 0.05, -0.04, 0.02])
_IXDATA = {"P56": list(0.30 + _OFF + [0.010, 0.000, 0.020, 0.015]), "P20": list(0.10 + _OFF),
           "R56": list(0.08 + _OFF + [0.000, 0.010, -0.005, 0.004]), "R20": list(0.09 + _OFF)}


def test_interaction_claim_holds_fails_inconclusive():
    from scipy import stats
    runs = _seed_runs(_IXDATA)
    v = check_claims(_stat_suite([IX]), runs)[0]
    d = [(a - b) - (c - e) for a, b, c, e in zip(*(_IXDATA[k] for k in ("P56", "P20", "R56", "R20")))]
    assert v["verdict"] == "holds" and v["kind"] == "interaction" and v["seeds"] == [0, 1, 2, 3]
    assert v["p_value"] == pytest.approx(stats.ttest_1samp(d, 0, alternative="greater").pvalue)
    assert v["lhs_mean"] == pytest.approx(0.21125) and v["rhs_mean"] == pytest.approx(-0.00775)
    assert v["effect"] == pytest.approx(np.mean(d))
    from bench.report.render import _claim_row
    assert _claim_row(v)[3] == f"(P56 − P20): {v['lhs_mean'] * 100:.2f} > (R56 − R20): {v['rhs_mean'] * 100:.2f} (n=4 seeds)"
    assert _claim_row(v)[3].startswith("(P56 − P20): 21.1")

    rev = check_claims(_stat_suite([{**IX, "op": "<"}]), runs)[0]
    assert rev["verdict"] == "fails" and "opposite direction significant" in rev["detail"]
    # '<=' with a margin larger than the effect: d < +margin holds.
    assert check_claims(_stat_suite([{**IX, "op": "<=", "margin": 0.5}]), runs)[0]["verdict"] == "holds"

    # Only seed 0 has all four cells: no test; the other seeds are named as left out.
    one = _seed_runs({**_IXDATA, "R20": [0.09, None, None, None]})
    r = check_claims(_stat_suite([IX]), one)[0]
    assert r["verdict"] == "inconclusive" and "fewer than 2 seeds with all four cells" in r["detail"]
    assert "seeds 1, 2, 3 left out" in r["detail"] and r["n_lhs"] == 1
    # Noise larger than the interaction: inconclusive, not fails.
    rng = np.random.default_rng(0)
    noisy = {k: list(np.asarray(v) + rng.normal(0, 0.3, 4)) for k, v in _IXDATA.items()}
    noisy["P56"] = list(np.asarray(noisy["P56"]) - 0.2)
    assert check_claims(_stat_suite([IX]), _seed_runs(noisy))[0]["verdict"] == "inconclusive"


def test_interaction_pairs_by_seed_not_by_position():
    # Same values, seeds listed in another order per cell: the differences must still pair seed with seed.
    runs = _seed_runs(_IXDATA).sample(frac=1, random_state=1).reset_index(drop=True)
    v = check_claims(_stat_suite([IX]), runs)[0]
    assert v["verdict"] == "holds" and v["effect"] == pytest.approx(0.219)


def test_effect_ci_is_welch_satterthwaite():
    from scipy import stats
    from bench.report.claims import effect_ci
    rng = np.random.default_rng(3)
    x, y = 0.20 + rng.normal(0, 0.01, 5), 0.15 + rng.normal(0, 0.03, 8)   # true difference 0.05
    eff, lo, hi, method = effect_ci(x, y)
    assert method == "Welch–Satterthwaite" and lo < 0.05 < hi and eff == pytest.approx(x.mean() - y.mean())
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    # By hand: unequal variances, Satterthwaite's degrees of freedom.
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(vx + vy)
    assert (lo, hi) == pytest.approx((eff - half, eff + half))
    d = np.array([0.1, 0.3, 0.2])
    eff, lo, hi, method = effect_ci(d)
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (eff, lo, hi) == pytest.approx((0.2, ci.low, ci.high)) and method == "one-sample t"
    assert math.isnan(effect_ci(x[:1], y)[1]) and math.isnan(effect_ci(np.ones(3), np.zeros(3))[1])


def test_claim_record_carries_effect_and_ci():
    runs = _seed_runs({"P56": [0.30, 0.32, 0.31], "P20": [0.20, 0.26, 0.21]})
    cl = {"id": "o", "text": "t", "metric": "train_error", "lhs": "P56", "op": ">", "rhs": "P20"}
    v = check_claims(_stat_suite([cl]), runs)[0]
    from scipy import stats
    ci = stats.ttest_ind([0.30, 0.32, 0.31], [0.20, 0.26, 0.21], equal_var=False).confidence_interval(0.95)
    assert (v["effect"], v["ci_low"], v["ci_high"]) == pytest.approx((0.0867, ci.low, ci.high), abs=1e-4)
    from bench.report.render import _effect_cell, claim_lines
    assert _effect_cell(v) == f"+8.67 [+{ci.low * 100:.2f}, +{ci.high * 100:.2f}] pp"
    assert claim_lines(v)[0].startswith("effect (P56 − P20, difference of means): +8.67 pp, 95% CI [")


def test_power_seeds_match_statsmodels():
    from statsmodels.stats.power import TTestIndPower, TTestPower
    from bench.report.claims import pooled_sd
    x, y = [0.100, 0.130, 0.115], [0.120, 0.105, 0.140]
    runs = _seed_runs({"P56": x, "P20": y})
    cl = {"id": "o", "text": "t", "metric": "train_error", "lhs": "P56", "op": "<", "rhs": "P20",
          "paper_effect": -0.0178, "paper_effect_note": "Table 6: 1.78 points"}
    v = check_claims(_stat_suite([cl]), runs)[0]
    assert v["verdict"] == "inconclusive"
    sd = pooled_sd(np.array(x), np.array(y))
    want = TTestIndPower().solve_power(effect_size=-0.0178 / sd, nobs1=None, alpha=0.05, power=0.8, ratio=1.0,
                                       alternative="smaller")
    assert v["power_seeds"] == math.ceil(want) and v["power_seeds"] > 3
    assert v["power_basis"] == "the paper's effect (Table 6: 1.78 points)"
    from bench.report.render import claim_lines
    line = next(s for s in claim_lines(v) if "80% power" in s)
    assert line.startswith(f"seeds per cell for 80% power: {math.ceil(want)}, to detect -1.78 pp")
    assert "more trials" not in line                  # no trial times logged: no cost estimate
    # With the trials' wall times: the seeds each cell lacks, at that cell's mean trial time.
    timed = runs.assign(**{"metrics.wall_time_s": np.where(runs["cell"] == "P56", 100.0, 40.0)})
    tv = check_claims(_stat_suite([cl]), timed)[0]
    more = math.ceil(want) - 3
    assert tv["power_more_trials"] == 2 * more and tv["power_more_s"] == pytest.approx(more * 140.0)
    assert "more trials" in " ".join(claim_lines(tv))
    big = check_claims(_stat_suite([{**cl, "paper_effect": -0.5}]), timed)[0]
    assert big["verdict"] == "inconclusive" and big["power_seeds"] <= 3 and big["power_more_trials"] == 0
    assert "already run here" in " ".join(claim_lines(big))

    # No paper effect and no paper values: the observed effect, said so.
    obs = check_claims(_stat_suite([{**cl, "paper_effect": None}]), runs)[0]
    es = (np.mean(x) - np.mean(y)) / sd
    want = TTestIndPower().solve_power(effect_size=es, nobs1=None, alpha=0.05, power=0.8, alternative="smaller")
    assert obs["power_seeds"] == math.ceil(want) and "at the observed effect" in obs["power_basis"]
    # A tiny paper effect: capped.
    tiny = check_claims(_stat_suite([{**cl, "paper_effect": -1e-5}]), runs)[0]
    assert tiny["power_seeds"] > 1000 and "80% power: >1000" in " ".join(claim_lines(tiny))
    # Paper effect from the cells' paper values (percent in the suite, fraction here).
    pv = check_claims(_stat_suite([{**cl, "paper_effect": None}], paper={"P56": 6.0, "P20": 8.0, "R56": 1,
                                                                         "R20": 1}), runs)[0]
    assert pv["paper_effect"] == pytest.approx(-0.02) and "paper values on cifar10" in pv["power_basis"]
    other = check_claims(_stat_suite([{**cl, "paper_effect": None}], paper={"P56": 6.0, "P20": 8.0, "R56": 1,
                                                                            "R20": 1}, paper_metric="test_error"), runs)
    assert other[0]["paper_effect"] is None           # the paper's numbers are of another metric
    # Interaction: TTestPower on the per-seed differences' sd.
    ix = {**IX, "op": ">", "paper_effect": 0.01}
    data = {"P56": [0.30, 0.31, 0.33], "P20": [0.10, 0.10, 0.10], "R56": [0.30, 0.29, 0.30], "R20": [0.10] * 3}
    r = check_claims(_stat_suite([ix]), _seed_runs(data))[0]
    d = np.array([0.0, 0.02, 0.03])
    want = TTestPower().solve_power(effect_size=0.01 / d.std(ddof=1), nobs=None, alpha=0.05, power=0.8,
                                    alternative="larger")
    assert r["verdict"] == "inconclusive" and r["power_seeds"] == math.ceil(want)


def test_power_needs_spread_and_the_claimed_direction():
    from bench.report.claims import power_seeds
    assert power_seeds(-0.02, 0.0, "<", 0, 0.05) == (None, power_seeds(-0.02, 0.0, "<", 0, 0.05)[1])
    assert "no spread" in power_seeds(-0.02, 0.0, "<", 0, 0.05)[1]
    assert "fewer than 2 runs" in power_seeds(-0.02, math.nan, "<", 0, 0.05)[1]
    assert "not in the claimed direction" in power_seeds(+0.02, 0.01, "<", 0, 0.05)[1]
    assert power_seeds(-0.02, 0.001, "<", 0, 0.05) == (2, "")           # a huge effect: the minimum, 2
    runs = _seed_runs({"P56": [0.1], "P20": [0.2, 0.3]})
    cl = {"id": "o", "text": "t", "metric": "train_error", "lhs": "P56", "op": "<", "rhs": "P20"}
    v = check_claims(_stat_suite([cl]), runs)[0]
    assert v["power_seeds"] is None and "fewer than 2 runs on a side" in v["power_note"]


def test_explanations_profile_note_wins_and_unexplained_fails_are_flagged():
    runs = _seed_runs({"P56": [0.30, 0.32, 0.31], "P20": [0.20, 0.26, 0.21]})
    base = {"text": "t", "metric": "train_error", "lhs": "P56", "rhs": "P20"}
    claims = [{**base, "id": "wrong", "op": "<", "if_fails": "plain-56 needs the full schedule"},
              {**base, "id": "bare", "op": "<"},
              {**base, "id": "ok", "op": ">", "if_fails": "never shown: it holds"}]
    s = _stat_suite(claims, profiles={"reduced": {"claim_notes": {"wrong": "10 epochs cannot show it"}}})
    from bench.report.render import claim_lines
    got = {c["id"]: c for c in check_claims(s, runs, profile="reduced")}
    assert got["wrong"]["explanation"] == "10 epochs cannot show it"
    assert "why fails: 10 epochs cannot show it" in claim_lines(got["wrong"])
    assert got["bare"]["unexplained"] and claim_lines(got["bare"])[-1] == "no explanation given in the suite"
    assert got["ok"]["explanation"] == "" and not any("why" in x for x in claim_lines(got["ok"]))
    other = {c["id"]: c for c in check_claims(s, runs, profile="paper")}
    assert other["wrong"]["explanation"] == "plain-56 needs the full schedule"


def test_claim_on_cells_the_profile_does_not_run_is_not_run_not_inconclusive():
    runs = _seed_runs({"P56": [0.30, 0.32], "P20": [0.20, 0.21]})
    base = {"text": "t", "metric": "train_error", "op": ">"}
    claims = [{**base, "id": "ran", "lhs": "P56", "rhs": "P20"}, {**base, "id": "skipped", "lhs": "R56", "rhs": "P20"}]
    s = _stat_suite(claims, profiles={"reduced": {"cells": ["P56", "P20"]}})
    from bench.report.render import _claim_row, claim_lines
    got = {c["id"]: c for c in check_claims(s, runs, profile="reduced")}
    assert got["ran"]["verdict"] == "holds"
    assert got["skipped"]["verdict"] == "not run" and got["skipped"]["detail"] == "profile reduced does not run R56"
    assert _claim_row(got["skipped"])[-2:] == ["NOT RUN", "—"]
    assert not any("power" in x for x in claim_lines(got["skipped"]))
    # Without the profile's cell list, the same claim is judged (and inconclusive for want of runs).
    assert check_claims(s, runs, profile="paper")[1]["verdict"] == "inconclusive"


# ---- the paper's value within our spread -----------------------------------------------------------------------------

def test_paper_value_placed_within_our_seeds(store):
    from bench.report.tables import display_grid, fmt_vs_paper
    suite = store[0]
    df = _runs([("R20", 0, 0.080, "FINISHED"), ("R20", 1, 0.090, "FINISHED"), ("R20", 2, 0.100, "FINISHED"),
                ("R32", 0, 0.070, "FINISHED"), ("R44", 0, 0.07, "FINISHED"), ("R44", 1, 0.07, "FINISHED")])
    sel = select_runs(df, "p", "d", cells=[c.id for c in suite.cells])
    st = cell_stats(suite, sel).set_index("cell")
    r20 = st.loc["R20"]                                        # ours 8, 9, 10 %; paper 8.75 %
    assert r20["z"] == pytest.approx((8.75 - 9.0) / 1.0) and r20["frac_above"] == pytest.approx(2 / 3)
    assert fmt_vs_paper(r20) == "z=-0.2, 2/3 seeds above"
    assert fmt_vs_paper(r20, comparable=False) == "not comparable (dataset)"
    assert math.isnan(st.loc["R32", "z"]) and fmt_vs_paper(st.loc["R32"]) == "—"          # n = 1
    assert fmt_vs_paper(st.loc["R44"]) == "sd 0, 0/2 seeds above"                          # paper 7.17 > 7.00
    header, body = display_grid(suite, st.reset_index(), "ours", "paper")
    assert header[1:5] == ["plain: ours", "plain: paper", "plain: Δ (pp)", "plain: paper vs our seeds"]
    assert "z=-0.2, 2/3 seeds above" in body[0]
    t = paper_table(suite, sel)
    assert t.loc["20", "resnet z"] == pytest.approx(-0.25) and t.loc["20", "resnet frac_above"] == pytest.approx(2 / 3)


def test_report_places_the_paper_only_on_its_dataset(report, store):
    md = report.markdown
    assert "not comparable (dataset)" in md and "seeds above" not in md       # fashion-mnist runs
    assert report.table["resnet z"].isna().all() and report.table["resnet frac_above"].isna().all()
    csv = pd.read_csv(report.out_dir / "table.csv", index_col=0)
    assert {"resnet z", "resnet frac_above"} <= set(csv.columns)
    suite, uri, tmp = store
    r = build_report(suite, uri, out_dir=tmp / "paper_z", profile="paper")
    assert "sd 0, 0/2 seeds above" in r.markdown                              # R20 7.00, 7.00 vs the paper's 8.75
    assert "colspan=4" in (r.out_dir / "report.html").read_text()


# ---- diverged runs ---------------------------------------------------------------------------------------------------

def _div_runs():
    df = _runs([("P20", 0, 0.20, "FINISHED"), ("P20", 1, 0.35, "FAILED"), ("P20", 2, 0.22, "FINISHED"),
                ("R20", 0, 0.10, "FINISHED"), ("R20", 1, 0.11, "FINISHED"), ("R20", 2, 0.5, "FAILED")])
    # P20 seed 1 diverged (its metrics.* are the last epoch before the NaN); R20 seed 2 failed for another reason.
    df["tags.bench.diverged"] = [None, "1", None, None, None, None]
    df["tags.bench.error"] = [None, "diverged at step 1234", None, None, None, "RuntimeError: CUDA"]
    df["metrics.train_loss"] = [0.5, 0.4, 0.5, 0.2, 0.2, 0.2]
    return df


def test_diverged_run_counts_at_chance():
    from bench.report.tables import diverged_notes, exclusions, fmt_cell, metric_values
    df = _div_runs()
    sel = select_runs(df, "p", "d", cells=["P20", "R20"])
    assert list(sel["run_id"]) == ["r0", "r1", "r2", "r3", "r4"] and list(sel["diverged"]) == [0, 1, 0, 0, 0]
    assert exclusions(df, sel, "p", "d", ["P20", "R20"]) == ["1 FAILED run(s) not counted"]
    # No class count logged, dataset 'd' unknown: left out, and said so.
    assert math.isnan(metric_values(sel, "test_error")["value"][1])
    assert "number of classes is unknown" in diverged_notes(sel, ["test_error"])[0]
    sel["tags.bench.dataset"] = "fashion-mnist"                       # 10 classes
    v = metric_values(sel, "test_error")
    assert v["value"].tolist() == pytest.approx([0.20, 0.90, 0.22, 0.10, 0.11]) and v["diverged"].sum() == 1
    assert metric_values(sel, "test_accuracy")["value"][1] == pytest.approx(0.10)
    assert math.isnan(metric_values(sel, "train_loss")["value"][1])   # losses: left out
    assert math.isnan(metric_values(sel, "val_error")["value"][1])    # no validation split
    sel.loc[1, "tags.bench.num_classes"] = "100"                     # the run's own count wins
    assert metric_values(sel, "test_error")["value"][1] == pytest.approx(0.99)
    assert metric_values(sel, "test_top5_error")["value"][1] == pytest.approx(0.95)
    sel.loc[1, "tags.bench.num_classes"] = None

    notes = diverged_notes(sel, ["test_error", "train_loss"])
    assert notes == ["P20 seed 1 diverged at step 1234: test_error counted at chance, 90.00%; "
                     "train_loss left out (a diverged run has no value of this metric)"]
    suite = _stat_suite([{"id": "o", "text": "t", "metric": "test_error", "lhs": "R20", "op": "<", "rhs": "P20"},
                         {"id": "l", "text": "t", "metric": "train_loss", "lhs": "R20", "op": "<", "rhs": "P20"}])
    st = cell_stats(suite, sel, metric="test_error").set_index("cell").loc["P20"]
    assert st["n"] == 3 and st["diverged"] == 1 and st["mean"] == pytest.approx(100 * (0.2 + 0.9 + 0.22) / 3)
    assert fmt_cell(st, "test_error", "mean").endswith("(3, 1 diverged)")
    c, loss = check_claims(suite, sel)
    assert c["n_rhs"] == 3 and c["rhs_mean"] == pytest.approx((0.2 + 0.9 + 0.22) / 3) and c["n_diverged"] == 1
    assert loss["n_rhs"] == 2 and loss["n_diverged_left_out"] == 1
    from bench.report.render import claim_lines
    assert "1 diverged run(s) counted at chance level; see Diverged runs" in claim_lines(c)
    assert any("left out: no train_loss" in x for x in claim_lines(loss))


def test_diverged_iters_to_is_censored_and_never_best_of_a_search():
    from bench.report.tables import metric_values
    df = _div_runs()
    sel = select_runs(df, "p", "d", cells=["P20", "R20"])
    curves = pd.DataFrame({"run_id": ["r0"] * 2 + ["r1"] * 2, "metric": "train_error", "step": [10, 20] * 2,
                           "value": [0.5, 0.2, 0.6, 0.5]})
    v = metric_values(sel, "iters_to:train_error<=0.3", curves)
    assert (v["value"][1], v["censored"][1]) == (1235, True)          # diverged at 1234 without reaching 0.3
    curves.loc[3, "value"] = 0.25                                      # reached it at step 20, then diverged
    v = metric_values(sel, "iters_to:train_error<=0.3", curves)
    assert (v["value"][1], v["censored"][1]) == (20, False)
    # In a search the diverged sample (lowest logged loss) is not the best one.
    s = _div_runs().iloc[[0, 1]].assign(**{"tags.bench.seed": "0", "tags.bench.config_hash": ["h0", "h1"]})
    assert select_runs(s, "p", "d", cells=["P20"], best_of=("train_loss", "min"))["run_id"].tolist() == ["r0"]


def test_report_flags_diverged_runs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SUITE_YAML)
    suite = load_suite(tmp_path / "tiny.yaml")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = track.ensure_experiment(uri, suite.name)
    trials = expand(suite, "reduced", cells=["R20", "P20"])
    pid = track.start_parent(uri, exp, suite=suite.name, profile="reduced", dataset="fashion-mnist", argv=[],
                             n_trials=len(trials), n_skipped=0)
    for t in trials:
        div = (t.cell, t.seed) == ("P20", 1)
        tags = {"diverged": 1, "error": "diverged at step 321", "diverged_step": 321, "num_classes": 10}
        _log_trial(uri, exp, pid, t, 0.1 if t.cell == "R20" else 0.2, status="FAILED" if div else "FINISHED",
                   tags=tags if div else None)
    r = build_report(suite, uri, out_dir=tmp_path / "out")
    md = r.markdown
    assert "## Diverged runs" in md and "P20 seed 1 diverged at step 321: test_error counted at chance, 90.00%" in md
    assert "(3, 1 diverged)" in md and "(1 diverged, counted as results)" in md
    assert r.table.loc["20", "plain mean"] == pytest.approx((20 + 90 + 20) / 3)
    runs = pq.read_table(r.out_dir / "runs.parquet").to_pandas()
    assert runs["report.diverged"].sum() == 1 and "Diverged runs" in (r.out_dir / "report.html").read_text()


def test_power_falls_back_when_the_root_finder_gives_up(monkeypatch):
    from statsmodels.stats.power import TTestIndPower
    from bench.report.claims import power_seeds
    want = power_seeds(-0.02, 0.03, "<", 0, 0.05)[0]
    assert want == math.ceil(TTestIndPower().solve_power(effect_size=-0.02 / 0.03, alpha=0.05, power=0.8,
                                                         alternative="smaller"))
    monkeypatch.setattr(TTestIndPower, "solve_power", lambda self, **kw: np.array([math.nan]))
    assert power_seeds(-0.02, 0.03, "<", 0, 0.05) == (want, "")


def test_elapsed_leaves_out_pauses_between_sittings():
    from bench.report.tables import SITTING_GAP_S, summarize_runs

    t = pd.Timestamp("2026-12-06 14:00", tz="UTC")
    m = pd.Timedelta(minutes=1)
    # Two overlapping trials, a short gap (judging between waves), then a resumed sequence hours later.
    runs = pd.DataFrame({"start_time": [t, t + 2 * m, t + 12 * m, t + 300 * m],
                         "end_time": [t + 10 * m, t + 8 * m, t + 20 * m, t + 305 * m]})
    s = summarize_runs(runs)
    assert SITTING_GAP_S == 600
    assert s["elapsed_s"] == 25 * 60 and s["sittings"] == 2 and s["span_s"] == 305 * 60
    one = summarize_runs(runs.iloc[:3])
    assert one["elapsed_s"] == 20 * 60 and one["sittings"] == 1
    assert math.isnan(summarize_runs(runs.iloc[:0])["elapsed_s"])


def test_a_single_evaluation_is_drawn_as_a_dot(store, tmp_path, monkeypatch):
    # Profiles that test once, at the end, log one point per run: a line through it is invisible.
    import matplotlib.pyplot as plt
    from bench.report import plot_curves
    suite = store[0].model_copy(deep=True)
    suite.layout.figure = "train_test_curves"
    df = _runs([(c, s, 0.2, "FINISHED") for c in ("P20", "R20") for s in range(2)])
    sel = select_runs(df, "p", "d", cells=[c.id for c in suite.cells])
    curves = pd.DataFrame([{"run_id": r, "metric": m, "step": 600, "value": v}
                           for r, v in zip(sel["run_id"], (0.1, 0.2, 0.3, 0.4)) for m in ("train_error", "test_error")])
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    plot_curves(suite, sel, curves, tmp_path / "c.png")
    ax = figs[0].axes[0]
    dots = [ln for ln in ax.lines if ln.get_marker() in ("o", "s") and len(ln.get_xdata()) == 1]
    assert len(dots) == 4                                       # 2 cells x train/test, each a visible marker
    assert len({float(ln.get_xdata()[0]) for ln in dots}) == 2  # the two cells side by side, not on top
    assert sorted(round(float(ln.get_ydata()[0]), 6) for ln in dots) == [15.0, 15.0, 35.0, 35.0]
