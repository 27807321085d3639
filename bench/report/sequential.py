"""Sequential claim tests: add seeds until a claim is decided, with the false-positive rate held at its alpha.

The rule is a group-sequential design with Lan-DeMets alpha spending of the O'Brien-Fleming type,
    alpha(t) = 2 (1 - Phi(z_(1 - alpha/2) / sqrt(t))),   t = n / N  (the information fraction),
(Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70:659-663; Jennison &
Turnbull 2000, "Group Sequential Methods with Applications to Clinical Trials", ch. 7), with one look after every
seed, from the first n0 seeds per cell up to a maximum N. The one-sided boundaries are computed for the z
statistic's Brownian-motion process by recursive numerical integration (Jennison & Turnbull ch. 19) and carried
to each look's p-value from the very tests claims.py runs at fixed n (Welch; the one-sample t on per-seed
differences; both shifted by a margin; TOST): a look decides when its p-value is below the look's nominal level
(Jennison & Turnbull sec. 3.8, the "significance level approach").

Small n needs one correction. With a look after every single seed and t statistics of 1-10 degrees of freedom,
that approach overshoots: simulated, the z boundaries at alpha = 0.05 gave the one-sample t 0.055-0.058 and Welch
(sd 10:1) up to 0.063 over all looks. So the design runs at a calibrated level alpha' <= alpha: the largest at
which the t-tests' null crossing rate over all looks, simulated once per design (CALIBRATION_SIMS sequences, a
fixed generator seed; Welch at sd ratios 1, 3 and 10, the one-sample t exactly, its null law being free of the
sd), is at most alpha. tests/test_sequential.py checks the result on fresh simulations.

Why this for 2 to 30 seeds: the maximum is small and known, and spending over n/N uses all of it, where an
anytime-valid test (Howard et al. 2021; Ramdas et al. 2023) pays for validity at every n up to infinity and is
loose at n <= 30. It keeps the exact tests the fixed-n report uses, including Welch's unequal variances, for which
no exact e-process is known. O'Brien-Fleming spending puts almost nothing on the first looks, where a t with 1-3
degrees of freedom is least like its normal limit, and leaves the last look's level close to alpha, so a claim that
needs all N seeds loses little power against the fixed-N test (Pocock spending spends evenly, early looks included).

Futility: from max(FUTILITY_FROM, FUTILITY_FRACTION x N) seeds per cell on, when the conditional power of a
decision by N under the observed trend (Lan, Simon & Halperin 1982; Jennison & Turnbull ch. 10), for 'holds' and
for 'fails' alike, is below FUTILITY_CP, the claim is futile and gets no more seeds. Judged earlier, the trend of a
few seeds is mostly noise: simulated at an effect of 1 sd (Welch, looks at 2..28), power was 0.79 with futility
from 4 seeds on, 0.92 from N/3 on, 0.97 without futility. Futility only ever ends a sequence without a verdict,
so it cannot raise the false-positive rate (the boundaries ignore it: a non-binding rule).

Pure numpy/scipy: the report judges finished runs with it and the driver decides which cells get the next seed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

SPENDING = "Lan-DeMets O'Brien-Fleming-type alpha spending"
FUTILITY_CP = 0.10          # conditional power below which a claim is futile
FUTILITY_FROM = 4           # futility is judged from this many seeds per cell on ...
FUTILITY_FRACTION = 1 / 3   # ... and from this fraction of the maximum: earlier, the trend is mostly noise
GRID = 200                  # integration points per look (boundaries agree with 1200 points to 1e-5)
Z_CAP = 30.0                # a boundary where the spending underflows: never crossed
TESTS = ("welch", "one-sample")
CALIBRATION_SIMS = 40_000
CALIBRATION_SEED = 18
WELCH_SD_RATIOS = (1.0, 3.0, 10.0)


# ---- boundaries -----------------------------------------------------------------------------------------------

def spend(t: np.ndarray | float, alpha: float) -> np.ndarray:
    """Cumulative one-sided alpha spent by information fraction t (O'Brien-Fleming type; alpha at t = 1)."""
    t = np.asarray(t, float)
    with np.errstate(divide="ignore"):
        return np.where(t > 0, 2 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(t)), 0.0)


