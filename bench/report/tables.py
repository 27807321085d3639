"""Runs -> numbers: which runs count, each run's value of a metric, per-cell statistics, the paper-layout table.

Pure pandas: everything here takes search_runs-shaped DataFrames (metrics.*, params.*, tags.*) and the long curves
table of `bench.track.load_curves` (run_id, metric, step, value), so it is tested without MLflow.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from bench.spec import Cell, Suite, get_profile

TAG = "tags.bench."
ITERS_TO = re.compile(r"^iters_to:(\w+)<=([0-9.]+)$")
# z: (paper - our mean) / our sd; frac_above: the fraction of our seeds above the paper's value (both need n >= 2).
STAT_FIELDS = ("n", "mean", "sd", "median", "min", "max", "paper", "delta", "z", "frac_above")


# ---- metrics and units ------------------------------------------------------------------------------------------

def is_percent(metric: str) -> bool:
    """Errors and accuracies are fractions in MLflow and percent in papers; losses and iteration counts are neither."""
    return not metric.startswith("iters_to:") and (metric.endswith("_error") or metric.endswith("_accuracy"))


def scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def unit_label(metric: str) -> str:
    if is_percent(metric):
        return "%"
    return "iterations" if metric.startswith("iters_to:") else ""


def curve_metrics(metric: str) -> tuple[str, ...]:
    """Curves a metric needs (iters_to is derived from one)."""
    m = ITERS_TO.match(metric)
    return (m.group(1),) if m else ()


def iters_to(curves: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
    """Per run: the first step whose value is <= threshold.

    A run that never gets there is censored: its value is its last step + 1, a lower bound of the truth.
    Returns DataFrame[run_id -> value, censored].
    """
    if curves is None or curves.empty:
        return pd.DataFrame({"value": pd.Series(dtype=float), "censored": pd.Series(dtype=bool)})
    c = curves[curves["metric"] == metric].sort_values(["run_id", "step"])
    out = {}
    for rid, g in c.groupby("run_id", sort=False):
        hit = g.loc[g["value"] <= threshold, "step"]
        out[rid] = (float(hit.iloc[0]), False) if len(hit) else (float(g["step"].max()) + 1, True)
    df = pd.DataFrame.from_dict(out, orient="index", columns=["value", "censored"])
    df.index.name = "run_id"
    return df


def metric_values(runs: pd.DataFrame, metric: str, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run (same index as `runs`): value (fraction units for errors), censored (iters_to only),
    diverged (the run's loss became NaN/inf: its value follows `diverged_value`)."""
    out = pd.DataFrame(index=runs.index)
    out["censored"] = False
    m = ITERS_TO.match(metric)
    if m:
        it = iters_to(curves, m.group(1), float(m.group(2)))
        rid = runs["run_id"] if "run_id" in runs else pd.Series(index=runs.index, dtype=object)
        out["value"] = rid.map(it["value"]).astype(float)
        out["censored"] = rid.map(it["censored"]).eq(True)  # unmatched runs map to NaN: not censored
    elif f"metrics.{metric}" in runs:
        out["value"] = pd.to_numeric(runs[f"metrics.{metric}"], errors="coerce")
    elif metric.endswith("_accuracy") and f"metrics.{metric[:-9]}_error" in runs:
        # The trainer logs errors; accuracy is their complement (Highway reports accuracy).
        out["value"] = 1.0 - pd.to_numeric(runs[f"metrics.{metric[:-9]}_error"], errors="coerce")
    else:
        out["value"] = np.nan
    div = is_diverged(runs)
    out["diverged"] = div.to_numpy()
    if div.any():
        # A diverged run's metrics.* hold its last epoch before the NaN, not a result: replace them.
        for i in np.flatnonzero(div.to_numpy()):
            row = runs.iloc[i]
            v, cens = diverged_value(row, metric, out["value"].iat[i], bool(out["censored"].iat[i]))
            out.iat[i, out.columns.get_loc("value")] = v
            out.iat[i, out.columns.get_loc("censored")] = cens
    return out


# ---- diverged runs ------------------------------------------------------------------------------------------------
# A trial whose loss became NaN/inf ends FAILED with tag bench.diverged=1: a result (deep plain nets diverge), so it
# counts. Errors count at chance (a NaN network predicts nothing), iters_to as never reaching the threshold
# (censored, as finished runs that never get there), anything else (losses, epochs) is left out and said so.

