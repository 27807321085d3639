"""Training curves in the style of the papers' figures: one line per cell, the mean over seeds, a min–max band.

'train_curves': train error vs iteration (ResNet Fig. 1 left); 'train_test_curves': train thin/dashed and test
bold in the same colour (ResNet Fig. 1/6); 'loss_curves': train loss on a log axis (Highway Fig. 1).
'none' (a table without a figure) draws train and test error as a diagnostic.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.spec import Suite

# figure kind -> [(curve metric, line style, line width)]
_LINES = {
    "train_curves": [("train_error", "-", 1.6)],
    "train_test_curves": [("train_error", "--", 0.9), ("test_error", "-", 2.2)],
    "loss_curves": [("train_loss", "-", 1.6)],
    "none": [("train_error", "--", 0.9), ("test_error", "-", 2.2)],
}


def figure_metrics(suite: Suite) -> tuple[str, ...]:
    return tuple(m for m, _, _ in _LINES[suite.layout.figure])


def seed_band(curves: pd.DataFrame, run_ids: list[str], metric: str) -> pd.DataFrame:
    """step -> mean, min, max over the runs that logged that step."""
    c = curves[(curves["metric"] == metric) & curves["run_id"].isin(run_ids)]
    if c.empty:
        return pd.DataFrame(columns=["mean", "min", "max"])
    wide = c.pivot_table(index="step", columns="run_id", values="value", aggfunc="last").sort_index()
    return pd.DataFrame({"mean": wide.mean(axis=1), "min": wide.min(axis=1), "max": wide.max(axis=1)})


def plot_curves(suite: Suite, runs: pd.DataFrame, curves: pd.DataFrame, path: Path, subtitle: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kind = suite.layout.figure
    loss = kind == "loss_curves"
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    cells = [c.id for c in suite.cells if len(runs) and (runs["cell"] == c.id).any()]
    palette = plt.get_cmap("tab10" if len(cells) <= 10 else "tab20")
    drawn = 0
    for i, cid in enumerate(cells):
        ids = runs.loc[runs["cell"] == cid, "run_id"].tolist()
        color = palette(i % palette.N)
        for metric, style, width in _LINES[kind]:
            b = seed_band(curves, ids, metric) if curves is not None and len(curves) else pd.DataFrame()
            if b.empty:
                continue
            k = 1.0 if loss else 100.0
            split = metric.split("_")[0]
            label = cid + ("" if len(_LINES[kind]) == 1 else f" ({split})")
            if len(b) == 1:
                # One evaluation (a profile that tests once, at the end) is a point, not a line: drawn as a dot
                # with its min-max bar, cells spread sideways so that dots at the same iteration stay apart.
                x = b.index.to_numpy(dtype=float) * (1 + 0.04 * (i - (len(cells) - 1) / 2) / max(1, len(cells)))
                m = b["mean"].to_numpy() * k
                err = [m - b["min"].to_numpy() * k, b["max"].to_numpy() * k - m]
                ax.errorbar(x, m, yerr=err, fmt="o" if style == "-" else "s", ms=5, capsize=2, color=color,
                            mfc=color if style == "-" else "none", label=label)
            else:
                ax.plot(b.index, b["mean"] * k, style, lw=width, color=color, label=label)
                if len(ids) > 1:
                    ax.fill_between(b.index, b["min"] * k, b["max"] * k, color=color, alpha=0.12, lw=0)
            drawn += 1
    ax.set_xlabel("iteration")
    ax.set_ylabel("train loss" if loss else ("error (%)" if kind != "train_curves" else "training error (%)"))
    if loss:
        ax.set_yscale("log")
    if drawn:
        ax.legend(fontsize=8, ncol=2 if drawn > 6 else 1)
    else:
        ax.text(0.5, 0.5, "no curves logged", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    title = suite.title + (" (diagnostic: the paper has no figure)" if kind == "none" else "")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
