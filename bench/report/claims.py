"""Claims: a paper's orderings between cells (and interactions of two differences), judged with a test over seeds.

Welch's t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed values, seeds of several cells pooled:
- '<', '>': one-sided test of the difference of means in the claimed direction.
- '<=', '>=': non-inferiority, the one-sided test shifted by the margin (lhs <= rhs + margin).
- '~=': TOST equivalence, two one-sided tests against ±margin; the p-value is the larger of the two.
A claim 'holds' only when its test is significant at the claim's alpha, 'fails' when the opposite test is
significant (for '~=': the difference is significantly outside ±margin), and is 'inconclusive' otherwise.

Welch because seeds of different cells have different spreads (a plain-56 net varies far more than a ResNet) and
there are few of them; one-sided because a paper's claim has a direction. When both sides are constant the t
statistic is undefined (0/0 or ±inf), so the exact Mann-Whitney U test (permutations, ties allowed) decides instead.

Interaction claims, (a - b) op (c - d), are paired by seed: d_seed = (a - b) - (c - d) over the seeds present in all
four cells, a one-sample one-sided t-test of d against 0 (±margin for '<=', '>='); constant d: the exact sign test.

Every claim also gets its observed effect with a 95% interval (Welch-Satterthwaite, or the one-sample t interval)
and, when inconclusive, the seeds per cell that would give 80% power (statsmodels) for the paper's effect.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from bench.report.tables import cell_of, fmt_num, metric_values, paper_fraction, scale, seed_of, unit_label
from bench.spec import Claim, Suite

if TYPE_CHECKING:
    from bench.report.sequential import Decision, Design

CI_LEVEL = 0.95
POWER = 0.8
MAX_SEEDS = 1000          # beyond this the estimate is shown as ">1000"

METHOD = (
    "Claims are tested over seeds with Welch's t-test (scipy.stats.ttest_ind, equal_var=False); the seeds of "
    "several cells on one side are pooled. '<' and '>' use the one-sided test in the claimed direction; '<=' and "
    "'>=' a one-sided non-inferiority test shifted by the margin; '~=' TOST equivalence (two one-sided tests "
    "against ±margin, p = the larger). A claim holds only if p < alpha; it fails if the test in the opposite "
    "direction is significant (for '~=': the difference lies significantly outside ±margin); otherwise it is "
    "inconclusive, always so with fewer than 2 runs on a side. If both sides have zero variance, the exact "
    "Mann-Whitney U test (permutations) replaces the t-test. Runs that never reach an iters_to threshold count "
    "as their last step + 1 (a lower bound) and are marked censored. "
    "Interaction claims, (a − b) op (c − d), are paired by seed: for each seed run in all four cells, "
    "d = (a − b) − (c − d); a one-sample one-sided t-test (scipy.stats.ttest_1samp) of d against 0 (against "
    "±margin for '<=' and '>=') in the claimed direction decides, with the same holds/fails/inconclusive rule; "
    "fewer than 2 complete seeds are inconclusive; constant d falls back to the exact sign test. "
    "Each claim shows its observed effect (mean lhs − mean rhs, or the mean of d) with a 95% confidence "
    "interval: Welch–Satterthwaite for two samples, the one-sample t interval for d. For an inconclusive claim "
    "the report gives the seeds per cell that would give 80% power to detect the paper's effect (the claim's "
    "paper_effect, else the difference of the cells' paper values) at our observed spread, at the claim's "
    "alpha and in the claimed direction (statsmodels TTestIndPower with effect size = effect / pooled sd for "
    "orderings; TTestPower on the sd of d for interactions; for '~=' the nearer bound's one-sided test, an "
    "approximation); without a paper effect the observed effect is used and said so. "
    "A run whose loss became NaN or inf (diverged) is a result: it counts at chance-level error "
    "(1 − 1/classes) for error metrics (1/classes for accuracies), as never reaching an iters_to threshold "
    "(censored, unless it got there before diverging), and is left out of losses; the report lists each one."
)

HOLM_METHOD = (
    "The last column says whether a verdict that holds or fails survives Holm's step-down correction (Holm 1979, "
    "Scand. J. Statist. 6) over the suite's judged claims (those not run excluded), each at its own alpha: the "
    "family-wise error over the suite's claims, where each verdict alone keeps only its own.")


def sequential_method(design: Design) -> str:
    from bench.report.sequential import FUTILITY_CP, FUTILITY_FROM

    return (
        f"Seeds were added sequentially (bench run --until-decided): {design.describe()}, the next seed only to "
        "the cells of claims still open. At each look a claim's test (as above) is compared with a boundary from "
        "Lan–DeMets O'Brien–Fleming-type alpha spending over the information fraction n/N (Lan & DeMets 1983, "
        "Biometrika 70; Jennison & Turnbull 2000, Group Sequential Methods, ch. 7 and 19), computed at a level "
        "alpha' below alpha, calibrated by simulation so that the t-tests' false-positive rate over all looks "
        "stays at most the claim's alpha (python -m bench.report.sequential --simulate prints the rates). A "
        "claim is judged at the first look where its p-value is below the boundary (holds) or the opposite "
        "test's is (fails), on the seeds it had then: means, effect, interval and p are that look's. It is "
        f"futile when, from max({FUTILITY_FROM}, N/3) seeds on, the conditional power of either decision by N "
        f"under the trend so far is below {FUTILITY_CP:.0%}; otherwise it is open until the maximum. The "
        "repeated confidence interval at that look (level 1 − 2 alpha over all looks; Jennison & Turnbull ch. 9) "
        "excludes the claim's null exactly when the look decides. Seeds per cell for 80% power are the fixed-n "
        "count, for reference.")


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


def pvalues(x: np.ndarray, y: np.ndarray, op: str, margin: float) -> tuple[float, float, str, str]:
    """(p of the claim, p of the opposite, test description, what 'opposite' means) for 'x op y' on
    fraction-unit samples with at least 2 values a side."""
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
    return p, p_opp, desc, "outside ±margin" if op == "~=" else "opposite direction"


def judge(x: np.ndarray, y: np.ndarray, op: str, margin: float, alpha: float) -> tuple[str, float, str]:
    """(verdict, p-value of the claim, test description) for 'x op y' on fraction-unit samples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        return "inconclusive", math.nan, "n<2: no test possible"
    p, p_opp, desc, why = pvalues(x, y, op, margin)
    return _verdict(p, p_opp, alpha, desc, why)