KNOWN_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
_VAL_METRICS = ("val_", "best_val_epoch")


def is_diverged(runs: pd.DataFrame) -> pd.Series:
    if "diverged" in runs:
        return runs["diverged"].fillna(False).astype(bool)
    return _col(runs, f"{TAG}diverged").astype(str).isin(["1", "1.0", "True", "true"])


def diverged_step(row: pd.Series) -> int | None:
    for v in (row.get(f"{TAG}diverged_step"), row.get(f"{TAG}error")):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        m = re.search(r"(\d+)\s*$", str(v))
        if m:
            return int(m.group(1))
    return None


def num_classes(row: pd.Series) -> int | None:
    """From the run (tag bench.num_classes, logged by the worker), else from its dataset's name."""
    for key in (f"{TAG}num_classes", "params.num_classes"):
        v = pd.to_numeric(pd.Series([row.get(key)]), errors="coerce").iloc[0]
        if pd.notna(v) and v > 0:
            return int(v)
    for key in (f"{TAG}dataset", "params.dataset"):
        name = row.get(key)
        if isinstance(name, str) and name in KNOWN_CLASSES:
            return KNOWN_CLASSES[name]
    return None


def _has_val(row: pd.Series) -> bool:
    v = pd.to_numeric(pd.Series([row.get("params.protocol.val_split")]), errors="coerce").iloc[0]
    return bool(pd.notna(v) and v > 0) or pd.notna(row.get("metrics.val_error"))


def chance_error(metric: str, k: int) -> float:
    if metric.endswith("top5_error"):
        return 1.0 - min(5, k) / k
    return 1.0 - 1.0 / k


def diverged_value(row: pd.Series, metric: str, value: float, censored: bool) -> tuple[float, bool]:
    """(value, censored) a diverged run counts with for `metric`; NaN value: left out (see diverged_rule)."""
    m = ITERS_TO.match(metric)
    if m:
        if not censored and pd.notna(value):
            return value, False                      # reached the threshold before diverging: a real value
        step = diverged_step(row)
        # Never reaches it: a lower bound, the furthest step the run is known to have got to.
        bound = max(x for x in (value, (step + 1) if step is not None else math.nan, -1.0) if pd.notna(x))
        return (float(bound), True) if bound > 0 else (math.nan, False)
    rule, k = diverged_rule(row, metric)
    if rule != "chance":
        return math.nan, False
    if metric.endswith("_accuracy"):
        return 1.0 / k, False
    return chance_error(metric, k), False


def diverged_rule(row: pd.Series, metric: str) -> tuple[str, int | None]:
    """('chance', classes) | ('censored', None) | ('left out: why', None) for a diverged run and a metric."""
    if ITERS_TO.match(metric):
        return "censored", None
    if not (metric.endswith("_error") or metric.endswith("_accuracy")):
        return "left out: a diverged run has no value of this metric", None
    k = num_classes(row)
    if k is None:
        return "left out: its number of classes is unknown, so chance level is too", None
    if metric.startswith(_VAL_METRICS) and not _has_val(row):
        return "left out: no validation split", None
    if metric.endswith("top5_error") and k <= 5:
        return "left out: top-5 error needs more than 5 classes", None
    return "chance", k


def diverged_notes(runs: pd.DataFrame, metrics: list[str], curves: pd.DataFrame | None = None) -> list[str]:
    """One line per diverged run: where it diverged and how each metric of the report counts it."""
    div = is_diverged(runs)
    if not div.any():
        return []
    vals = {m: metric_values(runs, m, curves) for m in dict.fromkeys(metrics)}
    cells, seeds = cell_of(runs), seed_of(runs)
    out = []
    for i in np.flatnonzero(div.to_numpy()):
        row = runs.iloc[i]
        step = diverged_step(row)
        what = []
        for m, v in vals.items():
            val, cens = v["value"].iat[i], bool(v["censored"].iat[i])
            rule, _ = diverged_rule(row, m)
            if rule == "chance":
                what.append(f"{m} counted at chance, {fmt_num(val * scale(m), m)}{unit_label(m)}")
            elif rule == "censored" and pd.notna(val):
                what.append(f"{m} " + (f"counted as never reached (censored at {fmt_num(val, m)})" if cens
                                       else f"reached at {fmt_num(val, m)} before diverging"))
            else:
                why = rule.removeprefix("left out: ") if rule != "censored" else "no curve logged"
                what.append(f"{m} left out ({why})")
        seed = seeds.iat[i]
        at = f" at step {step}" if step is not None else ""
        out.append(f"{cells.iat[i]} seed {seed if pd.notna(seed) else '?'} diverged{at}: " + "; ".join(what))
    return out