def _simpson(a: float, b: float, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and Simpson weights on [a, b] (m odd)."""
    x = np.linspace(a, b, m)
    w = np.full(m, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return x, w * (b - a) / (m - 1) / 3


@lru_cache(maxsize=256)
def z_bounds(fracs: tuple[float, ...], alpha: float) -> np.ndarray:
    """One-sided upper z boundaries at the information fractions `fracs` (increasing, last 1): under H0,
    P(first crossing at look k) = spend(t_k) - spend(t_(k-1)).

    Works on the score S(t) = Z(t) sqrt(t), a Brownian motion: the sub-density of S at look k on the paths not
    stopped before is the previous one (cut at its boundary) convolved with the N(0, dt) increment. The crossing
    probability at a candidate boundary c is that convolution's upper tail, exact in c, which a root finder solves."""
    t = np.asarray(fracs, float)
    a = spend(t, alpha)
    out = np.empty(len(t))
    out[0] = min(stats.norm.isf(a[0]), Z_CAP)
    x, w = _simpson(-8.0 * math.sqrt(t[0]), out[0] * math.sqrt(t[0]), GRID + 1)
    f = np.exp(-x ** 2 / (2 * t[0])) / math.sqrt(2 * math.pi * t[0])
    for k in range(1, len(t)):
        sd = math.sqrt(t[k] - t[k - 1])
        fw = f * w
        target = a[k] - a[k - 1]

        def excess(c: float) -> float:
            return float(fw @ special.ndtr((x - c) / sd)) - target

        hi = out[k - 1] * math.sqrt(t[k - 1]) + 10 * sd
        s = optimize.brentq(excess, -10.0, hi, xtol=1e-10) if target > 0 else hi
        out[k] = s / math.sqrt(t[k])
        y, wy = _simpson(-8.0 * math.sqrt(t[k]), s, GRID + 1)
        f = np.exp(-((y[:, None] - x[None, :]) / sd) ** 2 / 2) @ fw / (sd * math.sqrt(2 * math.pi))
        x, w = y, wy
    return out


# ---- the tests, vectorised over simulated sequences ------------------------------------------------------------

def welch_p(x: np.ndarray, y: np.ndarray, shift: float, alternative: str) -> np.ndarray:
    """scipy.stats.ttest_ind(x - shift, y, equal_var=False, alternative=...).pvalue over the last axis, row-wise."""
    nx, ny = x.shape[-1], y.shape[-1]
    vx, vy = x.var(axis=-1, ddof=1) / nx, y.var(axis=-1, ddof=1) / ny
    t = (x.mean(axis=-1) - y.mean(axis=-1) - shift) / np.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (nx - 1) + vy ** 2 / (ny - 1))
    return stats.t.sf(t, df) if alternative == "greater" else stats.t.cdf(t, df)


def one_sample_p(d: np.ndarray, shift: float, alternative: str) -> np.ndarray:
    """scipy.stats.ttest_1samp(d - shift, 0, alternative=...).pvalue over the last axis, row-wise."""
    n = d.shape[-1]
    t = (d.mean(axis=-1) - shift) / (d.std(axis=-1, ddof=1) / math.sqrt(n))
    return stats.t.sf(t, n - 1) if alternative == "greater" else stats.t.cdf(t, n - 1)


# ---- calibration: the level at which the t-tests keep alpha over all looks -------------------------------------

