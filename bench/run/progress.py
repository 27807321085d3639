"""Live progress of a suite: trials done/running/failed, each running trial's epoch, and an ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class _State:
    name: str
    status: str = "pending"
    epoch: int = 0
    progress: float = 0.0
    train_error: float | None = None
    test_error: float | None = None


class Progress:
    def __init__(self, console: Console, names: dict[str, str], total: int | None = None):
        self.console = console
        self.trials = {rid: _State(n) for rid, n in names.items()}
        self.total = total or len(self.trials)  # a search adds its samples as Tune starts them
        self.t0 = time.time()
        self.live: Live | None = None
        self.interactive = console.is_terminal

    def __enter__(self) -> Progress:
        if self.interactive:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def event(self, kind: str, run_id: str, result: dict) -> None:
        s = self.trials.get(run_id)
        if s is None:
            if kind != "start":
                return
            s = self.trials[run_id] = _State(result.get("name", run_id))
        if kind == "start":
            s.status = "running"
        elif kind == "result":
            s.epoch = int(result.get("epoch", s.epoch))
            s.progress = float(result.get("progress", s.progress))
            s.train_error = result.get("train_error", s.train_error)
            s.test_error = result.get("test_error", s.test_error)
        elif kind == "complete":
            s.status, s.progress = "done", 1.0
        elif kind == "error":
            s.status = "failed"
        self.mark_line(kind, s)
        if self.live is not None:
            self.live.update(self._render())

    def add(self, run_id: str, name: str) -> None:
        self.trials.setdefault(run_id, _State(name))

    def set_status(self, run_id: str, status: str) -> None:
        if run_id in self.trials:
            self.trials[run_id].status = status
            self.mark_line(status, self.trials[run_id])

    def mark_line(self, kind: str, s: _State) -> None:
        if self.interactive:
            return
        if kind == "result":
            kind = "epoch"
        err = f" train_err={s.train_error:.4f}" if s.train_error is not None else ""
        err += f" test_err={s.test_error:.4f}" if s.test_error is not None else ""
        self.console.print(f"[{self.counts()}] {s.name}: {kind} (epoch {s.epoch}){err}", highlight=False)

    def counts(self) -> str:
        c = {k: 0 for k in ("done", "running", "failed", "pending")}
        for s in self.trials.values():
            c[s.status if s.status in c else "failed"] += 1
        eta = self.eta()
        c["pending"] += max(0, self.total - len(self.trials))
        return (f"done {c['done']}/{max(self.total, len(self.trials))}, running {c['running']}, failed {c['failed']}"
                + (f", ETA {eta}" if eta else ""))

    def eta(self) -> str:
        # Fraction of all scheduled iterations done so far; failed trials count as done work.
        frac = sum(1.0 if s.status in ("done", "failed") else s.progress for s in self.trials.values())
        frac /= max(1, self.total, len(self.trials))
        if frac <= 0.01:
            return ""
        left = (time.time() - self.t0) * (1 - frac) / frac
        return f"{int(left // 60)}m{int(left % 60):02d}s"

    def _render(self) -> Table:
        t = Table(title=self.counts(), title_justify="left", expand=False)
        for col in ("trial", "status", "epoch", "progress", "train err", "test err"):
            t.add_column(col)
        for s in self.trials.values():
            if s.status == "pending":
                continue
            t.add_row(s.name, s.status, str(s.epoch), f"{100 * s.progress:.0f}%",
                      "" if s.train_error is None else f"{s.train_error:.4f}",
                      "" if s.test_error is None else f"{s.test_error:.4f}")
        return t
