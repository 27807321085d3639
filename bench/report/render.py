"""report.md and report.html from one ReportData. Both carry the same evidence; the HTML embeds the plot."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from bench.report.claims import HOLM_METHOD, MAX_SEEDS, METHOD, sequential_method
from bench.report.tables import (SITTING_GAP_S, STAT_FIELDS, display_grid, fmt_delta, fmt_num, fmt_seconds,
                                 layout_axes, same_dataset, unit_label)
from bench.spec import Suite

if TYPE_CHECKING:
    from bench.report.sequential import Design

FILES = {
    "report.md": "this report",
    "report.html": "this report with the plot embedded",
    "table.csv": "the paper-layout table, one numeric column per field",
    "runs.parquet": "one row per run used: tags, metrics, params",
    "curves.png": "training curves",
}


@dataclass
class ReportData:
    suite: Suite
    profile: str
    dataset: str
    uri: str
    stats: pd.DataFrame                  # cell_stats
    claims: list[dict]
    summary: dict                        # summarize_runs
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # selection notes: runs left out and why
    diverged: list[str] = field(default_factory=list)   # diverged_notes: how each diverged run counts
    generated: str = ""
    design: Design | None = None                        # a sequential run's (bench run --until-decided)
    nets: list[dict] = field(default_factory=list)      # tables.net_rows: what each cell ran, its size and cost

    @property
    def method(self) -> str:
        seq = f" {sequential_method(self.design)}" if self.design else ""
        return f"{METHOD}{seq} {HOLM_METHOD}"

    @property
    def ours_label(self) -> str:
        return f"ours ({self.dataset}, {self.profile})"

    @property
    def paper_label(self) -> str:
        return f"paper ({self.suite.paper.dataset})"

    @property
    def comparable(self) -> bool:
        """A Δ against the paper only means something on the paper's own dataset."""
        return same_dataset(self.dataset, self.suite.paper.dataset)

    @property
    def missing(self) -> list[str]:
        return [r.cell for r in self.stats.itertuples() if r.n == 0]

    def short_seeds(self) -> list[str]:
        """Cells with fewer runs than the best-covered cell."""
        top = int(self.stats["n"].max()) if len(self.stats) else 0
        return [f"{r.cell} ({r.n}/{top})" for r in self.stats.itertuples() if 0 < r.n < top]


def _metric_words(metric: str) -> str:
    u = unit_label(metric)
    name = metric if metric.startswith("iters_to:") else metric.replace("_", " ")
    return name + (f" ({u})" if u else "")


def _stat_words(stat: str) -> str:
    return "median [min–max] (n) over seeds" if stat == "median" else "mean ± sd (n) over seeds"


def _paper_line(s: Suite) -> str:
    arxiv = f", arXiv:{s.paper.arxiv}" if s.paper.arxiv else ""
    return f"{s.paper.citation}, {s.paper.ref}{arxiv}; the paper's numbers are on {s.paper.dataset}"


def _evidence(d: ReportData) -> list[tuple[str, str]]:
    s = d.summary
    prof = d.suite.profiles.get(d.profile)
    prof_desc = f" — {prof.description}" if prof and prof.description else ""
    sittings = (f" in {s['sittings']} sittings (pauses over {SITTING_GAP_S / 60:.0f} min left out; first start to "
                f"last end {fmt_seconds(s['span_s'])})" if s["sittings"] > 1 else "")
    wall = (f"{fmt_seconds(s['elapsed_s'])} elapsed{sittings}; trials {fmt_seconds(s['wall_mean_s'])} mean "
            f"({fmt_seconds(s['wall_min_s'])}–{fmt_seconds(s['wall_max_s'])}), "
            f"{fmt_seconds(s['wall_total_s'])} summed")
    return [
        ("paper", _paper_line(d.suite)),
        ("runs", f"{s['n_runs']} trial runs on {d.dataset}, profile {d.profile}{prof_desc}"
                 + (f" ({s['n_diverged']} diverged, counted as results)" if s.get("n_diverged") else "")),
        ("seeds", ", ".join(map(str, s["seeds"])) or "—"),
        *([("design", f"sequential (bench run --until-decided): {d.design.describe()}; see Claims")]
          if d.design else []),
        ("device(s)", "; ".join(s["devices"]) or "unknown"),
        ("precision", "; ".join(s.get("precision", [])) or "unknown"),
        ("host(s)", (", ".join(s["hosts"]) or "unknown")
         + (f" on {s['ray_nodes']} Ray nodes" if s.get("ray_nodes", 0) > 1 else "")),
        ("torch / lightning", f"{', '.join(s['torch']) or 'unknown'} / {', '.join(s['lightning']) or 'unknown'}"),
        ("git commit(s)", ", ".join(s["git_commits"]) or "unknown"),
        ("wall time", wall),
        ("run period", f"{s['first_start']} → {s['last_end']}"),
        ("tracking store", d.uri),
    ]


