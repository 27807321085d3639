"""Paper vs reproduction: the paper's table layout, claims judged over seeds, training curves.

`build_report` is the entry point (reads MLflow, writes reports/<suite>/); the rest are pure functions on
search_runs-shaped DataFrames.
"""

from bench.report.build import REPORTS_DIR, ReportError, ReportResult, build_report, resolve_target
from bench.report.claims import check_claims, judge
from bench.report.plots import plot_curves
from bench.report.render import ReportData, render_html, render_markdown
from bench.report.tables import cell_stats, iters_to, metric_values, paper_table, select_runs, summarize_runs

__all__ = [
    "REPORTS_DIR", "ReportData", "ReportError", "ReportResult", "build_report", "cell_stats", "check_claims",
    "iters_to", "judge", "metric_values", "paper_table", "plot_curves", "render_html", "render_markdown",
    "resolve_target", "select_runs", "summarize_runs",
]