def paper_fraction(cell: Cell, metric: str) -> float:
    """The paper's number for `cell` in the table's metric, in fraction units (NaN when not comparable)."""
    pv = cell.paper
    if pv is None:
        return math.nan
    v = pv.value / 100.0 if (pv.unit == "percent" and is_percent(pv.metric)) else pv.value
    if pv.metric == metric:
        return v
    # error <-> accuracy of the same split are complements; anything else is not comparable.
    a, b = sorted([pv.metric, metric])
    if a.endswith("_accuracy") and b.endswith("_error") and a[:-9] == b[:-6]:
        return 1.0 - v
    return math.nan


# ---- which runs count ---------------------------------------------------------------------------------------------

def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def matching(runs: pd.DataFrame, profile: str, dataset: str, config_hashes: set[str] | None = None) -> pd.DataFrame:
    """Trial runs of this profile and dataset, any status. A run whose config hash is one of this profile's trials
    also matches: the runner reuses finished trials across profile names (the hash leaves the profile out)."""
    if runs.empty:
        return runs
    ok = (_col(runs, f"{TAG}profile") == profile) & (_col(runs, f"{TAG}dataset") == dataset)
    if config_hashes:
        ok |= _col(runs, f"{TAG}config_hash").isin(config_hashes)
    kind = _col(runs, f"{TAG}kind")
    return runs[ok & (kind.isna() | (kind == "trial"))]


def counted(runs: pd.DataFrame) -> pd.Series:
    """Runs that are results: FINISHED, or FAILED because the loss diverged."""
    status = _col(runs, "status")
    return (status == "FINISHED") | ((status == "FAILED") & is_diverged(runs))


def cell_of(runs: pd.DataFrame) -> pd.Series:
    return runs["cell"] if "cell" in runs else _col(runs, f"{TAG}cell")


def seed_of(runs: pd.DataFrame) -> pd.Series:
    s = runs["seed"] if "seed" in runs else _col(runs, f"{TAG}seed")
    return pd.to_numeric(s, errors="coerce").astype("Int64")


def _newest_first(df: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in ("start_time", "end_time") if k in df]
    return df.sort_values(keys, ascending=False, kind="stable", na_position="last") if keys else df


def select_runs(runs: pd.DataFrame, profile: str, dataset: str, cells: list[str] | None = None,
                config_hashes: set[str] | None = None, best_of: tuple[str, str] | None = None) -> pd.DataFrame:
    """The runs a report uses: FINISHED (or diverged), of this profile and dataset, the newest per (cell, seed).

    With `best_of=(metric, 'min'|'max')` (a suite with a random search: one config per sample), the newest run of
    each config competes and the best one per (cell, seed) is kept, as the paper keeps the best of its search.
    Adds `cell`, `seed` (int) and `diverged` (bool) columns; sorted by cell (in `cells` order when given), then seed.
    """
    df = matching(runs, profile, dataset, config_hashes)
    if df.empty or "status" not in df:
        return _empty_selection(runs)
    df = df[counted(df)].copy()
    df["diverged"] = is_diverged(df).to_numpy()
    df["cell"] = _col(df, f"{TAG}cell")
    df["seed"] = pd.to_numeric(_col(df, f"{TAG}seed"), errors="coerce").astype("Int64")
    if cells is not None:
        df = df[df["cell"].isin(cells)]
    df = _newest_first(df)
    if best_of:
        metric, mode = best_of
        df = df.drop_duplicates(["cell", "seed", f"{TAG}config_hash"] if f"{TAG}config_hash" in df else None)
        # A diverged sample is never the best of a search.
        v = metric_values(df, metric)["value"].where(~df["diverged"])
        # Stable sort: among equal values the newest run stays first.
        df = df.loc[v.sort_values(ascending=mode == "min", na_position="last", kind="stable").index]
    df = df.drop_duplicates(["cell", "seed"], keep="first")
    order = {c: i for i, c in enumerate(cells or sorted(df["cell"].dropna().unique()))}
    df = df.assign(_o=df["cell"].map(order)).sort_values(["_o", "seed"]).drop(columns="_o")
    return df.reset_index(drop=True)


