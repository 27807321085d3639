"""`python -m bench.perf.tracking`: what MLflow tracking costs one trial, SQLite file against a `bench server`.

One trial's tracking life as the driver and worker do it (run creation with tags and params, SCHEDULED, RUNNING,
one log_batch per epoch, the finish), repeated for several trials, against a fresh SQLite store and against a
fresh tracking server on 127.0.0.1 (started here, stopped by its PID). Prints seconds per trial for each and their
difference. No Ray, no training: only the tracking calls.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from bench import server, track
from bench.procs import reap
from bench.trials import Trial


def one_store(uri: str, trials: int, epochs: int, metrics: int) -> float:
    exp = track.ensure_experiment(uri, "perf_tracking")
    parent = track.start_parent(uri, exp, suite="perf_tracking", profile="adhoc", dataset="synthetic", argv=[],
                                n_trials=trials, n_skipped=0)
    t0 = time.perf_counter()
    for i in range(trials):
        t = Trial.adhoc("resnet20", {"epochs": epochs}, seed=i)
        run = track.create_trial_run(uri, exp, parent, t)
        tr = track.TrialTracker(uri, run)
        tr.set_tags({"pid": 1, "host": "x"})
        for e in range(epochs):
            tr.log_metrics({f"m{k}": float(e + k) for k in range(metrics)}, step=e)
        tr.finish()
    return (time.perf_counter() - t0) / trials


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--metrics", type=int, default=8, help="metrics per epoch (a trial logs about 8)")
    a = ap.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix="bench-track-"))
    sqlite_s = one_store(f"sqlite:///{d / 'mlflow.db'}", a.trials, a.epochs, a.metrics)
    port = _free_port()
    proc = subprocess.Popen(server.command("127.0.0.1", port, str(d / "srv")), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise SystemExit("bench.perf.tracking: the tracking server did not start")
                time.sleep(0.5)
        up_s = time.perf_counter() - t0
        http_s = one_store(f"http://127.0.0.1:{port}", a.trials, a.epochs, a.metrics)
    finally:
        reap([psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)], 10, signal.SIGTERM)
    print(f"{a.trials} trials x {a.epochs} epochs x {a.metrics} metrics; server up in {up_s:.1f} s")
    print(f"sqlite file : {sqlite_s:.3f} s per trial")
    print(f"http server : {http_s:.3f} s per trial ({http_s - sqlite_s:+.3f} s, {http_s / sqlite_s:.2f}x)")


if __name__ == "__main__":
    main()
