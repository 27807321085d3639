"""`bench report SUITE`: MLflow runs -> reports/<suite>/{report.md, report.html, table.csv, runs.parquet, curves.png}.

The only module of the report that touches MLflow (through bench.track) or the disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench import BenchError
from bench.report.claims import check_claims
from bench.report.plots import figure_metrics, plot_curves
from bench.report.render import ReportData, render_html, render_markdown
from bench.report.tables import (TAG, cell_stats, curve_metrics, diverged_notes, exclusions, metric_values, net_rows,
                                 paper_table, same_dataset, select_runs, summarize_runs)
from bench.spec import Suite, get_profile

if TYPE_CHECKING:
    from bench.report.sequential import Design

# Relative: the default output is ./reports/<suite> in the working directory, never inside the installed package.
REPORTS_DIR = Path("reports")


class ReportError(BenchError):
    pass


@dataclass
class ReportResult:
    out_dir: Path
    table: pd.DataFrame
    claims: list[dict]
    markdown: str
    files: list[Path] = field(default_factory=list)


def resolve_target(suite: Suite, parents: pd.DataFrame, runs: pd.DataFrame, profile: str | None,
                   dataset: str | None) -> tuple[str, str]:
    """Profile and dataset to report: the arguments, else those of the newest `bench run` of the suite."""
    if profile and dataset:
        return profile, dataset
    for df in (parents, runs):
        if df is None or df.empty or f"{TAG}profile" not in df or f"{TAG}dataset" not in df:
            continue
        if "start_time" in df:
            df = df.sort_values("start_time", ascending=False, kind="stable")
        ok = pd.Series(True, index=df.index)
        if profile:
            ok &= df[f"{TAG}profile"] == profile
        if dataset:
            ok &= df[f"{TAG}dataset"] == dataset
        if ok.any():
            row = df[ok].iloc[0]
            return profile or str(row[f"{TAG}profile"]), dataset or str(row[f"{TAG}dataset"])
    profile = profile or "paper"
    if dataset is None:
        try:
            dataset = get_profile(suite, profile).dataset or suite.dataset
        except BenchError:
            dataset = suite.dataset
    return profile, dataset


def _config_hashes(suite: Suite, profile: str, dataset: str, seeds: int | None = None) -> set[str] | None:
    """The hashes of the plan's trials: runs reused under another profile name match through them."""
    from bench import models
    from bench.trials import make_plan

    try:
        plan = make_plan(suite, profile, dataset, seeds, model_options=lambda m: set(models.model_options(m)))
    except BenchError:
        return None
    return {t.config_hash for t in plan.trials}


# Tags on a sequential `bench run --until-decided`'s parent run: the design its claims are judged with.
DESIGN_TAGS = {"rule": "sequential", "first": "sequential.first_seeds", "max": "sequential.max_seeds"}
DESIGN_RULE = "lan-demets-obf"


def design_tags(design: Design) -> dict[str, str]:
    return {DESIGN_TAGS["rule"]: DESIGN_RULE, DESIGN_TAGS["first"]: str(design.first),
            DESIGN_TAGS["max"]: str(design.max)}


def designs_of(parents: pd.DataFrame, profile: str, dataset: str) -> list[Design]:
    """The sequential designs of a profile's `bench run`s in the store, newest first (none for fixed-n runs)."""
    from bench.report.sequential import Design

    rule, first, most = (f"{TAG}{DESIGN_TAGS[k]}" for k in ("rule", "first", "max"))
    if parents is None or parents.empty or rule not in parents:
        return []
    df = parents[(parents[rule] == DESIGN_RULE) & (parents.get(f"{TAG}profile") == profile)
                 & (parents.get(f"{TAG}dataset") == dataset)]
    if "start_time" in df:
        df = df.sort_values("start_time", ascending=False, kind="stable")
    return list(dict.fromkeys(Design(int(r[first]), int(r[most])) for _, r in df.iterrows()))


def judge_store(suite: Suite, uri: str, profile: str, dataset: str,
                design: Design) -> tuple[list[dict], pd.DataFrame]:
    """The claims of the suite's runs in the store, judged with a sequential design, and the runs they were
    judged on: what `bench run --until-decided` decides its next wave from. MLflow through bench.track."""
    from bench import track

    runs = track.load_runs(uri, suite.name)
    hashes = _config_hashes(suite, profile, dataset, design.max)
    used = select_runs(runs, profile, dataset, cells=[c.id for c in suite.cells], config_hashes=hashes,
                       best_of=search_target(suite, profile))
    wanted = set()
    for cl in suite.claims:
        if cl.metric.startswith("iters_to:"):
            wanted |= set(curve_metrics(cl.metric))
    curves = track.load_curves(uri, used["run_id"].tolist(), metrics=tuple(sorted(wanted))) if wanted else None
    return check_claims(suite, used, curves, profile=profile, design=design), used