def _verdict(p: float, p_opp: float, alpha: float, desc: str, why: str) -> tuple[str, float, str]:
    if math.isnan(p):
        return "inconclusive", p, desc + "; test undefined"
    if p < alpha:
        return "holds", p, desc
    if not math.isnan(p_opp) and p_opp < alpha:
        return "fails", p, desc + f"; {why} significant (p={p_opp:.3g})"
    return "inconclusive", p, desc


def _shift(op: str, margin: float) -> float:
    """The boundary a directional claim is tested against: lhs - rhs < +margin for '<=', > -margin for '>='."""
    return {"<": 0.0, ">": 0.0, "<=": margin, ">=": -margin}[op]


def _direction(op: str) -> str:
    return "less" if op in ("<", "<=") else "greater"


def _one_sample(d: np.ndarray, alternative: str) -> tuple[float, str]:
    """p-value of H1: mean(d) is `alternative` than 0, and the test's name."""
    if np.ptp(d) == 0:
        if d[0] == 0:
            return math.nan, "sign test (all differences 0)"
        r = stats.binomtest(int((d > 0).sum()), len(d), 0.5, alternative=alternative)
        return float(r.pvalue), "sign test (exact; differences constant)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_1samp(d, 0.0, alternative=alternative)
    return float(r.pvalue), "one-sample t"


def pvalues_interaction(d: np.ndarray, op: str, margin: float) -> tuple[float, float, str]:
    """(p of the claim, p of the opposite, test description) for per-seed differences d (at least 2)."""
    if op not in ("<", ">", "<=", ">="):
        raise ValueError(f"interaction claims take <, >, <=, >=, not {op!r}")
    alt = _direction(op)
    opp = "greater" if alt == "less" else "less"
    x = d - _shift(op, margin)
    p, name = _one_sample(x, alt)
    p_opp, _ = _one_sample(x, opp)
    bound = {"<": "< 0", ">": "> 0", "<=": "< +margin", ">=": "> −margin"}[op]
    return p, p_opp, f"{name}, one-sided on per-seed (a − b) − (c − d) {bound}"