def _empty_selection(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(columns=[*runs.columns, "cell", "seed", "diverged"])


def exclusions(runs: pd.DataFrame, selected: pd.DataFrame, profile: str, dataset: str, cells: list[str],
               config_hashes: set[str] | None = None) -> list[str]:
    """Why matching runs were left out, one line per reason."""
    df = matching(runs, profile, dataset, config_hashes)
    if df.empty:
        return []
    notes = []
    status = _col(df, "status")
    ok = counted(df)
    for st, n in status[~ok].value_counts().items():
        notes.append(f"{n} {st} run(s) not counted")
    fin = df[ok]
    stray = fin[~_col(fin, f"{TAG}cell").isin(cells)]
    if len(stray):
        names = ", ".join(sorted(set(_col(stray, f"{TAG}cell").dropna().astype(str))))
        notes.append(f"{len(stray)} finished run(s) of cells no longer in the suite ignored: {names}")
    superseded = len(fin) - len(stray) - len(selected)
    if superseded > 0:
        notes.append(f"{superseded} other counted run(s) of the same cell and seed not used: the report keeps the "
                     f"newest (for a search, the best sample)")
    return notes


# ---- statistics per cell and the paper table -----------------------------------------------------------------------

def cell_stats(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame | None = None,
               metric: str | None = None) -> pd.DataFrame:
    """One row per suite cell, in suite order. Numbers are in display units (percent for errors)."""
    metric = metric or suite.layout.metric
    k = scale(metric)
    vals = metric_values(runs, metric, curves) if len(runs) else pd.DataFrame(columns=["value", "censored"])
    rows = []
    for c in suite.cells:
        v = vals[(cell_of(runs) == c.id).to_numpy()] if len(vals) else vals
        v = v[v["value"].notna()]
        x = v["value"].to_numpy(dtype=float) * k
        n = len(x)
        center_mean = float(np.mean(x)) if n else math.nan
        median = float(np.median(x)) if n else math.nan
        paper = paper_fraction(c, metric) * k
        center = median if suite.layout.stat == "median" else center_mean
        sd = float(np.std(x, ddof=1)) if n >= 2 else math.nan
        placed = n >= 2 and math.isfinite(paper)
        n_above = int((x > paper).sum()) if placed else None
        rows.append({
            "cell": c.id, "row": c.row, "col": c.col, "n": n, "mean": center_mean,
            "sd": sd, "median": median,
            "min": float(np.min(x)) if n else math.nan, "max": float(np.max(x)) if n else math.nan,
            "censored": int(v["censored"].sum()), "diverged": int(v["diverged"].sum()) if "diverged" in v else 0,
            "paper": paper, "delta": center - paper,
            "z": (paper - center_mean) / sd if placed and sd > 0 else math.nan,
            "frac_above": n_above / n if placed else math.nan, "n_above": n_above,
            "paper_stat": c.paper.stat if c.paper else None, "paper_note": c.paper.note if c.paper else None,
        })
    return pd.DataFrame(rows)


def layout_axes(suite: Suite) -> tuple[list[str], list[str]]:
    rows, cols = [], []
    for c in suite.cells:
        if c.row not in rows:
            rows.append(c.row)
        if c.col not in cols:
            cols.append(c.col)
    return rows, cols


def column_name(col: str, field: str) -> str:
    return f"{col} {field}" if col else field


def paper_table(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame | None = None,
                stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's rows and columns; per paper column the fields n, mean, sd, median, min, max, paper, delta.

    Index: the paper's row labels. Columns: '<col> <field>' (just '<field>' for one-column tables).
    Units as the paper prints them (percent for errors). An empty grid position stays NaN.
    """
    stats = cell_stats(suite, runs, curves) if stats is None else stats
    rows, cols = layout_axes(suite)
    table = pd.DataFrame(index=pd.Index(rows, name=suite.layout.rows or "row"),
                         columns=[column_name(c, f) for c in cols for f in STAT_FIELDS], dtype=float)
    for r in stats.itertuples(index=False):
        for f in STAT_FIELDS:
            name = column_name(r.col, f)
            if pd.isna(table.at[r.row, name]):  # two cells on one grid position: the first one wins
                table.at[r.row, name] = getattr(r, f)
    for c in cols:
        table[column_name(c, "n")] = table[column_name(c, "n")].astype("Int64")
    table.attrs.update(metric=suite.layout.metric, unit=unit_label(suite.layout.metric), stat=suite.layout.stat)
    return table


# ---- formatting ---------------------------------------------------------------------------------------------------

def fmt_num(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if metric.startswith("iters_to:"):
        return f"{x:,.0f}"
    if is_percent(metric):
        return f"{x:.2f}"
    return f"{x:.4g}"


def fmt_cell(s: pd.Series | dict, metric: str, stat: str) -> str:
    """'7.12 ± 0.15 (3)' or '7.12 [6.90–7.30] (5)'; '—' when there are no runs."""
    n = int(s["n"])
    if n == 0:
        return "—"
    cens = f", {int(s['censored'])} censored" if s.get("censored", 0) else ""
    cens += f", {int(s['diverged'])} diverged" if s.get("diverged", 0) else ""
    if stat == "median":
        return f"{fmt_num(s['median'], metric)} [{fmt_num(s['min'], metric)}–{fmt_num(s['max'], metric)}] ({n}{cens})"
    sd = f" ± {fmt_num(s['sd'], metric)}" if n >= 2 else ""
    return f"{fmt_num(s['mean'], metric)}{sd} ({n}{cens})"


def fmt_delta(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return ("+" if x > 0 else "") + fmt_num(x, metric)


def fmt_seconds(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fmt_vs_paper(s: pd.Series | dict, comparable: bool = True) -> str:
    """The paper's value placed within our seeds: 'z=+1.3, 1/2 seeds above'; '—' without a paper value or n < 2."""
    n, paper = int(s["n"]), s["paper"]
    if n < 2 or paper is None or not math.isfinite(paper):
        return "—"
    if not comparable:
        return "not comparable (dataset)"
    z = "sd 0" if not math.isfinite(s["z"]) else f"z={s['z']:+.1f}"
    above = s["n_above"] if s.get("n_above") is not None else round(s["frac_above"] * n)
    return f"{z}, {int(above)}/{n} seeds above"


def display_grid(suite: Suite, stats: pd.DataFrame, ours_label: str, paper_label: str,
                 comparable: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human table: per paper column, ours / paper / Δ / the paper within our spread."""
    metric, stat = suite.layout.metric, suite.layout.stat
    rows, cols = layout_axes(suite)
    unit = unit_label(metric)
    d_unit = " (pp)" if unit == "%" else ""
    header = [suite.layout.rows or "row"]
    for c in cols:
        pre = f"{c}: " if c else ""
        header += [f"{pre}{ours_label}", f"{pre}{paper_label}", f"{pre}Δ{d_unit}", f"{pre}paper vs our seeds"]
    by_pos = {}
    for r in stats.to_dict("records"):
        by_pos.setdefault((r["row"], r["col"]), r)
    body = []
    for row in rows:
        line = [row]
        for c in cols:
            r = by_pos.get((row, c))
            if r is None:
                line += ["", "", "", ""]
                continue
            delta = fmt_delta(r["delta"], metric) if comparable else "n/a"
            line += [fmt_cell(r, metric, stat), fmt_num(r["paper"], metric), delta, fmt_vs_paper(r, comparable)]
        body.append(line)
    return header, body


def net_rows(suite: Suite, profile: str, runs: pd.DataFrame) -> list[dict]:
    """Per cell with runs: the net it ran (a profile's proxy, or the cell's own), its keyword arguments, parameters
    and multiply-adds per image, as the trials logged them, and the proxy's note."""
    proxies = get_profile(suite, profile).proxies
    out = []
    for c in suite.cells:
        r = runs[runs["cell"] == c.id] if "cell" in runs else runs.iloc[0:0]
        if r.empty:
            continue
        first = r.iloc[0]
        kw = {k.split(".", 2)[2]: first[k] for k in r.columns
              if k.startswith("params.model_kwargs.") and pd.notna(first[k]) and str(first[k]) != ""}
        num = lambda col: float(pd.to_numeric(_col(r, col), errors="coerce").median())   # noqa: E731
        out.append({"cell": c.id, "paper_model": c.model, "model": str(first.get("params.model", c.model)),
                    "kwargs": ", ".join(f"{k}={v}" for k, v in sorted(kw.items())),
                    "params": num("metrics.params"), "macs": num("metrics.macs"),
                    "proxy": proxies[c.id].note if c.id in proxies else ""})
    return out


# ---- evidence about the runs ----------------------------------------------------------------------------------------

def _uniq(s: pd.Series) -> list[str]:
    return sorted({str(v) for v in s.dropna() if str(v) not in ("", "nan", "None")})


def summarize_runs(runs: pd.DataFrame) -> dict:
    """What a reader needs to trust the numbers: where and with what they were produced."""
    wall = pd.to_numeric(_col(runs, "metrics.wall_time_s"), errors="coerce").dropna()
    seeds = sorted({int(s) for s in runs["seed"].dropna()}) if "seed" in runs else []
    counts = _col(runs, f"{TAG}device").fillna("unknown").value_counts()
    hosts = _col(runs, f"{TAG}host").fillna("unknown").value_counts()
    return {
        "n_runs": len(runs),
        "n_diverged": int(is_diverged(runs).sum()) if len(runs) else 0,
        "seeds": seeds,
        "devices": [f"{d} ×{n}" for d, n in counts.items()] if len(runs) else [],
        "precision": _precision(runs),
        "hosts": [f"{h} ×{n}" for h, n in hosts.items()] if len(runs) else [],
        "ray_nodes": len(_uniq(_col(runs, f"{TAG}node_id"))),
        "torch": _uniq(_col(runs, f"{TAG}torch")),
        "lightning": _uniq(_col(runs, f"{TAG}lightning")),
        "git_commits": _uniq(_col(runs, f"{TAG}git_commit")),
        "wall_total_s": float(wall.sum()) if len(wall) else math.nan,
        "wall_mean_s": float(wall.mean()) if len(wall) else math.nan,
        "wall_min_s": float(wall.min()) if len(wall) else math.nan,
        "wall_max_s": float(wall.max()) if len(wall) else math.nan,
        "first_start": _when(runs, "start_time", "min"),
        "last_end": _when(runs, "end_time", "max"),
        **dict(zip(("elapsed_s", "sittings", "span_s"), _elapsed(runs))),
    }


def _precision(runs: pd.DataFrame) -> list[str]:
    """The protocol's precision and what the trials computed in (a CPU without bfloat16 falls back to fp32)."""
    asked = _col(runs, "params.protocol.precision").astype("string").fillna("32")
    used = _col(runs, f"{TAG}precision.used").astype("string")
    used = used.where(used.notna(), asked)    # runs from before the tag existed computed as asked
    pairs = pd.DataFrame({"asked": asked, "used": used}).value_counts()
    return [f"{a} ×{n}" if a == u else f"{a}, computed in {u} (no bfloat16 on this CPU) ×{n}"
            for (a, u), n in pairs.items()] if len(runs) else []


# A pause longer than this between trials is a new sitting (a resumed sequence, a re-run days later), not
# time a reader waited for this suite.
SITTING_GAP_S = 600.0


def _elapsed(runs: pd.DataFrame) -> tuple[float, int, float]:
    """Wall time with trials running, the number of sittings, and first start to last end.

    Trials overlap, so the time is the union of their intervals; gaps under SITTING_GAP_S (start-up, judging
    between waves) count, longer ones split sittings and do not."""
    if "start_time" not in runs or "end_time" not in runs or not len(runs):
        return math.nan, 0, math.nan
    t0 = pd.to_datetime(runs["start_time"], utc=True)
    t1 = pd.to_datetime(runs["end_time"], utc=True)
    spans = sorted((a, b) for a, b in zip(t0, t1) if not (pd.isna(a) or pd.isna(b)))
    if not spans:
        return math.nan, 0, math.nan
    total, sittings = 0.0, 1
    start, end = spans[0]
    for a, b in spans[1:]:
        if (a - end).total_seconds() > SITTING_GAP_S:
            total += (end - start).total_seconds()
            start, sittings = a, sittings + 1
        end = max(end, b)
    total += (end - start).total_seconds()
    return total, sittings, float((end - spans[0][0]).total_seconds())   # end: the latest end of all


def _when(runs: pd.DataFrame, col: str, how: str) -> str:
    if col not in runs or not len(runs):
        return "?"
    t = pd.to_datetime(getattr(runs[col], how)(), utc=True)
    return "?" if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M UTC")


def same_dataset(a: str, b: str) -> bool:
    """'cifar10' == 'CIFAR-10'."""
    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())
    return norm(a) == norm(b)
