"""The sequential claim rule (bench.report.sequential): its boundaries, its error rates by simulation, futility,
replay from runs, and Holm's correction over a suite's claims. Pure numpy/scipy: no Ray, no MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.report import sequential as sq
from bench.report.claims import check_claims, pvalues, pvalues_interaction
from bench.report.sequential import SCENARIOS, Design, decide, decide_many, holm, simulate

ALPHA, SIMS = 0.05, 10_000
# Per test: the smallest maximum with 80% simulated power at 1 sd (python -m bench.report.sequential --simulate
# finds them), so the mean seeds compare with the fixed-n power count at the same power.
MAX = {"welch": 19, "one-sample": 10, "tost": 27}


def _design(sc) -> Design:
    return Design(2, MAX["tost" if sc.op == "~=" else sc.test])


@pytest.fixture(scope="module")
def sims():
    """Every claim kind, 10,000 sequences under the null and under an effect of 1 sd; both tables printed."""
    out = []
    for sc in SCENARIOS:
        r = simulate(sc, _design(sc), ALPHA, SIMS)
        out.append({**r, "fixed_n": sq.fixed_n(sc, ALPHA), "fixed_n_sim": sq.fixed_n_simulated(sc, ALPHA, 4000)})
    print("\n" + sq.tables(out))
    return out


# ---- boundaries ---------------------------------------------------------------------------------------------------

def test_boundaries_match_published_ones_and_the_z_process():
    # Lan-DeMets O'Brien-Fleming-type, one-sided: SeqBounds.jl's documented example (looks at 1/4..1, alpha 0.05).
    assert sq.z_bounds((0.25, 0.5, 0.75, 1.0), 0.05) == pytest.approx([3.74955, 2.53993, 2.01604, 1.72014],
                                                                       abs=1e-4)
    assert sq.spend(1.0, 0.05) == pytest.approx(0.05) and sq.spend(0.0, 0.05) == 0
    # Brownian motion at 5 equal looks: the first crossings spend what the spending function says, look by look.
    t = (0.2, 0.4, 0.6, 0.8, 1.0)
    b = sq.z_bounds(t, 0.025)
    s = np.cumsum(np.random.default_rng(1).standard_normal((400_000, 5)) * math.sqrt(0.2), axis=1)
    cross = s / np.sqrt(t) > b
    first = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
    want = np.diff(np.r_[0.0, sq.spend(np.asarray(t), 0.025)])
    got = np.array([(first == k).mean() for k in range(5)])
    assert got == pytest.approx(want, abs=4 * math.sqrt(0.025 / 400_000))
    assert cross.any(axis=1).mean() == pytest.approx(0.025, abs=0.001)


def test_thresholds_rise_over_the_looks_and_stay_below_alpha():
    for d in (Design(2, 5), Design(3, 12), Design(2, 30)):
        for test in sq.TESTS:
            thr = d.thresholds(ALPHA, test)
            assert len(thr) == len(d.looks) and np.all(np.diff(thr) > 0) and thr[-1] < ALPHA
            assert thr[0] < thr[-1] / 20      # the first looks, with t of 1-2 df, can hardly decide
            assert 0.5 * ALPHA < d.level(ALPHA, test) <= ALPHA
    # One look is the fixed-n test (up to the calibration of its t-test at n = first = max).
    assert Design(5, 5).thresholds(ALPHA, "one-sample")[0] == pytest.approx(ALPHA, rel=0.05)
    assert Design(1, 4).looks == [2, 3, 4]   # never a look before 2 seeds


def test_vectorised_tests_are_the_reports_tests():
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.3, 0.05, (5, 4)), rng.normal(0.25, 0.02, (5, 4))
    for op, margin in ((">", 0.0), ("<", 0.0), ("<=", 0.02), (">=", 0.02), ("~=", 0.1)):
        sc = sq.Scenario("t", "order", op, margin, 0.0, 0.0)
        got = []
        for i in range(5):
            p, q, _, _ = pvalues(x[i], y[i], op, margin)
            got.append((p, q))
        # scenario_pvalues draws its own data; recompute its formulas on ours through the same helpers.
        shift = {">": 0.0, "<": 0.0, "<=": margin, ">=": -margin, "~=": 0.0}[op]
        if op == "~=":
            p = np.maximum(sq.welch_p(x, y, -margin, "greater"), sq.welch_p(x, y, margin, "less"))
            q = np.minimum(sq.welch_p(x, y, margin, "greater"), sq.welch_p(x, y, -margin, "less"))
        else:
            alt = "less" if op in ("<", "<=") else "greater"
            p = sq.welch_p(x, y, shift, alt)
            q = sq.welch_p(x, y, shift, "greater" if alt == "less" else "less")
        assert np.c_[p, q] == pytest.approx(np.array(got), rel=1e-9), (op, sc)
    d = rng.normal(0.01, 0.02, (5, 6))
    for op, margin in ((">", 0.0), ("<=", 0.01)):
        got = np.array([pvalues_interaction(d[i], op, margin)[:2] for i in range(5)])
        shift = {">": 0.0, "<=": margin}[op]
        alt = "greater" if op == ">" else "less"
        opp = "less" if alt == "greater" else "greater"
        assert np.c_[sq.one_sample_p(d, shift, alt), sq.one_sample_p(d, shift, opp)] == pytest.approx(got, rel=1e-9)
        assert got[0, 0] == pytest.approx(stats.ttest_1samp(d[0] - shift, 0, alternative=alt).pvalue)


# ---- error rates, power and cost, by simulation -------------------------------------------------------------------

def test_false_positives_stay_within_alpha_for_every_claim_kind(sims):
    for r in sims:
        bound = ALPHA + 3 * r["mc_se"]
        name = r["scenario"].name
        assert r["null"]["holds"] <= bound, name            # the claim declared true at its null's boundary
        assert r["null"]["fails"] <= bound, name            # ... or its opposite declared
        assert r["null"]["no_futility"] <= bound, name      # the boundaries alone (futility is non-binding)


def test_naive_looking_exceeds_alpha(sims):
    """Looking after every seed and stopping at the first p < alpha: the error the rule exists to prevent. If
    this did not exceed alpha, the simulation could not tell a valid rule from an invalid one."""
    for r in sims:
        assert r["null"]["naive"] > 2.5 * ALPHA, r["scenario"].name


def test_uncalibrated_boundaries_overshoot_for_t_tests():
    # The reason for the calibration: z boundaries carried to a one-sample t of 1-10 df cross too often.
    design = Design(2, 10)
    p, _ = sq.scenario_pvalues(SCENARIOS[2], 0.0, design.looks, 40_000, np.random.default_rng(11))
    thr_z = stats.norm.sf(sq.z_bounds(design.fractions(), ALPHA))
    raw = (p < thr_z).any(axis=1).mean()
    assert raw > ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 40_000)
    assert (p < design.thresholds(ALPHA, "one-sample")).any(axis=1).mean() <= ALPHA + 0.003


def test_power_and_seeds_at_an_effect_of_one_sd(sims):
    for r in sims:
        a, name = r["alt"], r["scenario"].name
        assert a["holds"] >= 0.75, name
        assert a["fails"] < 0.001, name
        assert a["seeds"] < r["design"].max, name
        if r["scenario"].op != "~=":   # TOST's power count is statsmodels' approximation (too few seeds)
            assert a["seeds"] < r["fixed_n"], name
        assert a["seeds"] < r["fixed_n_sim"] + 1, name
        assert r["null"]["seeds"] < r["fixed_n_sim"], name   # a null claim stops early, mostly as futile


# ---- the rule on one sequence: futility, order of checks, replay --------------------------------------------------

def test_decide_is_decide_many_row_by_row():
    rng = np.random.default_rng(3)
    design = Design(2, 9)
    p, q = sq.scenario_pvalues(SCENARIOS[0], 0.8, design.looks, 300, rng)
    code, at = decide_many(design, ALPHA, "welch", p, q)
    for i in range(len(p)):
        for k in (3, len(design.looks)):   # a sequence still running, and a complete one
            one = decide(design, ALPHA, "welch", list(zip(p[i, :k], q[i, :k])))
            c, a = decide_many(design, ALPHA, "welch", p[i:i + 1, :k], q[i:i + 1, :k])
            assert one.status == sq.STATUS[c[0]] and one.n == design.looks[a[0]]
        assert decide(design, ALPHA, "welch", list(zip(p[i], q[i]))).status == sq.STATUS[code[i]]


def test_futility_waits_for_enough_seeds_then_stops_a_flat_claim():
    design = Design(2, 12)                     # futility from max(4, 12/3) = 4 seeds per cell
    flat = [(0.5, 0.5)] * 11                   # no trend either way
    d = decide(design, ALPHA, "welch", flat[:2])
    assert d.status == "open" and d.n == 3 and d.cp < sq.FUTILITY_CP
    d = decide(design, ALPHA, "welch", flat)
    assert d.status == "futile" and d.n == 4 and d.verdict == "inconclusive" and d.closed
    # A clear trend in the opposite direction is not futile: it goes on to 'fails'.
    opp = [(0.9, 0.1), (0.97, 0.03), (0.99, 0.01), (0.998, 0.002), (0.9995, 0.0005), (0.9999, 1e-4)]
    d = decide(design, ALPHA, "welch", opp)
    assert d.status == "fails" and d.verdict == "fails"
    assert d.p_opp < d.threshold
    # The last planned look ends the sequence, decided or not.
    d = decide(design, ALPHA, "welch", [(0.3, 0.7)] * 2 + [(0.04, 0.96)] * 9)
    assert d.status in ("max", "futile")
    assert decide(Design(2, 3), ALPHA, "welch", [(0.3, 0.7), (0.2, 0.8)]).status == "max"
    assert decide(design, ALPHA, "welch", []).status == "waiting"
    assert decide(design, ALPHA, "welch", [(math.nan, math.nan)]).status == "open"   # no test: decides nothing


# ---- replay from runs through check_claims ----------------------------------------------------------------------

def _suite(claims, cells=("P56", "P20", "R56", "R20")):
    from bench.spec import Suite
    return Suite.model_validate({
        "name": "seq", "title": "t", "paper": {"citation": "c", "ref": "Table 1", "dataset": "cifar10"},
        "dataset": "cifar10", "protocol": {"iterations": 10},
        "cells": [{"id": c, "model": "resnet20", "row": c} for c in cells], "claims": claims})


def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [(c, s, v) for c, vs in values.items() for s, v in enumerate(vs) if v is not None]
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(len(rows))], "cell": [r[0] for r in rows],
                         "seed": [r[1] for r in rows], "metrics.train_error": [r[2] for r in rows]})


DEG = {"id": "deg", "text": "plain-56 trains worse", "metric": "train_error", "lhs": "P56", "op": ">", "rhs": "P20"}
NODEG = {"id": "nodeg", "text": "ResNet-56 no worse", "metric": "train_error", "lhs": "R56", "op": "<=",
         "rhs": "R20", "margin": 0.005}
IX = {"id": "ix", "text": "shortcuts", "kind": "interaction", "metric": "train_error", "lhs": ["P56", "P20"],
      "op": ">", "rhs": ["R56", "R20"]}


def _values(n: int, seed: int = 5) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {"P56": list(0.32 + rng.normal(0, 0.02, n)), "P20": list(0.17 + rng.normal(0, 0.01, n)),
            "R56": list(0.15 + rng.normal(0, 0.01, n)), "R20": list(0.15 + rng.normal(0, 0.01, n))}


def test_replay_judges_each_claim_at_its_deciding_look():
    design, suite = Design(2, 8), _suite([DEG, NODEG, IX])
    v = _values(8)
    got = {c["id"]: c for c in check_claims(suite, _runs(v), design=design)}
    deg = got["deg"]
    q = deg["sequential"]
    assert deg["verdict"] == "holds" and q["status"] == "holds" and q["n"] < 8
    assert (deg["n_lhs"], deg["n_rhs"]) == (q["n"], q["n"])          # judged on the seeds it had then
    p = stats.ttest_ind(v["P56"][:q["n"]], v["P20"][:q["n"]], equal_var=False, alternative="greater").pvalue
    assert deg["p_value"] == pytest.approx(p) == pytest.approx(q["p"]) and p < q["threshold"]
    assert q["rci_low"] > 0 and q["rci_level"] == pytest.approx(0.9)   # the repeated CI excludes 0: decided
    # The same p-values at fixed n would hold at a look where the sequential rule does not decide.
    first = check_claims(suite, _runs({k: x[:2] for k, x in v.items()}), design=design)[0]
    assert first["sequential"]["status"] == "open" and first["verdict"] == "inconclusive"
    assert got["nodeg"]["sequential"]["status"] in ("futile", "max", "fails")


def test_replay_is_deterministic_and_a_decided_claim_stays_decided():
    design, suite = Design(2, 8), _suite([DEG, NODEG, IX])
    v = _values(8)
    runs = _runs(v)
    a = check_claims(suite, runs, design=design)
    b = check_claims(suite, runs.sample(frac=1, random_state=2).reset_index(drop=True), design=design)
    strip = [{k: c[k] for k in ("verdict", "p_value", "sequential", "holm")} for c in a]
    assert strip == [{k: c[k] for k in ("verdict", "p_value", "sequential", "holm")} for c in b]
    n = a[0]["sequential"]["n"]
    # Seeds after the decision (run for other claims), even wild ones, change nothing.
    kept = check_claims(suite, _runs({k: x[:n] + [0.0, 0.9, 0.0] for k, x in v.items()}), design=design)[0]
    assert kept["sequential"] == a[0]["sequential"] and kept["verdict"] == "holds"


def test_a_gap_in_the_seeds_ends_the_looks():
    design, suite = Design(2, 8), _suite([DEG])
    v = _values(6)
    v["P20"][3] = None                          # seed 3 of P20 missing: looks at 2 and 3 seeds only
    c = check_claims(suite, _runs(v), design=design)[0]
    assert c["sequential"]["n"] <= 3
    one = check_claims(suite, _runs({k: x[:1] for k, x in v.items()}), design=design)[0]
    assert one["sequential"]["status"] == "waiting" and one["verdict"] == "inconclusive"


# ---- Holm over the suite's claims --------------------------------------------------------------------------------

def _c(verdict, p, alpha=0.05):
    return {"verdict": verdict, "alpha": alpha, "rejects": (lambda level: p < level)}


def test_holm_steps_down_over_the_judged_claims():
    # m = 3 judged (the 'not run' one is no test): 0.01 < 0.05/3 is kept; then 0.04 against 0.05/2 is not.
    claims = [_c("holds", 0.01), _c("holds", 0.04), _c("inconclusive", 0.3), _c("not run", math.nan)]
    assert holm(claims) == [True, False, None, None]
    # Without the inconclusive claim in the family, 0.04 < 0.05/1 after the first rejection.
    assert holm([_c("holds", 0.01), _c("fails", 0.04)]) == [True, True]
    assert holm([_c("holds", 0.03), _c("holds", 0.04)]) == [False, False]      # 0.03 > 0.05/2: nothing kept
    assert holm([_c("holds", 0.02), _c("holds", 0.04)]) == [True, True]
    assert holm([_c("holds", 0.03, alpha=0.1), _c("holds", 0.04, alpha=0.01)]) == [True, False]
    assert holm([]) == []


def test_holm_column_in_reports():
    from bench.report.render import CLAIM_HEADER, _claim_row

    suite = _suite([DEG, NODEG, IX])
    fixed = check_claims(suite, _runs(_values(4)))
    assert [c["holm"] for c in fixed] == [True, None, True]
    assert CLAIM_HEADER[-1] == "survives Holm" and [_claim_row(c)[-1] for c in fixed] == ["yes", "—", "yes"]
    seq = check_claims(suite, _runs(_values(8)), design=Design(2, 8))
    for c in seq:
        assert (c["holm"] is None) == (c["verdict"] not in ("holds", "fails"))
