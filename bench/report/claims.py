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

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from bench.report.tables import cell_of, fmt_num, metric_values, paper_fraction, scale, seed_of, unit_label
from bench.spec import Claim, Suite

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
    return _verdict(p, p_opp, alpha, desc, "outside ±margin" if op == "~=" else "opposite direction")


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


def judge_interaction(d: np.ndarray, op: str, margin: float, alpha: float) -> tuple[str, float, str]:
    """(verdict, p, test) for the per-seed differences d = (a - b) - (c - d) against 'd op 0' (± margin)."""
    d = np.asarray(d, float)
    if op not in ("<", ">", "<=", ">="):
        raise ValueError(f"interaction claims take <, >, <=, >=, not {op!r}")
    if len(d) < 2:
        return "inconclusive", math.nan, "fewer than 2 seeds with all four cells: no test possible"
    alt = _direction(op)
    opp = "greater" if alt == "less" else "less"
    x = d - _shift(op, margin)
    p, name = _one_sample(x, alt)
    p_opp, _ = _one_sample(x, opp)
    bound = {"<": "< 0", ">": "> 0", "<=": "< +margin", ">=": "> −margin"}[op]
    desc = f"{name}, one-sided on per-seed (a − b) − (c − d) {bound}"
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


def check_claims(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame | None = None,
                 profile: str | None = None) -> list[dict]:
    """One dict per claim: id, text, verdict, p_value, detail, and the numbers behind them (fraction units).
    `profile` selects the profile's claim_notes."""
    prof = suite.profiles.get(profile) if profile else None
    notes = prof.claim_notes if prof else {}
    out = []
    for cl in suite.claims:
        missing = [c for c in dict.fromkeys(cl.lhs + cl.rhs) if prof and prof.cells and c not in prof.cells]
        if missing:
            # Not inconclusive: the profile never runs these cells, so no number of seeds would decide it here.
            out.append(_not_run(cl, missing, profile))
            continue
        vals = metric_values(runs, cl.metric, curves) if len(runs) else pd.DataFrame(columns=["value", "censored"])
        target, target_src = paper_effect(suite, cl)
        if cl.kind == "interaction":
            ix = _interaction_data(runs, vals, cl)
            diffs = ix["lhs"] - ix["rhs"]
            verdict, p, test = judge_interaction(diffs, cl.op, cl.margin, cl.alpha)
            eff, lo, hi, ci_method = effect_ci(diffs)
            sd = float(np.std(diffs, ddof=1)) if len(diffs) >= 2 else math.nan
            rec = _record(cl, ix["lhs"], ix["rhs"], ix["censored"], 0, verdict, p, test, interaction=ix)
            rec.update(n_diverged=ix["diverged"], n_diverged_left_out=ix["diverged_left_out"])
        else:
            x, cx, dx, lx = _side(runs, vals, cl.lhs)
            y, cy, dy, ly = _side(runs, vals, cl.rhs)
            verdict, p, test = judge(x, y, cl.op, cl.margin, cl.alpha)
            eff, lo, hi, ci_method = effect_ci(x, y)
            sd = pooled_sd(x, y)
            rec = _record(cl, x, y, cx, cy, verdict, p, test)
            rec.update(n_diverged=dx + dy, n_diverged_left_out=lx + ly)
        rec.update(effect=eff, ci_low=lo, ci_high=hi, ci_level=CI_LEVEL, ci_method=ci_method, sd=sd,
                   paper_effect=target, paper_effect_source=target_src)
        rec.update(_power(cl, verdict, target, target_src, eff, sd))
        text, src = _explanation(cl, notes, profile)
        shown = verdict in ("fails", "inconclusive")
        rec.update(explanation=text if shown else "", explanation_source=src if shown else "",
                   unexplained=verdict == "fails" and not text)
        out.append(rec)
    return out


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