def judge_interaction(d: np.ndarray, op: str, margin: float, alpha: float) -> tuple[str, float, str]:
    """(verdict, p, test) for the per-seed differences d = (a - b) - (c - d) against 'd op 0' (± margin)."""
    d = np.asarray(d, float)
    if op not in ("<", ">", "<=", ">="):
        raise ValueError(f"interaction claims take <, >, <=, >=, not {op!r}")
    if len(d) < 2:
        return "inconclusive", math.nan, "fewer than 2 seeds with all four cells: no test possible"
    p, p_opp, desc = pvalues_interaction(d, op, margin)
    return _verdict(p, p_opp, alpha, desc, "opposite direction")


# ---- effect size, interval, power -----------------------------------------------------------------------------

def effect_ci(x: np.ndarray, y: np.ndarray | None = None, level: float = CI_LEVEL) -> tuple[float, float, float, str]:
    """(effect, low, high, method): mean(x) - mean(y) with Welch-Satterthwaite's interval, or with y None the
    mean of x with the one-sample t interval. NaN bounds, and the reason as method, when there is none."""
    x = np.asarray(x, float)
    if y is None:
        eff = float(np.mean(x)) if len(x) else math.nan
        if len(x) < 2:
            return eff, math.nan, math.nan, "no interval: fewer than 2 seeds"
        if np.ptp(x) == 0:
            return eff, math.nan, math.nan, "no interval: no spread over seeds"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # near-constant samples, as in _one_sided
            ci = stats.ttest_1samp(x, 0.0).confidence_interval(level)
        return eff, float(ci.low), float(ci.high), "one-sample t"
    y = np.asarray(y, float)
    eff = float(np.mean(x) - np.mean(y)) if len(x) and len(y) else math.nan
    if len(x) < 2 or len(y) < 2:
        return eff, math.nan, math.nan, "no interval: fewer than 2 runs on a side"
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return eff, math.nan, math.nan, "no interval: no spread on either side"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(level)
    return eff, float(ci.low), float(ci.high), "Welch–Satterthwaite"