@lru_cache(maxsize=16)
def _null_pvalues(looks: tuple[int, ...], test: str) -> tuple[np.ndarray, ...]:
    """Null p-values (sims x looks) of the test on seeds 0..n-1 of each simulated sequence; for Welch one matrix
    per sd ratio of the two sides."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    n_max = looks[-1]
    if test == "one-sample":
        d = rng.standard_normal((CALIBRATION_SIMS, n_max))
        return (np.stack([one_sample_p(d[:, :n], 0.0, "greater") for n in looks], axis=1).astype(np.float32),)
    out = []
    for r in WELCH_SD_RATIOS:
        x = rng.normal(0.0, r, (CALIBRATION_SIMS, n_max))
        y = rng.standard_normal((CALIBRATION_SIMS, n_max))
        out.append(np.stack([welch_p(x[:, :n], y[:, :n], 0.0, "greater") for n in looks], axis=1).astype(np.float32))
    return tuple(out)


@lru_cache(maxsize=512)
def calibrated_level(first: int, n_max: int, alpha: float, test: str) -> float:
    """The largest level alpha' <= alpha (to 0.5%) whose boundaries the test's simulated null sequences cross
    with probability at most alpha."""
    d = Design(first, n_max)
    looks, fracs = tuple(d.looks), d.fractions()
    null = _null_pvalues(looks, test)

    def rate(a: float) -> float:
        thr = stats.norm.sf(z_bounds(fracs, a)).astype(np.float32)
        return max(float((p < thr).any(axis=1).mean()) for p in null)

    if rate(alpha) <= alpha:
        return alpha
    lo, hi = alpha / 4, alpha
    while hi / lo > 1.005:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if rate(mid) <= alpha else (lo, mid)
    return lo


# ---- the design and one claim's decision ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """Looks at n = first, first + 1, ..., max seeds per cell (never before 2: a t-test needs two)."""
    first: int
    max: int

    @property
    def looks(self) -> list[int]:
        return list(range(max(self.first, 2), self.max + 1))

    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.max for n in self.looks)

    def level(self, alpha: float, test: str) -> float:
        """The calibrated level the boundaries are computed at (see the module's docstring)."""
        if test not in TESTS:
            raise ValueError(f"unknown test {test!r}")
        return calibrated_level(self.first, self.max, round(alpha, 12), test) if self.looks else alpha

    def z(self, alpha: float, test: str) -> np.ndarray:
        return z_bounds(self.fractions(), self.level(alpha, test)) if self.looks else np.empty(0)

    def thresholds(self, alpha: float, test: str) -> np.ndarray:
        """Nominal one-sided p-value boundary at each look."""
        return stats.norm.sf(self.z(alpha, test))

    def spent(self, alpha: float, test: str) -> np.ndarray:
        """Alpha spent by each look, at the calibrated level."""
        return spend(np.asarray(self.fractions()), self.level(alpha, test))

    def describe(self) -> str:
        return f"a look after every seed from {max(self.first, 2)} to {self.max} seeds per cell"


STATUS = ("holds", "fails", "futile", "max", "open")


@dataclass(frozen=True)
class Decision:
    """Where a claim's sequence stands. status: holds or fails (decided), futile (stopped: a decision by the
    maximum is out of reach), max (the maximum reached undecided), open (running), waiting (before the first
    look)."""
    status: str
    n: int                   # seeds per cell at the deciding (else the latest) look; 0 before the first
    look: int                # 1-based index of that look; 0 before the first
    looks: int               # looks the design plans
    p: float = math.nan      # the claim's p-value at that look
    p_opp: float = math.nan  # the opposite test's
    threshold: float = math.nan  # the look's nominal boundary
    spent: float = math.nan      # alpha spent by that look
    level: float = math.nan      # the calibrated level of the whole design
    cp: float = math.nan         # conditional power of a decision by the maximum (the larger of both directions)

    @property
    def closed(self) -> bool:
        return self.status in ("holds", "fails", "futile", "max")

    @property
    def verdict(self) -> str:
        return self.status if self.status in ("holds", "fails") else "inconclusive"


def conditional_power(p: np.ndarray | float, frac: np.ndarray | float, z_final: float) -> np.ndarray:
    """P(Z at the last look > z_final | this look) when the drift is the one seen so far: with Z = the p-value's
    normal score, Z(1) ~ N(Z / sqrt(t), 1 - t) (Jennison & Turnbull sec. 10.2). NaN at t = 1."""
    t = np.asarray(frac, float)
    z = stats.norm.isf(np.clip(p, 1e-300, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t < 1, stats.norm.cdf((z / np.sqrt(t) - z_final) / np.sqrt(np.maximum(1 - t, 1e-12))),
                        np.nan)


def decide_many(design: Design, alpha: float, test: str, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """The rule over sequences (rows) of looks (columns, n = looks[0], looks[0] + 1, ...; fewer columns than the
    design plans while a sequence runs), given the claim's p-values p and the opposite test's q: (index into
    STATUS, column of the stopping look, the last one for an open sequence). At each look, in order: p below the
    boundary holds; q below it fails; the last planned look ends at the maximum; conditional power below
    FUTILITY_CP (from FUTILITY_FROM seeds on) is futile. A NaN p-value decides nothing."""
    looks = np.asarray(design.looks)
    p, q = np.atleast_2d(np.asarray(p, float)), np.atleast_2d(np.asarray(q, float))
    k = min(p.shape[1], len(looks))
    if k == 0:
        return np.full(len(p), STATUS.index("open")), np.zeros(len(p), int)
    p, q = p[:, :k], q[:, :k]
    zb = design.z(alpha, test)
    thr = stats.norm.sf(zb[:k])
    fr = np.asarray(design.fractions())[:k]
    cp = np.fmax(conditional_power(p, fr, zb[-1]), conditional_power(q, fr, zb[-1]))
    holds, fails = p < thr, q < thr
    last = np.zeros(k, bool)
    last[-1] = k == len(looks)
    futile = (looks[:k] >= FUTILITY_FROM) & (fr >= FUTILITY_FRACTION - 1e-9) & (cp < FUTILITY_CP)
    stop = holds | fails | last | futile
    at = np.where(stop.any(axis=1), stop.argmax(axis=1), k - 1)
    r = np.arange(len(p))
    code = np.select([holds[r, at], fails[r, at], last[at], futile[r, at]],
                     [STATUS.index(s) for s in ("holds", "fails", "max", "futile")], STATUS.index("open"))
    return code, at


def decide(design: Design, alpha: float, test: str, pvalues: list[tuple[float, float]]) -> Decision:
    """One claim's decision from its looks' (p, p_opp), n = design.looks[0], +1, ... in order."""
    looks = design.looks
    if not pvalues or not looks:
        return Decision("waiting", 0, 0, len(looks))
    pv = np.asarray(pvalues, float)[:len(looks)]
    code, at = decide_many(design, alpha, test, pv[None, :, 0], pv[None, :, 1])
    k = int(at[0])
    zb = design.z(alpha, test)
    p, q = float(pv[k, 0]), float(pv[k, 1])
    fr = design.fractions()[k]
    cp = float(np.fmax(conditional_power(p, fr, zb[-1]), conditional_power(q, fr, zb[-1])))
    return Decision(STATUS[int(code[0])], looks[k], k + 1, len(looks), p, q, float(stats.norm.sf(zb[k])),
                    float(design.spent(alpha, test)[k]), design.level(alpha, test), cp)


def crosses(design: Design, level: float, test: str, pvalues: list[float]) -> bool:
    """Whether one direction's p-values (looks in order) cross the design's boundaries at `level` somewhere."""
    thr = design.thresholds(level, test)
    return any(p < thr[k] for k, p in enumerate(pvalues[:len(thr)]))


# ---- Holm over a suite's claims -------------------------------------------------------------------------------

def holm(claims: list[dict]) -> list[bool | None]:
    """Whether each decided claim's verdict survives Holm's step-down correction (Holm 1979, "A simple
    sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70) over the claims that were judged
    (holds, fails or inconclusive; 'not run' ones were never tested). None where there is no verdict to keep.

    Each claim dict has verdict, alpha and rejects(level) -> bool: would its verdict stand at that level. Step r
    tests the claims not yet rejected at alpha_i / (m - r) and ends when it rejects none: Holm's procedure, with
    per-claim alphas. A fixed-n claim rejects when its p-value is at most the level; a sequential one when the
    design run at that level would have crossed its boundary by the look that decided it."""
    judged = [i for i, c in enumerate(claims) if c["verdict"] in ("holds", "fails", "inconclusive")]
    m = len(judged)
    left = [i for i in judged if claims[i]["verdict"] in ("holds", "fails")]
    kept: set[int] = set()
    while left:
        now = {i for i in left if claims[i]["rejects"](claims[i]["alpha"] / (m - len(kept)))}
        if not now:
            break
        kept |= now
        left = [i for i in left if i not in now]
    return [i in kept if claims[i]["verdict"] in ("holds", "fails") else None for i in range(len(claims))]


# ---- simulation: the rule's error rates, power and cost ------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """A claim kind to simulate: its test, operator and margin; the effect (lhs - rhs, or the mean per-seed
    difference) at the null's boundary and under the alternative, in units of the seeds' sd."""
    name: str
    kind: str          # order (Welch) | interaction (one-sample t on per-seed differences)
    op: str
    margin: float
    null: float
    alt: float
    sd_lhs: float = 1.0
    sd_rhs: float = 1.0

    @property
    def test(self) -> str:
        return "one-sample" if self.kind == "interaction" else "welch"

    @property
    def sd(self) -> float:
        """The sd the effect is measured in: pooled over the two sides for Welch."""
        return math.sqrt((self.sd_lhs ** 2 + self.sd_rhs ** 2) / 2) if self.kind == "order" else self.sd_lhs


# Alternatives: one sd away from the null's boundary, in the claimed direction (for '~=': 1 sd inside each bound).
SCENARIOS = (
    Scenario("order '>' (Welch)", "order", ">", 0.0, 0.0, 1.0),
    Scenario("order '>' (Welch), sd 3:1", "order", ">", 0.0, 0.0, math.sqrt(5.0), 3.0, 1.0),
    Scenario("interaction '>' (one-sample t)", "interaction", ">", 0.0, 0.0, 1.0),
    Scenario("non-inferiority '<=' (Welch, margin 0.5)", "order", "<=", 0.5, 0.5, -0.5),
    Scenario("non-inferiority '>=' (interaction, margin 0.5)", "interaction", ">=", 0.5, -0.5, 0.5),
    Scenario("equivalence '~=' (TOST, margin 1)", "order", "~=", 1.0, 1.0, 0.0),
)


def scenario_pvalues(sc: Scenario, effect: float, looks: list[int], sims: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(p, p_opp) of `sims` sequences at each look: the claim's test and the opposite one as claims.judge and
    claims.judge_interaction compute them, on seeds 0..n-1 of each simulated sequence."""
    n_max, m = looks[-1], sc.margin
    shift = {">": 0.0, "<": 0.0, "<=": m, ">=": -m, "~=": 0.0}[sc.op]
    alt = "less" if sc.op in ("<", "<=") else "greater"
    opp = "greater" if alt == "less" else "less"
    if sc.kind == "interaction":
        d = rng.normal(effect, sc.sd_lhs, (sims, n_max))
        pairs = [(one_sample_p(d[:, :n], shift, alt), one_sample_p(d[:, :n], shift, opp)) for n in looks]
    else:
        x = rng.normal(effect, sc.sd_lhs, (sims, n_max))
        y = rng.normal(0.0, sc.sd_rhs, (sims, n_max))
        pairs = []
        for n in looks:
            a, b = x[:, :n], y[:, :n]
            if sc.op == "~=":   # TOST: both bounds inside (p = the larger); outside either bound (the smaller)
                pairs.append((np.maximum(welch_p(a, b, -m, "greater"), welch_p(a, b, m, "less")),
                              np.minimum(welch_p(a, b, m, "greater"), welch_p(a, b, -m, "less"))))
            else:
                pairs.append((welch_p(a, b, shift, alt), welch_p(a, b, shift, opp)))
    return np.stack([p for p, _ in pairs], axis=1), np.stack([q for _, q in pairs], axis=1)


def fixed_n(sc: Scenario, alpha: float) -> int:
    """Seeds per cell the fixed-n report's power analysis asks for: 80% power at the alternative."""
    from bench.report.claims import power_seeds   # statsmodels: only for this comparison

    n, why = power_seeds(sc.alt, sc.sd, sc.op, sc.margin, alpha, sc.kind)
    if n is None:
        raise ValueError(why)
    return n


def fixed_n_simulated(sc: Scenario, alpha: float, sims: int = 10_000, seed: int = 1) -> int:
    """The same count from simulating the fixed-n test itself (TOST's power analysis is an approximation)."""
    looks = list(range(2, 4 * fixed_n(sc, alpha) + 1))
    p, _ = scenario_pvalues(sc, sc.alt, looks, sims, np.random.default_rng(seed))
    power = (p < alpha).mean(axis=0)
    return looks[int(np.argmax(power >= 0.8))] if (power >= 0.8).any() else looks[-1]


def power_matched_max(sc: Scenario, first: int, alpha: float, sims: int = 2_000) -> int:
    """The smallest maximum whose rule has 80% power at the alternative (simulated): the sequential design that
    matches the fixed-n test's power, for comparing their costs."""
    lo, hi = max(first, fixed_n(sc, alpha)), 3 * fixed_n(sc, alpha)
    while lo < hi:
        mid = (lo + hi) // 2
        if simulate(sc, Design(first, mid), alpha, sims, seed=2)["alt"]["holds"] >= 0.8:
            hi = mid
        else:
            lo = mid + 1
    return lo


def simulate(sc: Scenario, design: Design, alpha: float = 0.05, sims: int = 10_000, seed: int = 0) -> dict:
    """The rule over `sims` simulated sequences at the null's boundary and at the alternative (a fixed generator
    seed, other than the calibration's: the same numbers every time, independent of the boundaries)."""
    rng = np.random.default_rng(seed)
    looks = np.asarray(design.looks)
    out: dict = {"scenario": sc, "design": design, "alpha": alpha, "sims": sims,
                 "level": design.level(alpha, sc.test), "mc_se": math.sqrt(alpha * (1 - alpha) / sims)}
    for which, effect in (("null", sc.null), ("alt", sc.alt)):
        p, q = scenario_pvalues(sc, effect, design.looks, sims, rng)
        code, at = decide_many(design, alpha, sc.test, p, q)
        n_stop = looks[at]
        out[which] = {"effect": effect, **{s: float(np.mean(code == i)) for i, s in enumerate(STATUS)},
                      "seeds": float(n_stop.mean()),
                      # Looking after every seed and stopping at the first p < alpha: what the rule prevents.
                      "naive": float(np.mean((p < alpha).any(axis=1))),
                      # The boundaries alone, futility ignored: the non-binding guarantee.
                      "no_futility": float(np.mean((p < design.thresholds(alpha, sc.test)).any(axis=1)))}
    return out


def tables(results: list[dict]) -> str:
    """The two tables `--simulate` prints: error rates under the null; power and cost under the alternative.
    Each result is simulate()'s, with fixed_n and fixed_n_sim added."""
    r0 = results[0]
    L = [f"{r0['sims']:,} simulated sequences per row and hypothesis, alpha {r0['alpha']:g}, futility below "
         f"{FUTILITY_CP:.0%} conditional power from max({FUTILITY_FROM}, {FUTILITY_FRACTION:.2g} N) seeds on. "
         f"Monte Carlo SE of a rate at alpha: {r0['mc_se']:.4f}.", "",
         "Under the null (effect at the claim's boundary: 0, or the margin):", "",
         "| claim kind | seeds per cell | level alpha' | false positives (holds) | alpha + 3 SE | fails | futile | "
         "boundaries only (no futility) | naive: stop at the first p < alpha | mean seeds |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, n = r["design"], r["null"]
        L.append(f"| {r['scenario'].name} | {d.looks[0]}..{d.max} | {r['level']:.4f} | {n['holds']:.4f} ± "
                 f"{r['mc_se']:.4f} | {r['alpha'] + 3 * r['mc_se']:.4f} | {n['fails']:.4f} | {n['futile']:.3f} | "
                 f"{n['no_futility']:.4f} | {n['naive']:.4f} | {n['seeds']:.2f} |")
    L += ["", "Under the alternative (1 sd from the null's boundary, in the claimed direction):", "",
          "| claim kind | seeds per cell | power (holds) | futile | undecided at the max | mean seeds at the stop | "
          "fixed n for 80% power: power analysis / simulated | saving against those |",
          "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, a = r["design"], r["alt"]
        L.append(f"| {r['scenario'].name} | {d.looks[0]}..{d.max} | {a['holds']:.3f} | {a['futile']:.3f} | "
                 f"{a['max']:.3f} | {a['seeds']:.2f} | {r['fixed_n']} / {r['fixed_n_sim']} | "
                 f"{1 - a['seeds'] / r['fixed_n']:+.0%} / {1 - a['seeds'] / r['fixed_n_sim']:+.0%} |")
    for key, what in (("fixed_n", "the power analysis's count"), ("fixed_n_sim", "the simulated fixed-n count")):
        alt = np.mean([1 - r["alt"]["seeds"] / r[key] for r in results])
        null = np.mean([1 - r["null"]["seeds"] / r[key] for r in results])
        L.append(f"\nMean saving in seeds per cell against {what}: {alt:.0%} under the alternative, {null:.0%} "
                 f"under the null.")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report.sequential",
                                 description="the sequential rule's error rates, power and cost, by simulation")
    ap.add_argument("--simulate", action="store_true", help="simulate every claim kind and print both tables")
    ap.add_argument("--first", type=int, default=2, help="seeds per cell at the first look (default 2)")
    ap.add_argument("--max", type=int, default=0,
                    help="maximum seeds per cell (default: per claim kind, the smallest with 80%% power, so the "
                         "costs compare at the fixed-n test's power)")
    ap.add_argument("--sims", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.05)
    a = ap.parse_args(argv)
    if not a.simulate:
        ap.print_help()
        return 2
    if a.first < 1 or (a.max and a.max < max(a.first, 2)) or a.sims < 100 or not 0 < a.alpha < 1:
        print("bench: error: need --first >= 1, --max >= max(first, 2), --sims >= 100 and 0 < --alpha < 1",
              file=sys.stderr)
        return 2
    t0 = time.time()
    results = []
    for sc in SCENARIOS:
        n_max = a.max or power_matched_max(sc, a.first, a.alpha)
        r = simulate(sc, Design(a.first, n_max), a.alpha, a.sims)
        results.append({**r, "fixed_n": fixed_n(sc, a.alpha), "fixed_n_sim": fixed_n_simulated(sc, a.alpha, a.sims)})
    print(tables(results))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
