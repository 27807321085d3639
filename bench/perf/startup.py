"""`python -m bench.perf.startup`: the time from `bench run` to the first training step, and where it goes.

Runs `bench run SUITE --profile smoke` (embedded Ray, a fresh SQLite store in a temporary directory) with
$BENCH_TIMELINE set, so the driver, the Ray worker and the training step mark named moments (bench.timeline);
then prints each moment's time since the command was launched. Also times, each in a fresh interpreter, the
imports a trial's worker process pays before it can train (bench.run.worker, and lightning.pytorch alone).

    python -m bench.perf.startup                                   # quickstart smoke, one cell, one seed
    python -m bench.perf.startup --suite degradation --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timeline import ENV

# In the order they happen; the first occurrence of each counts.
MOMENTS = [
    ("cli.main", "interpreter up, bench.cli imported"),
    ("driver.planned", "suite loaded, plan made, models checked"),
    ("driver.data_loaded", "dataset in memory"),
    ("driver.ray_up", "embedded Ray started"),
    ("driver.store_ready", "MLflow store and experiment ready"),
    ("driver.wave_submitted", "runs created, Tune starts the wave"),
    ("worker.trainable", "a trial's worker entered the trainable"),
    ("train.fit_start", "loaders and model built, fit starts"),
    ("train.first_step", "first training step done"),
]


def timeline(path: Path, t0: float) -> dict[str, float]:
    seen: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        t, _pid, name = line.split(" ", 2)
        seen.setdefault(name, float(t) - t0)
    return seen


def one_run(suite: str, profile: str, cells: list[str] | None, num_cpus: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as d:
        wd = Path(d)
        env = {**os.environ, ENV: str(wd / "timeline.txt")}
        cmd = [sys.executable, "-m", "bench.cli", "run", suite, "--profile", profile, "--seeds", "1",
               "--tracking-uri", f"sqlite:///{wd / 'mlflow.db'}", "--storage", str(wd / "state")]
        if cells:
            cmd += ["--cells", *cells]
        if num_cpus:
            cmd += ["--num-cpus", str(num_cpus)]
        t0 = time.time()
        r = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=900)
        total = time.time() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench.perf.startup: bench run failed ({r.returncode}): "
                             f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        out = timeline(wd / "timeline.txt", t0)
        out["exit"] = total
        return out


def import_cost(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="quickstart")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--cells", nargs="+", default=["resnet20"], help="default: one cell (resnet20)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--num-cpus", type=int)
    a = ap.parse_args(argv)
    runs = [one_run(a.suite, a.profile, a.cells, a.num_cpus) for _ in range(a.repeat)]
    imports = {m: [import_cost(m) for _ in range(a.repeat)] for m in ("lightning.pytorch", "bench.run.worker")}
    print(f"bench run {a.suite} --profile {a.profile} --cells {' '.join(a.cells)} --seeds 1, embedded Ray, "
          f"{os.cpu_count()} CPUs, {a.repeat} run(s); seconds since launch (median)")
    prev = 0.0
    for name, what in MOMENTS + [("exit", "bench run exited")]:
        vals = [r[name] for r in runs if name in r]
        if not vals:
            print(f"  {name:<22} {'-':>7}           {what} (not marked)")
            continue
        t = statistics.median(vals)
        print(f"  {name:<22} {t:7.2f}  (+{t - prev:5.2f})  {what}")
        prev = t
    for m, v in imports.items():
        print(f"import {m} in a fresh interpreter: {statistics.median(v):.2f} s")
    first = [r["train.first_step"] for r in runs if "train.first_step" in r]
    if first:
        print(f"time to first training step: {statistics.median(first):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
