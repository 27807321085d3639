"""Claims: a paper's orderings between cells, judged with a test over seeds.

Welch's t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed values, seeds of several cells pooled:
- '<', '>': one-sided test of the difference of means in the claimed direction.
- '<=', '>=': non-inferiority, the one-sided test shifted by the margin (lhs <= rhs + margin).
- '~=': TOST equivalence, two one-sided tests against ±margin; the p-value is the larger of the two.
A claim 'holds' only when its test is significant at the claim's alpha, 'fails' when the opposite test is
significant (for '~=': the difference is significantly outside ±margin), and is 'inconclusive' otherwise.

Welch because seeds of different cells have different spreads (a plain-56 net varies far more than a ResNet) and
there are few of them; one-sided because a paper's claim has a direction. When both sides are constant the t
statistic is undefined (0/0 or ±inf), so the exact Mann-Whitney U test (permutations, ties allowed) decides instead.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.tables import cell_of, fmt_num, metric_values, scale, unit_label
from bench.spec import Claim, Suite

METHOD = (
    "Claims are tested over seeds with Welch's t-test (scipy.stats.ttest_ind, equal_var=False); the seeds of "
    "several cells on one side are pooled. '<' and '>' use the one-sided test in the claimed direction; '<=' and "
    "'>=' a one-sided non-inferiority test shifted by the margin; '~=' TOST equivalence (two one-sided tests "
    "against ±margin, p = the larger). A claim holds only if p < alpha; it fails if the test in the opposite "
    "direction is significant (for '~=': the difference lies significantly outside ±margin); otherwise it is "
    "inconclusive, always so with fewer than 2 runs on a side. If both sides have zero variance, the exact "
    "Mann-Whitney U test (permutations) replaces the t-test. Runs that never reach an iters_to threshold count "
    "as their last step + 1 (a lower bound) and are marked censored."
)


def _one_sided(x: np.ndarray, y: np.ndarray, alternative: str) -> tuple[float, str]:
    """p-value of H1: mean(x) - mean(y) is `alternative` ('less'/'greater') than 0, and the test's name."""
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        # Permutations enumerate exactly for small n; rng fixes the p-value when they must be sampled.
        r = stats.mannwhitneyu(x, y, alternative=alternative, method=stats.PermutationMethod(rng=0))
        return float(r.pvalue), "Mann-Whitney U (exact; both sides constant)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant samples: scipy warns, the result stands
        r = stats.ttest_ind(x, y, equal_var=False, alternative=alternative)
    return float(r.pvalue), "Welch t"


def judge(x: np.ndarray, y: np.ndarray, op: str, margin: float, alpha: float) -> tuple[str, float, str]:
    """(verdict, p-value of the claim, test description) for 'x op y' on fraction-unit samples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        return "inconclusive", math.nan, "n<2: no test possible"
    m = margin
    if op in ("<", ">"):
        alt, opp = ("less", "greater") if op == "<" else ("greater", "less")
        p, name = _one_sided(x, y, alt)
        p_opp, _ = _one_sided(x, y, opp)
        desc = f"{name}, one-sided ({'lhs < rhs' if op == '<' else 'lhs > rhs'})"
    elif op == "<=":   # H1: mean diff < +m
        p, name = _one_sided(x - m, y, "less")
        p_opp, _ = _one_sided(x - m, y, "greater")
        desc = f"{name}, non-inferiority (lhs < rhs + margin)"
    elif op == ">=":   # H1: mean diff > -m
        p, name = _one_sided(x + m, y, "greater")
        p_opp, _ = _one_sided(x + m, y, "less")
        desc = f"{name}, non-inferiority (lhs > rhs − margin)"
    elif op == "~=":
        p_lo, name = _one_sided(x + m, y, "greater")   # diff > -m
        p_hi, _ = _one_sided(x - m, y, "less")         # diff < +m
        p = max(p_lo, p_hi)
        # Significantly outside the margin, on either side.
        p_opp = min(_one_sided(x - m, y, "greater")[0], _one_sided(x + m, y, "less")[0])
        desc = f"{name}, TOST equivalence within ±margin"
        if m == 0:
            desc += " (margin 0: equivalence can never be shown)"
    else:
        raise ValueError(f"unknown claim operator {op!r}")
    if math.isnan(p):
        return "inconclusive", p, desc + "; test undefined"
    if p < alpha:
        return "holds", p, desc
    if not math.isnan(p_opp) and p_opp < alpha:
        why = "outside ±margin" if op == "~=" else "opposite direction"
        return "fails", p, desc + f"; {why} significant (p={p_opp:.3g})"
    return "inconclusive", p, desc


def _side(runs: pd.DataFrame, vals: pd.DataFrame, cells: list[str]) -> tuple[np.ndarray, int]:
    mask = cell_of(runs).isin(cells).to_numpy()
    v = vals[mask]
    v = v[v["value"].notna()]
    return v["value"].to_numpy(float), int(v["censored"].sum())


def check_claims(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> list[dict]:
    """One dict per claim: id, text, verdict, p_value, detail, and the numbers behind them (fraction units)."""
    out = []
    for cl in suite.claims:
        vals = metric_values(runs, cl.metric, curves) if len(runs) else pd.DataFrame(columns=["value", "censored"])
        x, cx = _side(runs, vals, cl.lhs)
        y, cy = _side(runs, vals, cl.rhs)
        verdict, p, test = judge(x, y, cl.op, cl.margin, cl.alpha)
        out.append(_record(cl, x, y, cx, cy, verdict, p, test))
    return out


def _record(cl: Claim, x: np.ndarray, y: np.ndarray, cx: int, cy: int, verdict: str, p: float, test: str) -> dict:
    k, u = scale(cl.metric), unit_label(cl.metric)
    mx = float(np.mean(x)) if len(x) else math.nan
    my = float(np.mean(y)) if len(y) else math.nan

    def side(name: str, cells: list[str], mean: float, n: int, cens: int) -> str:
        c = f", {cens} censored" if cens else ""
        return f"{name} {'+'.join(cells)}: mean {fmt_num(mean * k, cl.metric)}{(' ' + u) if u else ''} (n={n}{c})"

    parts = [test, side("lhs", cl.lhs, mx, len(x), cx), side("rhs", cl.rhs, my, len(y), cy)]
    if cl.margin or cl.op in ("<=", ">=", "~="):
        parts.append(f"margin {fmt_num(cl.margin * k, cl.metric)}{(' ' + u) if u else ''}")
    parts.append(f"alpha {cl.alpha:g}")
    if not math.isnan(p):
        parts.append(f"p={p:.3g}")
    if cx and cl.op in ("<", "<="):
        parts.append("censored lhs values are lower bounds: 'lhs smaller' is favoured")
    if cy and cl.op in (">", ">="):
        parts.append("censored rhs values are lower bounds: 'lhs larger' is favoured")
    return {
        "id": cl.id, "text": cl.text, "verdict": verdict, "p_value": p, "detail": "; ".join(parts),
        "metric": cl.metric, "op": cl.op, "lhs": list(cl.lhs), "rhs": list(cl.rhs),
        "lhs_mean": mx, "rhs_mean": my, "n_lhs": len(x), "n_rhs": len(y), "margin": cl.margin, "alpha": cl.alpha,
        "test": test,
    }