def _table_caption(d: ReportData) -> str:
    lay = d.suite.layout
    return (f"{_metric_words(lay.metric)}. {d.ours_label}: {_stat_words(lay.stat)}. {d.paper_label}: the paper's "
            f"value. Δ = ours − paper" + (" in percent points." if unit_label(lay.metric) == "%" else ".")
            + " Paper vs our seeds: z = (paper − our mean) / our sd, and how many of our seeds lie above the "
              "paper's value (n ≥ 2)."
            + ("" if d.comparable else f" Δ is not computed: our runs are on {d.dataset}, the paper's on "
                                       f"{d.suite.paper.dataset}."))


def _paper_footnotes(d: ReportData) -> list[str]:
    out = []
    for r in d.stats.itertuples():
        if isinstance(r.paper_note, str) and r.paper_note:
            out.append(f"{r.cell}: {r.paper_note}")
    words = {"single": "a single run", "mean": "a mean over runs", "median": "a median over runs",
             "best": "the best run"}
    stats = sorted({words[r.paper_stat] for r in d.stats.itertuples() if isinstance(r.paper_stat, str)})
    if stats:
        out.insert(0, f"each paper value is {' or '.join(stats)}, as the paper reports it")
    return out


def _k(metric: str) -> float:
    return 100.0 if unit_label(metric) == "%" else 1.0


def _diff_unit(metric: str) -> str:
    u = unit_label(metric)
    return " pp" if u == "%" else (f" {u}" if u else "")


def _signed(x: float, metric: str) -> str:
    return fmt_delta(x * _k(metric), metric)


def _claim_row(c: dict) -> list[str]:
    k, m = _k(c["metric"]), c["metric"]
    p = "—" if c["p_value"] is None or math.isnan(c["p_value"]) else f"{c['p_value']:.3g}"
    if c.get("kind") == "interaction":
        (a, b), (cc, d) = c["lhs"], c["rhs"]
        ours = (f"({a} − {b}): {fmt_num(c['lhs_mean'] * k, m)} {c['op']} ({cc} − {d}): "
                f"{fmt_num(c['rhs_mean'] * k, m)} (n={c['n_lhs']} seeds)")
    else:
        lhs = f"{'+'.join(c['lhs'])}: {fmt_num(c['lhs_mean'] * k, m)} (n={c['n_lhs']})"
        rhs = f"{'+'.join(c['rhs'])}: {fmt_num(c['rhs_mean'] * k, m)} (n={c['n_rhs']})"
        ours = f"{lhs} {c['op']} {rhs}"
    return [c["id"], c["text"], _metric_words(m), ours, _effect_cell(c), p, c["verdict"].upper(), _holm_cell(c)]


def _holm_cell(c: dict) -> str:
    return {True: "yes", False: "no"}.get(c.get("holm"), "—")


def _effect_cell(c: dict) -> str:
    m = c["metric"]
    if "effect" not in c or c["effect"] is None or math.isnan(c["effect"]):
        return "—"
    if math.isnan(c["ci_low"]):
        return f"{_signed(c['effect'], m)}{_diff_unit(m)} (no CI)"
    return f"{_signed(c['effect'], m)} [{_signed(c['ci_low'], m)}, {_signed(c['ci_high'], m)}]{_diff_unit(m)}"


def _effect_label(c: dict) -> str:
    if c.get("kind") == "interaction":
        (a, b), (cc, d) = c["lhs"], c["rhs"]
        return f"({a} − {b}) − ({cc} − {d}), mean over seeds"
    return f"{'+'.join(c['lhs'])} − {'+'.join(c['rhs'])}, difference of means"


def _cost(c: dict) -> str:
    if "power_more_trials" not in c:
        return ""
    if not c["power_more_trials"]:
        return "; already run here: these seeds had that power, and the claim is still open"
    at_least = "at least " if c["power_seeds"] > MAX_SEEDS else ""
    return (f"; here {at_least}{c['power_more_trials']} more trials, {at_least}{fmt_seconds(c['power_more_s'])} "
            f"of trial time at the cells' measured mean (one worker; workers running at once divide it)")


