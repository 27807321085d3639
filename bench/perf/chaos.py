"""`python -m bench.perf.chaos SUITE --profile P --kills 5`: run a suite while SIGKILLing random trial workers, then
prove nothing was lost.

It runs `bench run` (embedded Ray) into a fresh tracking store and storage dir of its own, kills the worker
process of a random running trial (its PID is the run's `bench.pid` tag) at random times, lets the suite
finish, and prints: the kills, the retries, the epochs lost per kill, trials FINISHED out of expected,
duplicate metric rows, runs left non-terminal, and the wall time against the same suite without kills. It exits
non-zero when anything was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient


@dataclass
class Kill:
    at_s: float
    run: str
    name: str
    pid: int
    epoch_logged: float     # the newest epoch in MLflow when the worker died
    epoch_saved: int        # the newest epoch checkpoint on disk then: where the retry restarts


def _trial_runs(c: MlflowClient, suite: str) -> list:
    exp = c.get_experiment_by_name(f"bench/{suite}")
    if exp is None:
        return []
    return [r for r in c.search_runs([exp.experiment_id], max_results=10000)
            if r.data.tags.get("bench.kind") == "trial"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _bench_run(args: list[str], workdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *args], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_one(c: MlflowClient, suite: str, storage: Path, rng: random.Random, t0: float,
              killed_pids: set[int]) -> Kill | None:
    running = []
    for r in _trial_runs(c, suite):
        pid = int(r.data.tags.get("bench.pid", "0") or 0)
        # A fresh attempt (not a pid killed already) that has finished an epoch since it started.
        if r.info.status == "RUNNING" and pid and pid not in killed_pids and _alive(pid) \
                and "epoch" in r.data.metrics:
            running.append((r, pid))
    if not running:
        return None
    r, pid = rng.choice(running)
    os.kill(pid, signal.SIGKILL)
    killed_pids.add(pid)
    at = time.time() - t0
    # Read both after the kill, when neither can move any more.
    time.sleep(0.2)
    meta = storage / "checkpoints" / r.data.tags["bench.config_hash"] / "meta.json"
    try:
        saved = int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        saved = 0
    logged = c.get_run(r.info.run_id).data.metrics.get("epoch", r.data.metrics["epoch"])
    return Kill(at, r.info.run_id, r.info.run_name, pid, logged, saved)


def _duplicates(c: MlflowClient, runs: list) -> int:
    dup = 0
    for r in runs:
        for key in r.data.metrics:
            steps = [h.step for h in c.get_metric_history(r.info.run_id, key)]
            dup += len(steps) - len(set(steps))
    return dup


def run(suite: str, profile: str, kills: int, seed: int, workdir: Path, baseline: bool,
        extra: list[str], every: tuple[float, float] = (5.0, 20.0)) -> int:
    from bench import models
    from bench.spec import load_suite
    from bench.trials import make_plan

    if Path(suite).exists():
        suite = str(Path(suite).resolve())   # `bench run` runs in the work dir
    plan = make_plan(load_suite(suite), profile, model_options=lambda m: set(models.model_options(m)))
    name, expected = plan.suite.name, len(plan.trials)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    base_s = None
    if baseline:
        b = workdir / "baseline"
        b.mkdir(exist_ok=True)
        t0 = time.time()
        p = _bench_run([suite, "--profile", profile, "--tracking-uri", f"sqlite:///{b / 'mlflow.db'}",
                        "--storage", str(b / "storage"), *extra], b)
        _, err = p.communicate()
        base_s = time.time() - t0
        print(f"baseline (no kills): exit {p.returncode}, {base_s:.0f} s", flush=True)
        if p.returncode != 0:
            print(f"the suite fails without kills: {err.strip()[-300:]}")
            return 1

    d = workdir / "chaos"
    d.mkdir(exist_ok=True)
    uri, storage = f"sqlite:///{d / 'mlflow.db'}", d / "storage"
    c = MlflowClient(uri)
    t0 = time.time()
    # Enough retries that even a trial killed every time survives.
    p = _bench_run([suite, "--profile", profile, "--tracking-uri", uri, "--storage", str(storage),
                    "--max-failures", str(kills + 1), *extra], d)
    done: list[Kill] = []
    killed_pids: set[int] = set()
    next_at = rng.uniform(*every)
    while p.poll() is None:
        time.sleep(0.5)
        if len(done) < kills and time.time() - t0 >= next_at:
            try:
                k = _kill_one(c, name, storage, rng, t0, killed_pids)
            except Exception:  # noqa: BLE001 - the store may be busy; try again shortly
                k = None
            if k is not None:
                done.append(k)
                print(f"kill {len(done)}: {k.at_s:6.1f} s  {k.name}  pid {k.pid}  epoch logged "
                      f"{k.epoch_logged:g}, checkpoint epoch {k.epoch_saved}", flush=True)
                next_at = time.time() - t0 + rng.uniform(*every)
    _, err = p.communicate()
    wall = time.time() - t0

    runs = _trial_runs(c, name)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    open_runs = sum(r.info.status not in ("FINISHED", "FAILED", "KILLED") for r in runs)
    retries = sum(int(r.data.tags.get("bench.retries", 0)) for r in runs)
    dup = _duplicates(c, runs)
    # An epoch is logged, then saved: a kill loses the part of the epoch that was running (< 1), or, when it
    # lands between an epoch's log and its checkpoint, that one epoch (its rows are not logged again).
    lost = [k.epoch_logged - k.epoch_saved for k in done]
    print(f"\nsuite {name} (profile {profile}), {expected} trials; store {uri}")
    print(f"kills made            : {len(done)} of {kills} asked")
    print(f"retries (run tags)    : {retries}")
    print("epochs lost per kill  : " + (", ".join(f"{x:g}" if x > 0 else "< 1" for x in lost) or "-")
          + "  (the epoch in progress; 1 where the kill fell between an epoch's log and its checkpoint)")
    print(f"trials FINISHED       : {finished} of {expected}  (runs: {len(runs)})")
    print(f"duplicate metric rows : {dup}")
    print(f"runs left non-terminal: {open_runs}")
    print(f"wall time             : {wall:.0f} s" + (f" vs {base_s:.0f} s without kills ({wall / base_s:.2f}x)"
                                                     if base_s else ""))
    ok = (p.returncode == 0 and finished == expected == len(runs) and dup == 0 and open_runs == 0
          and all(x <= 1 for x in lost) and len(done) == kills)
    if not ok:
        print(f"LOST SOMETHING (bench run exit {p.returncode}){': ' + err.strip()[-300:] if err.strip() else ''}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--profile", default="reduced")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times and victims")
    ap.add_argument("--workdir", default=None, help="default: ./.bench/chaos-<time>")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run without kills")
    ap.add_argument("--every", default="5,20", help="seconds between kills, drawn uniformly in LO,HI")
    a, extra = ap.parse_known_args(argv)   # the rest goes to `bench run` (e.g. --num-cpus 2)
    wd = Path(a.workdir or f".bench/chaos-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    lo, hi = (float(x) for x in a.every.split(","))
    return run(a.suite, a.profile, a.kills, a.seed, wd, not a.no_baseline, extra, (lo, hi))


if __name__ == "__main__":
    sys.exit(main())