def search_target(suite: Suite, profile: str) -> tuple[str, str] | None:
    """(metric, mode) that picks the best search sample, when the suite (or the profile) searches."""
    if suite.search is None:
        return None
    over = (suite.profiles.get(profile).search or {}) if profile in suite.profiles else {}
    return over.get("metric", suite.search.metric), over.get("mode", suite.search.mode)


def dataset_warning(suite: Suite, dataset: str) -> str | None:
    if same_dataset(dataset, suite.paper.dataset):
        return None
    return (f"Runs are on {dataset}; the paper's numbers are on {suite.paper.dataset}. Absolute numbers are not "
            f"comparable; only the claims (orderings) are judged.")


def _write_atomic(out_dir: Path, write) -> list[Path]:
    """`write(tmp_dir)` fills a staging dir beside the target; only complete files are then renamed into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        write(tmp)
        # Data first, the human-facing report last: a report.md always describes files that exist.
        names = ["runs.parquet", "table.csv", "curves.png", "report.html", "report.md"]
        for name in names:
            os.replace(tmp / name, out_dir / name)
        return [out_dir / n for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_report(suite: Suite, uri: str, out_dir: Path | None = None, profile: str | None = None,
                 dataset: str | None = None) -> ReportResult:
    from bench import track  # MLflow is imported only here

    uri = track.normalize_uri(uri)
    runs = track.load_runs(uri, suite.name)
    parents = track.load_parents(uri, suite.name)
    profile, dataset = resolve_target(suite, parents, runs, profile, dataset)
    cells = [c.id for c in suite.cells]
    # A profile run sequentially is judged sequentially: its seeds were added by looking at its claims.
    design = next(iter(designs_of(parents, profile, dataset)), None)
    hashes = _config_hashes(suite, profile, dataset, design.max if design else None)
    used = select_runs(runs, profile, dataset, cells=cells, config_hashes=hashes, best_of=search_target(suite, profile))
    if used.empty:
        raise ReportError(f"no finished runs of suite {suite.name} (profile {profile}, dataset {dataset}) in {uri}; "
                          f"run 'bench run {suite.name}' first")

    wanted = set(figure_metrics(suite)) | set(curve_metrics(suite.layout.metric))
    for cl in suite.claims:
        wanted |= set(curve_metrics(cl.metric))
    curves = track.load_curves(uri, used["run_id"].tolist(), metrics=tuple(sorted(wanted)))

    stats = cell_stats(suite, used, curves)
    if not same_dataset(dataset, suite.paper.dataset):
        # Ours on another dataset against the paper's number is not a quantity.
        stats[["delta", "z", "frac_above"]] = float("nan")
    table = paper_table(suite, used, curves, stats=stats)
    claims = check_claims(suite, used, curves, profile=profile, design=design)
    warn = dataset_warning(suite, dataset)
    data = ReportData(
        suite=suite, profile=profile, dataset=dataset, uri=uri, stats=stats, claims=claims,
        summary=summarize_runs(used), warnings=[warn] if warn else [],
        notes=exclusions(runs, used, profile, dataset, cells, hashes),
        diverged=diverged_notes(used, [suite.layout.metric, *(cl.metric for cl in suite.claims)], curves),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), design=design,
        nets=net_rows(suite, profile, used),
    )
    markdown = render_markdown(data)

    parquet = used.copy()
    vals = metric_values(used, suite.layout.metric, curves)
    parquet[f"report.{suite.layout.metric}"] = vals["value"]
    parquet["report.censored"] = vals["censored"]
    parquet["report.diverged"] = vals["diverged"]

    def write(tmp: Path) -> None:
        parquet.to_parquet(tmp / "runs.parquet", engine="pyarrow", index=False)
        table.to_csv(tmp / "table.csv", float_format="%.6g")
        plot_curves(suite, used, curves, tmp / "curves.png",
                    subtitle=f"{data.ours_label}: mean over seeds, band = min–max")
        (tmp / "report.html").write_text(render_html(data, (tmp / "curves.png").read_bytes()), encoding="utf-8")
        (tmp / "report.md").write_text(markdown, encoding="utf-8")

    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / suite.name
    files = _write_atomic(out_dir, write)
    return ReportResult(out_dir=out_dir, table=table, claims=claims, markdown=markdown, files=files)