def _fmt_seeds(n: int) -> str:
    return f">{MAX_SEEDS}" if n > MAX_SEEDS else str(n)


def sequential_line(c: dict) -> str:
    """Where a claim's sequence stopped: the look, the seeds per cell then, the boundary and the alpha spent; or
    futile / open, with the repeated interval."""
    q, m, u = c["sequential"], c["metric"], _diff_unit(c["metric"])
    if q["status"] == "waiting":
        return (f"sequential: no look yet: fewer than {q['first']} seeds in every cell of the claim "
                f"(looks at {q['first']}..{q['max']} seeds per cell)")
    where = f"look {q['look']} of {q['looks']}; looks at {q['first']}..{q['max']} seeds per cell"
    ps = f"p={q['p']:.3g}" if q["status"] == "holds" else f"p={q['p']:.3g}, opposite p={q['p_opp']:.3g}"
    cmp = "<" if q["status"] in ("holds", "fails") else "≥"
    spent = (f"alpha spent by this look {q['spent']:.3g} of {q['level']:.3g} (the design's level, calibrated "
             f"for alpha {c['alpha']:g})")
    rci = ""
    if not math.isnan(q["rci_low"]):
        rci = f"; {q['rci_level']:.0%} repeated CI [{_signed(q['rci_low'], m)}, {_signed(q['rci_high'], m)}]{u}"
    head = {
        "holds": f"sequential: holds at n={q['n']} seeds per cell ({where})",
        "fails": f"sequential: fails at n={q['n']} seeds per cell ({where})",
        "futile": (f"sequential: futile at n={q['n']} ({where}): a decision by {q['max']} seeds has "
                   f"{q['cp']:.0%} conditional power at the trend so far"),
        "max": f"sequential: open at the maximum, n={q['n']} ({where})",
        "open": f"sequential: open at n={q['n']} ({where}); conditional power {q['cp']:.0%}",
    }[q["status"]]
    return f"{head}: {ps} {cmp} boundary {q['threshold']:.3g}; {spent}{rci}"


def claim_lines(c: dict) -> list[str]:
    """The lines under a claim's detail: the sequential design's decision, effect and interval, power when
    inconclusive, the suite's explanation."""
    m, u = c["metric"], _diff_unit(c["metric"])
    out = [sequential_line(c)] if c.get("sequential") else []
    if "effect" in c:
        eff = f"effect ({_effect_label(c)}): {_signed(c['effect'], m)}{u}"
        if math.isnan(c["effect"]):
            eff = f"effect ({_effect_label(c)}): — (no runs on a side)"
        elif math.isnan(c["ci_low"]):
            eff += f"; {c['ci_method']}"
        else:
            eff += (f", {c['ci_level']:.0%} CI [{_signed(c['ci_low'], m)}, {_signed(c['ci_high'], m)}]{u} "
                    f"({c['ci_method']})")
        if c.get("paper_effect") is not None:
            eff += f"; paper: {_signed(c['paper_effect'], m)}{u} ({c['paper_effect_source']})"
        out.append(eff)
    if c.get("verdict") == "inconclusive" and "power_seeds" in c:
        who = "seeds (each run in all four cells)" if c.get("kind") == "interaction" else "seeds per cell"
        if c["power_seeds"] is None:
            out.append(f"{who} for 80% power: no estimate: {c['power_note']}")
        else:
            sd = "sd of the per-seed differences" if c.get("kind") == "interaction" else "pooled sd"
            out.append(f"{who} for 80% power: {_fmt_seeds(c['power_seeds'])}, to detect "
                       f"{_signed(c['power_effect'], m)}{u}, {c['power_basis']}, at our observed {sd} "
                       f"{fmt_num(c['sd'] * _k(m), m)}{u} (alpha {c['alpha']:g}, one-sided)"
                       + _cost(c))
    if c.get("n_diverged"):
        how = ("counted as never reaching the threshold (censored)" if m.startswith("iters_to:")
               else "counted at chance level")
        out.append(f"{c['n_diverged']} diverged run(s) {how}; see Diverged runs")
    if c.get("n_diverged_left_out"):
        out.append(f"{c['n_diverged_left_out']} diverged run(s) left out: no {m} for a diverged run; "
                   f"see Diverged runs")
    if c.get("explanation"):
        out.append(f"why {c['verdict']}: {c['explanation']}")
    elif c.get("unexplained"):
        out.append("no explanation given in the suite")
    return out


