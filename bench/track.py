"""Everything MLflow. One experiment per suite, one parent run per `bench run`, one child run per trial.

The driver creates the store, the experiment and every child run (params and identity tags included) before
any trial starts: concurrent schema creation on SQLite crashes, and a trial that dies early still leaves a
run with its status. Workers only append metrics, tags and artifacts to the run id they are handed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from bench import BenchError
from bench.trials import Trial, flatten

T = "bench."  # tag prefix: tags.bench.suite etc. in search_runs' DataFrame
PARENT = "parent"

class TrackingError(BenchError):
    pass

def default_tracking_uri(cwd: Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlflow.db').resolve()}"

def normalize_uri(uri: str) -> str:
    """Make sqlite paths absolute: Ray workers run in their own directories."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    if "://" not in uri:
        raise TrackingError(f"tracking URI {uri!r} has no scheme; use sqlite:///path.db or http://host:port")
    return uri

def require_store(uri: str) -> None:
    """Readers must not create an empty SQLite store as a side effect (MLflow would)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise TrackingError(f"no tracking store at {uri}; run 'bench run SUITE' first or pass --tracking-uri")


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)

def artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store, as an absolute path (the MLflow default is cwd-relative)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None

def ensure_experiment(uri: str, suite: str) -> str:
    c = client(uri)
    try:
        exp = c.get_experiment_by_name(f"bench/{suite}")
        if exp is not None:
            return exp.experiment_id
        return c.create_experiment(f"bench/{suite}", artifact_location=_exp_artifacts(uri, suite),
                                   tags={f"{T}suite": suite})
    except Exception as e:  # noqa: BLE001 - any failure here means the store is unusable
        raise TrackingError(f"tracking store {uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None

def _exp_artifacts(uri: str, suite: str) -> str | None:
    root = artifact_root(uri)
    return f"{root}/{suite}" if root else None

def find_experiment(uri: str, suite: str) -> str | None:
    exp = client(uri).get_experiment_by_name(f"bench/{suite}")
    return exp.experiment_id if exp else None

def git_commit() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

def start_parent(uri: str, exp_id: str, *, suite: str, profile: str, dataset: str, argv: list[str],
                 n_trials: int, n_skipped: int) -> str:
    c = client(uri)
    run = c.create_run(exp_id, run_name=f"{suite}:{profile}:{dataset}:{time.strftime('%Y%m%d-%H%M%S')}", tags={
        f"{T}kind": PARENT, f"{T}suite": suite, f"{T}profile": profile, f"{T}dataset": dataset,
        f"{T}git_commit": git_commit(), f"{T}host": platform.node(), f"{T}argv": " ".join(argv)[:5000],
        f"{T}driver": f"{platform.node()}:{os.getpid()}",
    })
    c.log_batch(run.info.run_id, metrics=[Metric("trials", n_trials, _now(), 0),
                                          Metric("trials_skipped", n_skipped, _now(), 0)])
    return run.info.run_id

def create_trial_run(uri: str, exp_id: str, parent_id: str, trial: Trial,
                     extra_tags: dict[str, str] | None = None) -> str:
    c = client(uri)
    tags = {
        "mlflow.parentRunId": parent_id, f"{T}kind": "trial", f"{T}suite": trial.suite, f"{T}cell": trial.cell,
        f"{T}seed": str(trial.seed), f"{T}profile": trial.profile, f"{T}dataset": trial.dataset,
        f"{T}model": trial.model, f"{T}config_hash": trial.config_hash, f"{T}git_commit": git_commit(),
    }
    if trial.teacher:
        tags[f"{T}teacher_hash"] = trial.teacher
    if trial.search_base:
        tags[f"{T}search_base"] = trial.search_base
    tags.update({f"{T}{k}": v for k, v in (extra_tags or {}).items()})
    run = c.create_run(exp_id, run_name=trial.name, tags=tags)
    params = flatten({"model": trial.model, "model_kwargs": trial.model_kwargs, "seed": trial.seed,
                      "dataset": trial.dataset, "method": trial.method, "protocol": trial.protocol.model_dump(),
                      "search": trial.search or {}})
    # MLflow caps a param value at 6000 chars and a batch at 100 params.
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i:i + 100])
    c.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id

def finished_trials(uri: str, exp_id: str) -> dict[str, tuple[str, str]]:
    """config hash -> (run id, git commit) of the newest FINISHED trial run."""
    c = client(uri)
    out: dict[str, tuple[str, str]] = {}
    token = None
    while True:
        page = c.search_runs([exp_id], filter_string=f"tags.`{T}kind` = 'trial' and attributes.status = 'FINISHED'",
                             max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        for r in page:
            out.setdefault(r.data.tags.get(f"{T}config_hash", ""),
                           (r.info.run_id, r.data.tags.get(f"{T}git_commit", "unknown")))
        token = page.token
        if not token:
            return out


def unfinished_trials(uri: str, exp_id: str) -> dict[str, dict[str, Any]]:
    """config hash -> the newest trial run that did not finish: run_id, status, parent, diverged."""
    c = client(uri)
    out: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        page = c.search_runs([exp_id], filter_string=f"tags.`{T}kind` = 'trial' and attributes.status != 'FINISHED'",
                             max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        for r in page:
            out.setdefault(r.data.tags.get(f"{T}config_hash", ""), {
                "run_id": r.info.run_id, "status": r.info.status, "parent": r.data.tags.get("mlflow.parentRunId"),
                "diverged": r.data.tags.get(f"{T}diverged") == "1"})
        token = page.token
        if not token:
            return out


def heartbeat(uri: str, parent_id: str) -> None:
    """A live driver says so every few seconds; runs under a parent whose heartbeat is fresh are held by it."""
    client(uri).set_tag(parent_id, f"{T}heartbeat", f"{time.time():.0f}")


def driver_alive(uri: str, parent_id: str | None, live_s: float) -> bool:
    """Whether the `bench run` behind this parent run still runs: on this host, its process exists (a kill -9
    is seen at once); elsewhere, its heartbeat is younger than live_s."""
    if not parent_id:
        return False
    try:
        tags = client(uri).get_run(parent_id).data.tags
    except Exception:  # noqa: BLE001 - a deleted parent is a dead driver
        return False
    host, _, pid = tags.get(f"{T}driver", "").rpartition(":")
    if host == platform.node() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    beat = tags.get(f"{T}heartbeat")
    return bool(beat) and time.time() - float(beat) < live_s


def reopen_run(uri: str, run_id: str, parent_id: str) -> None:
    """A trial resumed by a later `bench run` continues its run, now under that run's parent."""
    c = client(uri)
    c.set_tag(run_id, "mlflow.parentRunId", parent_id)
    c.update_run(run_id, status="SCHEDULED")


