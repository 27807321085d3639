"""Named moments of a run, for `python -m bench.perf.startup`: where the time to the first step goes.

`mark(name)` appends "wall-clock pid name" to the file named by $BENCH_TIMELINE, and does nothing when it is
unset. It imports nothing, so every layer (driver, Ray worker, training step) can call it; the variable reaches
Ray's workers through the environment they inherit from the driver.
"""

from __future__ import annotations

import os
import time

ENV = "BENCH_TIMELINE"


def mark(name: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = f"{time.time():.6f} {os.getpid()} {name}\n"
    # One write per line in append mode: lines of several processes do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
