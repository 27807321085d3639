"""Stopping processes we started, by PID: signal, wait, SIGKILL what is left. psutil only; imports nothing of
bench's, so the driver, the measuring tools and the tests share it."""

from __future__ import annotations

import psutil


def reap(procs: list[psutil.Process], timeout: float, sig: int | None = None) -> None:
    """Send sig to each process (when given), wait up to timeout for all of them to exit, then SIGKILL the rest
    and wait for those too. Processes already gone are skipped."""
    if sig is not None:
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