DIVERGED_RULE = ("A run whose loss became NaN or inf is a result, not a fault: it counts at chance-level error "
                 "(1 − 1/classes) in the table and the claims, as never reaching an iters_to threshold (censored), "
                 "and is left out of losses.")

CLAIM_HEADER = ["id", "claim", "metric", "ours: lhs op rhs (means)", "effect [95% CI]", "p", "verdict",
                "survives Holm"]


# ---- markdown -------------------------------------------------------------------------------------------------------

NETS_HEADER = ["cell", "net run", "model arguments", "parameters", "multiply-adds per image", "stands in for"]


def _si(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.0f}"


def _net_row(n: dict) -> list[str]:
    proxy = f"proxy for {n['paper_model']}: {n['proxy']}" if n["proxy"] else "the cell's own net"
    return [n["cell"], n["model"], n["kwargs"] or "—", _si(n["params"]), _si(n["macs"]), proxy]


def _nets_intro(d: ReportData) -> str:
    n_proxy = sum(1 for n in d.nets if n["proxy"])
    return ("What each cell ran in this profile, as its trials logged it (multiply-adds at the data's image size)."
            + (f" {n_proxy} cell(s) ran a proxy: a stated stand-in for the paper's net; the claims on them are judged "
               "on the proxy." if n_proxy else ""))


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(d: ReportData) -> str:
    s = d.suite
    L = [f"# {s.title}", ""]
    for w in d.warnings:
        L += [f"> **WARNING:** {w}", ""]
    L += _md_table(["", ""], [[k, v] for k, v in _evidence(d)]) + [""]

    L += [f"## {s.paper.ref}: paper vs ours", "", _table_caption(d), ""]
    header, body = display_grid(s, d.stats, d.ours_label, d.paper_label, d.comparable)
    L += _md_table(header, body) + [""]
    if s.layout.cols:
        L += [f"Columns: {s.layout.cols}.", ""]
    if d.missing:
        L += [f"**Missing** (no finished runs, shown as —): {', '.join(d.missing)}", ""]
    if d.short_seeds():
        L += [f"Fewer seeds than other cells: {', '.join(d.short_seeds())}", ""]
    for n in _paper_footnotes(d):
        L += [f"- {n}"]
    L += [""]

    if d.nets:
        L += ["## Nets", "", _nets_intro(d), ""] + _md_table(NETS_HEADER, [_net_row(n) for n in d.nets]) + [""]

    L += ["## Claims", ""]
    if d.claims:
        L += [f"Judged on our {d.dataset} runs (profile {d.profile}).", ""]
        L += _md_table(CLAIM_HEADER, [_claim_row(c) for c in d.claims]) + [""]
        for c in d.claims:
            L += [f"- **{c['id']}** ({c['verdict']}): {c['detail']}"] + [f"  - {x}" for x in claim_lines(c)]
        L += [""]
        L += [f"Method: {d.method}", ""]
    else:
        L += ["The suite states no claims.", ""]

    L += ["## Curves", "", "![training curves](curves.png)", ""]
    if d.diverged:
        L += ["## Diverged runs", "", DIVERGED_RULE, ""] + [f"- {n}" for n in d.diverged] + [""]
    if d.notes:
        L += ["## Runs left out", ""] + [f"- {n}" for n in d.notes] + [""]
    unit = unit_label(s.layout.metric)
    L += ["## Files", ""] + [f"- `{f}`: {w}" for f, w in FILES.items()]
    L += [f"- table.csv units: {unit or 'raw values'}; fields per column: {', '.join(STAT_FIELDS)} (z and "
          f"frac_above: the paper's value within our seeds)",
          "", f"Generated by `bench report` {d.generated}.", ""]
    return "\n".join(L)


