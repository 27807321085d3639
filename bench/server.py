"""`bench server`: the cluster's MLflow tracking server, in the foreground.

A database backend (SQLite by default, any SQLAlchemy URI such as postgresql://... for many concurrent writers)
and proxied artifact serving: clients upload and download artifacts over HTTP through the server
(`mlflow-artifacts:/`), so a trial on any node can log a checkpoint that a trial on another node reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bench import BenchError


class ServerError(BenchError):
    exit_code = 2


def store_uris(store: str | None) -> tuple[str, str]:
    """(backend store URI, artifacts destination) for a directory or a SQLAlchemy URI."""
    if store and "://" in store:
        if store.startswith("sqlite:///"):
            db = Path(store.removeprefix("sqlite:///")).resolve()
            return f"sqlite:///{db}", str(db.parent / "mlartifacts")
        return store, str(Path("mlartifacts").resolve())     # a remote database: artifacts beside the server
    d = Path(store or ".").resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}", str(d / "mlartifacts")


def command(host: str, port: int, store: str | None, workers: int | None = None) -> list[str]:
    backend, artifacts = store_uris(store)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd


def serve(host: str = "127.0.0.1", port: int = 5000, store: str | None = None, workers: int | None = None) -> int:
    cmd = command(host, port, store, workers)
    print(f"tracking server on http://{host}:{port} (store {cmd[cmd.index('--backend-store-uri') + 1]}, "
          f"artifacts {cmd[cmd.index('--artifacts-destination') + 1]})", file=sys.stderr, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: {host} exposes the tracking server, unauthenticated, to every host that reaches this "
              "port; keep it inside the cluster's private network", file=sys.stderr, flush=True)
    # MLflow 3's server also starts a job runner (four huey consumers) for its GenAI jobs; bench logs runs only,
    # and those processes took CPU from the trials on every node. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true in
    # the environment brings them back.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    except OSError as e:
        raise ServerError(f"cannot start mlflow server: {e}") from None

    def forward(sig, _frame):
        _signal_group(proc, sig)

    signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            return proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """mlflow server runs uvicorn/gunicorn workers in its own session: signal that session, which we own."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