def end_run(uri: str, run_id: str, status: str, error: str | None = None) -> None:
    c = client(uri)
    if error:
        c.set_tag(run_id, f"{T}error", error[:5000])
    c.set_terminated(run_id, status=status)

def run_status(uri: str, run_id: str) -> str:
    return client(uri).get_run(run_id).info.status


def run_state(uri: str, run_id: str) -> tuple[str, str | None]:
    """(status, the error tag if any)."""
    r = client(uri).get_run(run_id)
    return r.info.status, r.data.tags.get(f"{T}error")

def _now() -> int:
    return int(time.time() * 1000)

class TrialTracker:
    """Worker side: appends to a run the driver already created. One log_batch per epoch keeps SQLite calm."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.c = client(uri)
        self.c.update_run(run_id, status="RUNNING")
        self.logged: dict[str, int] = {}   # metric -> last step already in the run (a resumed trial)

    def tags(self) -> dict[str, str]:
        return self.c.get_run(self.run_id).data.tags

    def skip_logged(self) -> None:
        """A resumed trial replays epochs after its checkpoint; some may be logged already (killed between the
        log and the checkpoint). Log each (metric, step) once."""
        for key in self.c.get_run(self.run_id).data.metrics:
            hist = self.c.get_metric_history(self.run_id, key)
            self.logged[key] = max((h.step for h in hist), default=-1)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.c.log_batch(self.run_id, tags=[RunTag(f"{T}{k}", str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = _now()
        rows = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if rows:
            self.c.log_batch(self.run_id, metrics=rows)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        self.c.log_artifact(self.run_id, str(path), subdir)

    def finish(self, status: str = "FINISHED") -> None:
        self.c.set_terminated(self.run_id, status=status)

def download_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                    tracking_uri=uri))

def _search_df(uri: str, exp: str, filter_string: str, **kw) -> pd.DataFrame:
    # mlflow.search_runs reads the global tracking URI, and set_tracking_uri exports it to the environment
    # (child processes would inherit it): set it for this call only.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs([exp], filter_string=filter_string, max_results=50000, **kw)
    finally:
        mlflow.set_tracking_uri(before)   # None clears it again


def load_runs(uri: str, suite: str) -> pd.DataFrame:
    """All trial runs of a suite as search_runs' DataFrame (metrics.*, params.*, tags.*)."""
    exp = find_experiment(uri, suite)
    if exp is None:
        return pd.DataFrame()
    return _search_df(uri, exp, f"tags.`{T}kind` = 'trial'")


def load_parents(uri: str, suite: str) -> pd.DataFrame:
    exp = find_experiment(uri, suite)
    if exp is None:
        return pd.DataFrame()
    return _search_df(uri, exp, f"tags.`{T}kind` = '{PARENT}'", order_by=["attributes.start_time DESC"])


def load_curves(uri: str, run_ids: list[str], metrics: tuple[str, ...] = (
        "train_error", "train_loss", "test_error", "test_loss", "val_error", "lr", "epoch",
        "images_per_sec")) -> pd.DataFrame:
    """Long table: run_id, metric, step, value. One history call per run and metric."""
    c = client(uri)
    rows = []
    for rid in run_ids:
        for m in metrics:
            for h in c.get_metric_history(rid, m):
                rows.append((rid, m, h.step, h.value))
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])

RUN_STATUSES = tuple(RunStatus.all_status())