# ---- html -----------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
table.kv td{text-align:left}
.warn{background:#fde8e8;border:2px solid #c0392b;color:#7b1d13;padding:.8em 1em;font-weight:600;margin:1em 0}
.holds{color:#1e7b34;font-weight:600}.fails{color:#b03a2e;font-weight:600}.inconclusive{color:#8a6d00}.not-run{color:#777}
.missing{color:#b03a2e} .small{font-size:13px;color:#555}
"""


def _h(x: object) -> str:
    return html.escape(str(x))


def _html_grid(d: ReportData) -> str:
    s = d.suite
    _, cols = layout_axes(s)
    header, body = display_grid(s, d.stats, d.ours_label, d.paper_label, d.comparable)
    sub = header[1:5]
    top = [f"<th rowspan=2>{_h(header[0])}</th>"]
    for c in cols:
        top.append(f"<th colspan=4>{_h(c or s.layout.metric)}</th>")
    sub_cells = "".join(f"<th>{_h(x.split(': ', 1)[-1])}</th>" for x in sub) * len(cols)
    rows = []
    for r in body:
        tds = [f"<td>{_h(r[0])}</td>"] + [
            "<td class=missing>—</td>" if v == "—" and i % 4 == 0 else f"<td>{_h(v)}</td>"
            for i, v in enumerate(r[1:])]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<table><thead><tr>{''.join(top)}</tr><tr>{sub_cells}</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _html_sub(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_h(x)}</li>" for x in lines) + "</ul>" if lines else ""


def render_html(d: ReportData, png: bytes | None) -> str:
    s = d.suite
    B = [f"<!doctype html><html><head><meta charset=utf-8><title>{_h(s.title)}</title><style>{_CSS}</style>"
         f"</head><body><h1>{_h(s.title)}</h1>"]
    B += [f"<div class=warn>WARNING: {_h(w)}</div>" for w in d.warnings]
    B.append("<table class=kv>" + "".join(f"<tr><td><b>{_h(k)}</b></td><td>{_h(v)}</td></tr>"
                                          for k, v in _evidence(d)) + "</table>")
    B.append(f"<h2>{_h(s.paper.ref)}: paper vs ours</h2><p class=small>{_h(_table_caption(d))}</p>")
    B.append(_html_grid(d))
    if d.missing:
        B.append(f"<p class=missing><b>Missing</b> (no finished runs): {_h(', '.join(d.missing))}</p>")
    if d.short_seeds():
        B.append(f"<p>Fewer seeds than other cells: {_h(', '.join(d.short_seeds()))}</p>")
    notes = _paper_footnotes(d)
    if notes:
        B.append("<ul class=small>" + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")

    if d.nets:
        B.append(f"<h2>Nets</h2><p class=small>{_h(_nets_intro(d))}</p><table><thead><tr>"
                 + "".join(f"<th>{_h(h)}</th>" for h in NETS_HEADER) + "</tr></thead><tbody>"
                 + "".join("<tr>" + "".join(f"<td>{_h(v)}</td>" for v in _net_row(n)) + "</tr>" for n in d.nets)
                 + "</tbody></table>")
    B.append("<h2>Claims</h2>")
    if d.claims:
        B.append(f"<p>Judged on our {_h(d.dataset)} runs (profile {_h(d.profile)}).</p><table><thead><tr>"
                 + "".join(f"<th>{_h(h)}</th>" for h in CLAIM_HEADER) + "</tr></thead><tbody>")
        for c in d.claims:
            cells = _claim_row(c)
            B.append("<tr>" + "".join(f"<td>{_h(v)}</td>" for v in cells[:-2])
                     + f"<td class={c['verdict'].replace(' ', '-')}>{_h(cells[-2])}</td><td>{_h(cells[-1])}</td></tr>")
        B.append("</tbody></table><ul class=small>"
                 + "".join(f"<li><b>{_h(c['id'])}</b>: {_h(c['detail'])}{_html_sub(claim_lines(c))}</li>"
                           for c in d.claims) + "</ul>")
        B.append(f"<p class=small>Method: {_h(d.method)}</p>")
    else:
        B.append("<p>The suite states no claims.</p>")

    B.append("<h2>Curves</h2>")
    if png:
        B.append(f"<img alt='training curves' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    if d.diverged:
        B.append(f"<h2>Diverged runs</h2><p>{_h(DIVERGED_RULE)}</p><ul>"
                 + "".join(f"<li>{_h(n)}</li>" for n in d.diverged) + "</ul>")
    if d.notes:
        B.append("<h2>Runs left out</h2><ul>" + "".join(f"<li>{_h(n)}</li>" for n in d.notes) + "</ul>")
    B.append(f"<p class=small>Generated by bench report {_h(d.generated)}.</p></body></html>")
    return "\n".join(B)