def pooled_sd(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    return float(math.sqrt(((len(x) - 1) * np.var(x, ddof=1) + (len(y) - 1) * np.var(y, ddof=1))
                           / (len(x) + len(y) - 2)))


def power_seeds(effect: float, sd: float, op: str, margin: float, alpha: float, kind: str = "order",
                cells: tuple[int, int] = (1, 1)) -> tuple[int | None, str]:
    """Seeds per cell for POWER to detect `effect` (lhs - rhs, fraction units) at spread `sd`, with the claim's
    one-sided test: (seeds, "") or (None, why not). seeds > MAX_SEEDS means "more than MAX_SEEDS".

    order: TTestIndPower, sd = pooled sd of the two sides, `cells` = cells pooled on (lhs, rhs);
    interaction: TTestPower, sd = sd of the per-seed differences."""
    if effect is None or not math.isfinite(effect):
        return None, "no effect to size for"
    if not math.isfinite(sd):
        return None, "fewer than 2 runs on a side: no spread to size with"
    if sd == 0:
        return None, "our runs have no spread (sd 0): any real effect is detected, the t-test is undefined"
    if op == "~=":
        # TOST is at best as powerful as its nearer one-sided test; statsmodels sizes that one.
        es, alt = (margin - abs(effect)) / sd, "larger"
        if es <= 0:
            return None, "the effect lies outside ±margin: equivalence cannot be shown"
    else:
        es = (effect - _shift(op, margin)) / sd
        alt = "smaller" if _direction(op) == "less" else "larger"
        if (es >= 0 and alt == "smaller") or (es <= 0 and alt == "larger"):
            return None, "the effect is not in the claimed direction"
    if kind == "interaction":
        an, k = TTestPower(), 1

        def power(n: float) -> float:
            return float(an.power(effect_size=es, nobs=n, alpha=alpha, alternative=alt))

        def solve() -> float:
            return an.solve_power(effect_size=es, nobs=None, alpha=alpha, power=POWER, alternative=alt)
    else:
        an, k, ratio = TTestIndPower(), cells[0], cells[1] / cells[0]

        def power(n: float) -> float:
            return float(an.power(effect_size=es, nobs1=n * k, alpha=alpha, ratio=ratio, alternative=alt))

        def solve() -> float:
            return an.solve_power(effect_size=es, nobs1=None, alpha=alpha, power=POWER, ratio=ratio,
                                  alternative=alt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # statsmodels' root finder warns on its way to the answer
        if power(MAX_SEEDS) < POWER:
            return MAX_SEEDS + 1, ""
        if power(2) >= POWER:             # a t-test needs 2 seeds whatever the effect
            return 2, ""
        n = float(np.squeeze(solve()))
        if math.isfinite(n):
            return max(2, math.ceil(n / k - 1e-9)), ""
        # The root finder gave up: the smallest whole number of seeds reaching POWER (power rises with n).
        lo, hi = 2, MAX_SEEDS
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if power(mid) >= POWER else (mid + 1, hi)
        return lo, ""


def paper_effect(suite: Suite, cl: Claim) -> tuple[float | None, str]:
    """The paper's lhs - rhs (interaction: (a - b) - (c - d)) in fraction units and where it comes from."""
    if cl.paper_effect is not None:
        return cl.paper_effect, cl.paper_effect_note or "paper_effect given in the suite"
    v = {c: paper_fraction(suite.cell(c), cl.metric) for c in cl.lhs + cl.rhs}
    if any(math.isnan(x) for x in v.values()):
        return None, ""
    if cl.kind == "interaction":
        (a, b), (c, d) = cl.lhs, cl.rhs
        e = (v[a] - v[b]) - (v[c] - v[d])
    else:
        e = float(np.mean([v[c] for c in cl.lhs]) - np.mean([v[c] for c in cl.rhs]))
    return e, f"from the cells' paper values on {suite.paper.dataset}"


# ---- per claim ---------------------------------------------------------------------------------------------------

def _flag(v: pd.DataFrame, name: str) -> int:
    return int(v[name].sum()) if name in v else 0


def _side(runs: pd.DataFrame, vals: pd.DataFrame, cells: list[str]) -> tuple[np.ndarray, int, int, int]:
    """Values of the runs of `cells`; how many are censored, diverged and counted, diverged and left out."""
    mask = cell_of(runs).isin(cells).to_numpy()
    v = vals[mask]
    left_out = _flag(v[v["value"].isna()], "diverged")
    v = v[v["value"].notna()]
    return v["value"].to_numpy(float), _flag(v, "censored"), _flag(v, "diverged"), left_out


def _by_seed(runs: pd.DataFrame, vals: pd.DataFrame, cell: str) -> pd.DataFrame:
    mask = (cell_of(runs) == cell).to_numpy()
    v = vals[mask].assign(seed=seed_of(runs)[mask].to_numpy())
    v = v[v["value"].notna() & v["seed"].notna()]
    return v.drop_duplicates("seed").set_index("seed")


def _interaction_data(runs: pd.DataFrame, vals: pd.DataFrame, cl: Claim) -> dict:
    """Per-seed a - b and c - d over the seeds present in all four cells."""
    parts = [_by_seed(runs, vals, c) for c in cl.lhs + cl.rhs]
    seeds = sorted(set.intersection(*(set(p.index) for p in parts))) if parts else []
    every = sorted(set.union(*(set(p.index) for p in parts))) if parts else []
    a, b, c, d = (p.loc[seeds, "value"].to_numpy(float) for p in parts)
    used = pd.concat([p.loc[seeds] for p in parts]) if seeds else pd.DataFrame(columns=["value"])
    mask = cell_of(runs).isin(cl.lhs + cl.rhs).to_numpy()
    left_out = _flag(vals[mask][vals[mask]["value"].isna()], "diverged")
    return {"lhs": a - b, "rhs": c - d, "seeds": seeds, "dropped": [s for s in every if s not in seeds],
            "censored": _flag(used, "censored"), "diverged": _flag(used, "diverged"), "diverged_left_out": left_out}


def _explanation(cl: Claim, notes: dict[str, str], profile: str | None) -> tuple[str, str]:
    if cl.id in notes:
        return notes[cl.id], f"note of profile {profile}"
    if cl.if_fails:
        return cl.if_fails, "if_fails"
    return "", ""


def _samples(cl: Claim, runs: pd.DataFrame, vals: pd.DataFrame) -> dict:
    """What the claim's test runs on: x and y (order), or the per-seed a - b and c - d (interaction), with the
    counts of censored and diverged values."""
    if cl.kind == "interaction":
        ix = _interaction_data(runs, vals, cl)
        return {"x": ix["lhs"], "y": ix["rhs"], "d": ix["lhs"] - ix["rhs"], "cx": ix["censored"], "cy": 0,
                "diverged": ix["diverged"], "left_out": ix["diverged_left_out"], "ix": ix}
    x, cx, dx, lx = _side(runs, vals, cl.lhs)
    y, cy, dy, ly = _side(runs, vals, cl.rhs)
    return {"x": x, "y": y, "d": None, "cx": cx, "cy": cy, "diverged": dx + dy, "left_out": lx + ly, "ix": None}


def _test(cl: Claim, sm: dict) -> tuple[float, float, str, str]:
    """(p, p of the opposite, test description, what the opposite means); NaNs where no test is possible."""
    if cl.kind == "interaction":
        if len(sm["d"]) < 2:
            return math.nan, math.nan, "fewer than 2 seeds with all four cells: no test possible", ""
        return (*pvalues_interaction(sm["d"], cl.op, cl.margin), "opposite direction")
    if len(sm["x"]) < 2 or len(sm["y"]) < 2:
        return math.nan, math.nan, "n<2: no test possible", ""
    return pvalues(sm["x"], sm["y"], cl.op, cl.margin)


def _interval(cl: Claim, sm: dict, level: float = CI_LEVEL) -> tuple[float, float, float, str]:
    return effect_ci(sm["d"], level=level) if cl.kind == "interaction" else effect_ci(sm["x"], sm["y"], level)


def _seeds_complete(runs: pd.DataFrame, cells: list[str]) -> int:
    """How many seeds 0, 1, 2, ... every one of `cells` has in a row (a gap ends the count)."""
    seeds, cell = seed_of(runs), cell_of(runs)
    n = []
    for c in dict.fromkeys(cells):
        have = set(int(v) for v in seeds[(cell == c).to_numpy()].dropna())
        k = 0
        while k in have:
            k += 1
        n.append(k)
    return min(n) if n else 0


def _sequence(cl: Claim, runs: pd.DataFrame, vals: pd.DataFrame, design: Design) -> tuple[list, Decision, int]:
    """The claim's looks replayed from the runs: (p, p_opp) on seeds 0..n-1 for n = the design's looks while every
    cell of the claim has them all, the decision, and the seeds complete in all its cells."""
    from bench.report.sequential import decide

    have = _seeds_complete(runs, cl.lhs + cl.rhs)
    seeds = seed_of(runs).to_numpy(dtype=float, na_value=np.nan)
    looks = []
    for n in design.looks:
        if n > have:
            break
        keep = seeds < n
        p, q, _, _ = _test(cl, _samples(cl, runs[keep], vals[keep]))
        looks.append((p, q))
    return looks, decide(design, cl.alpha, test_of(cl), looks), have


def test_of(cl: Claim) -> str:
    """The sequential rule's name for the claim's test (its boundaries are calibrated per test)."""
    return "one-sample" if cl.kind == "interaction" else "welch"


def check_claims(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame | None = None,
                 profile: str | None = None, design: Design | None = None) -> list[dict]:
    """One dict per claim: id, text, verdict, p_value, detail, and the numbers behind them (fraction units), and
    `holm`: whether a verdict survives Holm's correction over the suite's judged claims. `profile` selects the
    profile's claim_notes. With a sequential `design`, each claim is judged by bench.report.sequential at the look
    that decided it (else its latest), on the seeds it had then; `sequential` says how."""
    prof = suite.profiles.get(profile) if profile else None
    notes = prof.claim_notes if prof else {}
    if design is not None and len(runs):
        # Seed order, whatever the store returned: the same runs give the same sums, so the same decisions.
        runs = runs.iloc[np.lexsort((seed_of(runs).fillna(-1).to_numpy(), cell_of(runs).astype(str).to_numpy()))]
    out, rejects = [], []
    for cl in suite.claims:
        missing = [c for c in dict.fromkeys(cl.lhs + cl.rhs) if prof and prof.cells and c not in prof.cells]
        if missing:
            # Not inconclusive: the profile never runs these cells, so no number of seeds would decide it here.
            out.append(_not_run(cl, missing, profile))
            rejects.append(None)
            continue
        vals = metric_values(runs, cl.metric, curves) if len(runs) else pd.DataFrame(columns=["value", "censored"])
        seq = None
        if design is not None:
            looks, dec, have = _sequence(cl, runs, vals, design)
            n_used = dec.n or have
            if n_used:
                keep = seed_of(runs).to_numpy(dtype=float, na_value=np.nan) < n_used
                runs_c, vals = runs[keep], vals[keep]
            else:
                runs_c = runs
            seq = (looks, dec)
        else:
            runs_c = runs
        sm = _samples(cl, runs_c, vals)
        p, p_opp, test, why = _test(cl, sm)
        if seq is None:
            verdict, p, test = ("inconclusive", p, test) if not why else _verdict(p, p_opp, cl.alpha, test, why)
        else:
            verdict = seq[1].verdict
        eff, lo, hi, ci_method = _interval(cl, sm)
        if cl.kind == "interaction":
            sd = float(np.std(sm["d"], ddof=1)) if len(sm["d"]) >= 2 else math.nan
            rec = _record(cl, sm["x"], sm["y"], sm["cx"], 0, verdict, p, test, interaction=sm["ix"])
        else:
            sd = pooled_sd(sm["x"], sm["y"])
            rec = _record(cl, sm["x"], sm["y"], sm["cx"], sm["cy"], verdict, p, test)
        target, target_src = paper_effect(suite, cl)
        rec.update(n_diverged=sm["diverged"], n_diverged_left_out=sm["left_out"], p_opp=p_opp)
        rec.update(effect=eff, ci_low=lo, ci_high=hi, ci_level=CI_LEVEL, ci_method=ci_method, sd=sd,
                   paper_effect=target, paper_effect_source=target_src)
        rec.update(_power(cl, verdict, target, target_src, eff, sd))
        rec.update(_power_cost(cl, runs_c, rec["power_seeds"]))
        text, src = _explanation(cl, notes, profile)
        shown = verdict in ("fails", "inconclusive")
        rec.update(explanation=text if shown else "", explanation_source=src if shown else "",
                   unexplained=verdict == "fails" and not text)
        if seq is not None:
            rec["sequential"] = _sequential_record(cl, sm, design, *seq)
        out.append(rec)
        rejects.append(_rejects(cl, rec, design, seq))
    from bench.report.sequential import holm

    kept = holm([{"verdict": r["verdict"], "alpha": r["alpha"], "rejects": f} for r, f in zip(out, rejects)])
    for r, k in zip(out, kept):
        r["holm"] = k
    return out


def _rejects(cl: Claim, rec: dict, design: Design | None, seq: tuple | None):
    """rejects(level) for Holm: would the claim's verdict (holds, or fails) stand at that level."""
    if rec["verdict"] not in ("holds", "fails"):
        return None
    col = 0 if rec["verdict"] == "holds" else 1
    if seq is None:
        p = rec["p_value"] if col == 0 else rec["p_opp"]
        return lambda level: p < level
    from bench.report.sequential import crosses

    looks, dec = seq
    ps = [lk[col] for lk in looks[:dec.look]]
    return lambda level: crosses(design, level, test_of(cl), ps)


def _sequential_record(cl: Claim, sm: dict, design: Design, looks: list, dec: Decision) -> dict:
    """The design and where the claim's sequence stands, with the repeated confidence interval at that look:
    the interval at level 1 - 2 x the look's boundary, which excludes the claim's null boundary exactly when the
    look decides (Jennison & Turnbull ch. 9)."""
    rec = {"status": dec.status, "n": dec.n, "look": dec.look, "looks": dec.looks, "first": design.looks[0],
           "max": design.max, "p": dec.p, "p_opp": dec.p_opp, "threshold": dec.threshold, "spent": dec.spent,
           "level": dec.level, "cp": dec.cp, "rci_level": math.nan, "rci_low": math.nan, "rci_high": math.nan}
    if dec.look and not math.isnan(dec.threshold):
        _, lo, hi, _ = _interval(cl, sm, level=1 - 2 * dec.threshold)
        rec.update(rci_level=1 - 2 * cl.alpha, rci_low=lo, rci_high=hi)
    return rec


def _not_run(cl: Claim, missing: list[str], profile: str | None) -> dict:
    nan = math.nan
    return {"id": cl.id, "text": cl.text, "kind": cl.kind, "verdict": "not run", "p_value": nan,
            "detail": f"profile {profile} does not run {', '.join(missing)}", "metric": cl.metric, "op": cl.op,
            "lhs": list(cl.lhs), "rhs": list(cl.rhs), "lhs_mean": nan, "rhs_mean": nan, "n_lhs": 0, "n_rhs": 0,
            "margin": cl.margin, "alpha": cl.alpha, "test": "none", "explanation": "", "unexplained": False}


def _power(cl: Claim, verdict: str, target: float | None, target_src: str, observed: float, sd: float) -> dict:
    out = {"power_seeds": None, "power_effect": math.nan, "power_basis": "", "power_note": ""}
    if verdict != "inconclusive":
        return out
    if target is not None:
        effect, basis = target, f"the paper's effect ({target_src})"
    else:
        effect, basis = observed, "at the observed effect (no paper effect known)"
    seeds, why = power_seeds(effect, sd, cl.op, cl.margin, cl.alpha, cl.kind, (len(cl.lhs), len(cl.rhs)))
    out.update(power_seeds=seeds, power_effect=effect, power_basis=basis, power_note=why)
    return out


def _power_cost(cl: Claim, runs: pd.DataFrame, seeds: int | None) -> dict:
    """What the power count would cost here: the seeds each of the claim's cells still lacks, in trials and in
    trial time at each cell's measured mean (one worker's time; workers running at once divide it)."""
    if seeds is None or not len(runs) or "metrics.wall_time_s" not in runs:
        return {}
    cells, cell = list(dict.fromkeys(cl.lhs + cl.rhs)), cell_of(runs)
    wall = pd.to_numeric(runs["metrics.wall_time_s"], errors="coerce")
    mean = [wall[cell == c].mean() for c in cells]
    if any(pd.isna(m) for m in mean):
        return {}
    more = [max(0, min(seeds, MAX_SEEDS + 1) - int((cell == c).sum())) for c in cells]
    return {"power_more_trials": sum(more), "power_more_s": float(sum(n * m for n, m in zip(more, mean)))}


def _record(cl: Claim, x: np.ndarray, y: np.ndarray, cx: int, cy: int, verdict: str, p: float, test: str,
            interaction: dict | None = None) -> dict:
    k, u = scale(cl.metric), unit_label(cl.metric)
    mx = float(np.mean(x)) if len(x) else math.nan
    my = float(np.mean(y)) if len(y) else math.nan
    unit = (" " + u) if u else ""

    def side(name: str, cells: list[str], mean: float, n: int, cens: int) -> str:
        c = f", {cens} censored" if cens else ""
        return f"{name} {'+'.join(cells)}: mean {fmt_num(mean * k, cl.metric)}{unit} (n={n}{c})"

    if interaction is None:
        parts = [test, side("lhs", cl.lhs, mx, len(x), cx), side("rhs", cl.rhs, my, len(y), cy)]
    else:
        (a, b), (c, d) = cl.lhs, cl.rhs
        seeds = interaction["seeds"]
        parts = [test, f"lhs {a} − {b}: mean {fmt_num(mx * k, cl.metric)}{unit}",
                 f"rhs {c} − {d}: mean {fmt_num(my * k, cl.metric)}{unit}",
                 f"n={len(seeds)} seeds with all four cells ({', '.join(map(str, seeds)) or 'none'})"]
        if interaction["dropped"]:
            parts.append(f"seeds {', '.join(map(str, interaction['dropped']))} left out: missing in a cell")
        if cx:
            parts.append(f"{cx} censored value(s) among them (lower bounds)")
    if cl.margin or cl.op in ("<=", ">=", "~="):
        parts.append(f"margin {fmt_num(cl.margin * k, cl.metric)}{unit}")
    parts.append(f"alpha {cl.alpha:g}")
    if not math.isnan(p):
        parts.append(f"p={p:.3g}")
    if interaction is None:
        if cx and cl.op in ("<", "<="):
            parts.append("censored lhs values are lower bounds: 'lhs smaller' is favoured")
        if cy and cl.op in (">", ">="):
            parts.append("censored rhs values are lower bounds: 'lhs larger' is favoured")
    return {
        "id": cl.id, "text": cl.text, "kind": cl.kind, "verdict": verdict, "p_value": p, "detail": "; ".join(parts),
        "metric": cl.metric, "op": cl.op, "lhs": list(cl.lhs), "rhs": list(cl.rhs),
        "lhs_mean": mx, "rhs_mean": my, "n_lhs": len(x), "n_rhs": len(y), "margin": cl.margin, "alpha": cl.alpha,
        "test": test, "seeds": list(interaction["seeds"]) if interaction else None,
    }
