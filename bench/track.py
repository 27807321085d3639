"""Everything MLflow. One experiment per suite, one parent run per `bench run`, one child run per trial.

The driver creates the store, the experiment and every child run (params and identity tags included) before
any trial starts: concurrent schema creation on SQLite crashes, and a trial that dies early still leaves a
run with its status. Workers only append metrics, tags and artifacts to the run id they are handed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import random
import re
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from bench import BenchError
from bench.net import unreachable
from bench.trials import Trial, flatten

T = "bench."  # tag prefix: tags.bench.suite etc. in search_runs' DataFrame
PARENT = "parent"

class TrackingError(BenchError):
    pass


class TrackingUnavailable(TrackingError):
    """The store stayed unreachable or busy for the whole retry budget; the message names it."""


class RunEnded(TrackingError):
    """A worker was handed a run its driver has already ended."""

log = logging.getLogger(__name__)
R = TypeVar("R")

# ---- transient store errors: one retry wrapper for every write (and the driver's reads) ------------------------
# SQLite answers "database is locked" (SQLITE_BUSY) when a writer has waited out MLflow's busy_timeout (20 s; 5 s
# for the connection MLflow opens to inspect the schema): many writers, a long reader such as a report or `mlflow
# ui`, a slow disk. A tracking server answers 5xx or drops the connection while it restarts. Both are worth waiting
# out, and so does a server whose connection pool ran dry under load (measured with python -m
# bench.perf.tracking_load at 64 writers); anything else (a bad param, a terminated run, no such experiment) is not,
# and propagates at once.
RETRY_BUDGET_S = float(os.environ.get("BENCH_TRACK_RETRY_S", "60"))   # wall time from the first attempt
RETRY_BASE_S = 0.05        # first backoff; doubles per retry ...
RETRY_CAP_S = 4.0          # ... up to this, each with jitter (half fixed, half random)
RETRY_STATS = {"retries": 0, "gave_up": 0}   # per process; tests and diagnostics read it
# MLflow's HTTP client retries each request on its own (7 times, backoff doubling from 2 s: about 4 minutes) before
# raising, so a dead server would hold one call far past BENCH_TRACK_RETRY_S. The retry below is the one policy;
# MLflow reads this per request, so setting it before the first one is enough (Ray workers import this too).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
_TRANSIENT = re.compile(
    r"database is locked|database table is locked|database is busy|SQLITE_BUSY|"
    r"connection (?:reset|refused|aborted|broken)|max retries exceeded|temporarily[ _]unavailable|"
    # A server killed while it sent its answer: the write may have committed, and replaying it is safe.
    r"IncompleteRead|remote end closed connection|"
    r"error code 50[234]|too many 50[234] error responses|timeout exception|"
    # An overloaded server: its workers' SQLAlchemy pools ran dry for 30 s (MLflow answers 400 BAD_REQUEST).
    r"QueuePool limit of size", re.I)
_TRANSIENT_TYPES = (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError)

def transient(e: BaseException) -> bool:
    """Locked/busy SQLite or an unreachable/overloaded server, anywhere in the exception chain: MLflow wraps the
    sqlite3.OperationalError in sqlalchemy's OperationalError, that in an MlflowException, sometimes twice."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, _TRANSIENT_TYPES) or _TRANSIENT.search(str(cur)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False

def retry(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Call fn, retrying transient store errors with exponential backoff and jitter for up to RETRY_BUDGET_S.
    Other errors, and a transient one once the budget is spent, propagate. fn must be safe to repeat: see
    TrialTracker.log_metrics and _create_run for the two writes where that needs care."""
    deadline = time.monotonic() + RETRY_BUDGET_S
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not transient(e):
                raise
            step = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** attempt)
            delay = step / 2 + random.uniform(0, step / 2)
            if time.monotonic() + delay > deadline:
                RETRY_STATS["gave_up"] += 1
                raise TrackingUnavailable(
                    f"{_store_name(fn, e)} unavailable for {RETRY_BUDGET_S:g} s (BENCH_TRACK_RETRY_S), giving up: "
                    f"{_reason(e)}") from e
            RETRY_STATS["retries"] += 1
            attempt += 1
            log.debug("transient tracking store error (retry %d in %.2f s): %s", attempt, delay, _first_line(e))
            time.sleep(delay)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


_REASON = re.compile(r"connection refused|connection reset by peer|remote end closed connection without response|"
                     r"connection broken: IncompleteRead|"
                     r"database is (?:locked|busy)|too many 50\d error responses|error code 50\d|read timed out|"
                     r"QueuePool limit of size \d+ overflow \d+ reached", re.I)


def _reason(e: BaseException) -> str:
    """What went wrong in a few words, not MLflow's whole HTTP dump."""
    m = _REASON.search(str(e))
    return m.group(0) if m else _first_line(e)


def _store_name(fn: Callable[..., Any], e: BaseException) -> str:
    """'tracking server http://host:port' from MLflow's message ('API request to URL failed ...'), else the URI of
    the client whose method fn is."""
    cur: BaseException | None = e
    while cur is not None:
        m = re.search(r"(https?://[^/\s'\"]+)/(?:api|ajax-api)/", str(cur))
        if m:
            return f"tracking server {m.group(1)}"
        cur = cur.__cause__ or cur.__context__
    uri = getattr(getattr(fn, "__self__", None), "tracking_uri", None)
    if isinstance(uri, str) and uri.startswith(("http://", "https://")):
        return f"tracking server {uri}"
    return f"tracking store {uri}" if uri else "tracking store"


CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def credential_env() -> dict[str, str]:
    """The MLflow credential variables set here, for processes that do not inherit this environment (the Ray job a
    `bench submit` starts, the workers of a cluster joined with --address)."""
    return {k: os.environ[k] for k in CREDENTIAL_VARS if os.environ.get(k)}


def check_credentials(uri: str, timeout: float = 10.0) -> None:
    """One authenticated request to a tracking server, so a missing or wrong password is one clear line before any
    work starts (MLflow's own message is an HTTP dump, per call). No-op for database URIs; an unreachable server is
    check_server's to report."""
    if not uri.startswith(("http://", "https://")):
        return
    user, password = (os.environ.get(k) for k in CREDENTIAL_VARS)
    try:
        r = requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                         auth=(user, password) if user and password else None, timeout=timeout)
    except requests.exceptions.RequestException:
        return
    if r.status_code == 401:
        if user and password:
            raise TrackingError(f"tracking server {uri} rejected the credentials of user {user!r} "
                                "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
        raise TrackingError(f"tracking server {uri} needs credentials: set MLFLOW_TRACKING_USERNAME and "
                            "MLFLOW_TRACKING_PASSWORD (`bench server --auth` wrote them to STORE_DIR/credentials)")
    if r.status_code == 403:
        raise TrackingError(f"tracking server {uri}: user {user!r} may not read experiments there (403)")

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
    """For readers: no SQLite store is created as a side effect (MLflow would), and an absent server fails at once."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise TrackingError(f"no tracking store at {uri}; run 'bench run SUITE' first or pass --tracking-uri")
    check_server(uri)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking server that is not there fails in seconds: MLflow's client retries a refused connection for
    about five minutes. A TCP connect answers at once; no-op for other stores."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        why = unreachable(uri, timeout)
    except ValueError as e:
        raise TrackingError(f"bad tracking URI {uri!r}: {e}") from None
    if why:
        raise TrackingError(f"cannot reach the tracking server at {uri}: {why} (start it with 'bench server', or "
                            "pass another --tracking-uri)")
    check_credentials(uri)


_READY: set[str] = set()     # sqlite URIs this process has opened once under the creation lock
_READY_LOCK = threading.RLock()
_HELD = threading.local()    # lock files this thread holds: a second flock on a new descriptor would deadlock

@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive flock on `<db>-bench.lock` beside a SQLite store (matches the `mlflow.db-*` ignore pattern).
    MLflow creates the schema of an empty database on first contact, unguarded: two processes doing it at once
    crash ('table ... already exists', or an out-of-date schema seen half-migrated). Not the database file itself:
    closing any descriptor of it would drop SQLite's own POSIX locks in this process. No-op for servers, and where
    the lock file cannot be created (a read-only directory: nobody creates a store there either)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    path = f"{db}-bench.lock"
    held = _HELD.__dict__.setdefault("paths", set())
    fd = None
    if path not in held:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            pass
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(path)
        yield
    finally:
        held.discard(path)
        os.close(fd)   # releases the flock

def _schema_ready(uri: str) -> bool:
    """Whether a SQLite store has its schema. Asked under the store lock, where no other bench process can be midway
    through creating it: then an alembic_version row means MLflow's migrations ran to their end."""
    db = Path(uri.removeprefix("sqlite:///"))
    try:
        if db.stat().st_size == 0:
            return False
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)) as con:
            return con.execute("SELECT 1 FROM alembic_version LIMIT 1").fetchone() is not None
    except (OSError, sqlite3.Error):
        return False

def client(uri: str) -> MlflowClient:
    """MlflowClient opens the store in its constructor, and that creates the schema of a fresh SQLite file. The first
    time in a process, check under the store lock whether the schema is there, and open the store under the lock
    only if not: the 16 workers of a run then open their stores side by side, not one after another."""
    if uri.startswith("sqlite:///") and uri not in _READY:
        with _READY_LOCK:
            if uri not in _READY:
                with _store_lock(uri):
                    if not _schema_ready(uri):
                        retry(MlflowClient, tracking_uri=uri)
                _READY.add(uri)
    return retry(MlflowClient, tracking_uri=uri)

def artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store, as an absolute path (the MLflow default is cwd-relative)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None

def ensure_experiment(uri: str, suite: str) -> str:
    """Get or create the suite's experiment; safe against concurrent `bench run`s on one store: on SQLite the
    store lock serialises first contact and get-or-create, and a creator that loses a race anyway (a server
    shared by hosts) finds RESOURCE_ALREADY_EXISTS and reads the winner's id."""
    name = f"bench/{suite}"

    def get_or_create() -> str:
        c = client(uri)
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return c.create_experiment(name, artifact_location=_exp_artifacts(uri, suite), tags={f"{T}suite": suite})
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            exp = c.get_experiment_by_name(name)
            if exp is None:   # exists but deleted: MLflow keeps the name reserved
                raise
            return exp.experiment_id

    try:
        with _store_lock(uri):
            return retry(get_or_create)
    except Exception as e:  # noqa: BLE001 - any failure here means the store is unusable
        raise TrackingError(f"tracking store {uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None

def _exp_artifacts(uri: str, suite: str) -> str | None:
    root = artifact_root(uri)
    return f"{root}/{suite}" if root else None

def find_experiment(uri: str, suite: str) -> str | None:
    exp = retry(client(uri).get_experiment_by_name, f"bench/{suite}")
    return exp.experiment_id if exp else None

def git_commit() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, check=True).stdout.strip()
        # Regenerated reports are outputs, not code: they leave the commit clean.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports"], cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # Not a checkout (a wheel, or a Ray job's copy of the package): the commit `bench submit` was run from.
        return os.environ.get("BENCH_GIT_COMMIT", "unknown")

def start_parent(uri: str, exp_id: str, *, suite: str, profile: str, dataset: str, argv: list[str],
                 n_trials: int, n_skipped: int, tags: dict[str, str] | None = None) -> str:
    """The run of one `bench run`; `tags` (without the bench. prefix) add to its identity, e.g. a design."""
    c = client(uri)
    run_id = _create_run(c, exp_id, f"{suite}:{profile}:{dataset}:{time.strftime('%Y%m%d-%H%M%S')}", {
        f"{T}kind": PARENT, f"{T}suite": suite, f"{T}profile": profile, f"{T}dataset": dataset,
        f"{T}git_commit": git_commit(), f"{T}host": platform.node(), f"{T}argv": " ".join(argv)[:5000],
        f"{T}driver": f"{platform.node()}:{os.getpid()}",
        # Beating from its first moment: a driver on another host must never see it without a heartbeat.
        f"{T}heartbeat": f"{time.time():.0f}", **{f"{T}{k}": v for k, v in (tags or {}).items()},
    })
    ts = _now()
    retry(c.log_batch, run_id, metrics=[Metric("trials", n_trials, ts, 0), Metric("trials_skipped", n_skipped, ts, 0)])
    return run_id

def _create_run(c: MlflowClient, exp_id: str, run_name: str, tags: dict[str, str]) -> str:
    """create_run is the one write that a blind retry could double: a server may commit and then lose the reply.
    Each run carries a unique token tag, and a retry first looks for a run with that token."""
    token = uuid.uuid4().hex
    tags = {**tags, f"{T}create_token": token}
    tried = False

    def attempt() -> str:
        nonlocal tried
        if tried:
            found = c.search_runs([exp_id], filter_string=f"tags.`{T}create_token` = '{token}'", max_results=1)
            if found:
                return found[0].info.run_id
        tried = True
        return c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

    return retry(attempt)

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
    run_id = _create_run(c, exp_id, trial.name, tags)
    params = flatten({"model": trial.model, "model_kwargs": trial.model_kwargs, "seed": trial.seed,
                      "dataset": trial.dataset, "method": trial.method, "protocol": trial.protocol.model_dump(),
                      "search": trial.search or {}})
    # MLflow caps a param value at 6000 chars and a batch at 100 params.
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retry(c.log_batch, run_id, params=items[i:i + 100])   # re-logging an equal param is accepted
    retry(c.update_run, run_id, status="SCHEDULED")
    return run_id

def _newest_trial_runs(uri: str, exp_id: str, status_clause: str) -> dict[str, Any]:
    """config hash -> the newest trial run (an mlflow Run) whose status matches the clause."""
    c = client(uri)
    out: dict[str, Any] = {}
    token = None
    while True:
        page = retry(c.search_runs, [exp_id], filter_string=f"tags.`{T}kind` = 'trial' and {status_clause}",
                     max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        for r in page:
            out.setdefault(r.data.tags.get(f"{T}config_hash", ""), r)
        token = page.token
        if not token:
            return out


def finished_trials(uri: str, exp_id: str) -> dict[str, tuple[str, str]]:
    """config hash -> (run id, git commit) of the newest FINISHED trial run."""
    return {h: (r.info.run_id, r.data.tags.get(f"{T}git_commit", "unknown"))
            for h, r in _newest_trial_runs(uri, exp_id, "attributes.status = 'FINISHED'").items()}


def existing_experiment(uri: str, suite: str) -> str | None:
    """The suite's experiment id, read-only: None where the SQLite file or the experiment does not exist yet
    (creating them is ensure_experiment's job, after every check has passed)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return retry(find_experiment, uri, suite)


def finished_trials_if_any(uri: str, suite: str) -> dict[str, tuple[str, str]]:
    """finished_trials of the suite's experiment; {} where it does not exist yet (nothing is created)."""
    exp = existing_experiment(uri, suite)
    return finished_trials(uri, exp) if exp is not None else {}


def unfinished_trials(uri: str, exp_id: str) -> dict[str, dict[str, Any]]:
    """config hash -> the newest trial run that did not finish: run_id, status, parent, diverged."""
    return {h: {"run_id": r.info.run_id, "status": r.info.status, "parent": r.data.tags.get("mlflow.parentRunId"),
                "diverged": r.data.tags.get(f"{T}diverged") == "1"}
            for h, r in _newest_trial_runs(uri, exp_id, "attributes.status != 'FINISHED'").items()}


def heartbeat(uri: str, parent_id: str) -> None:
    """A live driver says so every few seconds; runs under a parent whose heartbeat is fresh are held by it."""
    retry(client(uri).set_tag, parent_id, f"{T}heartbeat", f"{time.time():.0f}")


def driver_alive(uri: str, parent_id: str | None, live_s: float) -> bool:
    """Whether the `bench run` behind this parent run still runs: on this host, its process exists (a kill -9
    is seen at once); elsewhere, its heartbeat is younger than live_s."""
    if not parent_id:
        return False
    try:
        tags = retry(client(uri).get_run, parent_id).data.tags
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


def end_dead_parents(uri: str, exp_id: str, live_s: float) -> list[str]:
    """End KILLED every parent run left RUNNING by a `bench run` that is gone (kill -9, a crashed host): nothing
    else would ever end it, whether its trials were then continued or had all finished. It ends at its last
    heartbeat, about when its driver died. Returns the run ids it ended."""
    c = client(uri)
    open_parents, token = [], None
    while True:   # all pages first: ending runs while paging through a status filter would shift the pages
        page = retry(c.search_runs, [exp_id], filter_string=f"tags.`{T}kind` = '{PARENT}' and "
                     "attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        open_parents += list(page)
        token = page.token
        if not token:
            break
    ended = []
    for r in open_parents:
        if driver_alive(uri, r.info.run_id, live_s):
            continue
        try:
            end_ms = max(int(float(r.data.tags[f"{T}heartbeat"]) * 1000), r.info.start_time or 0)
        except (KeyError, ValueError):
            end_ms = None
        retry(c.set_tag, r.info.run_id, f"{T}error", "driver lost (its process is gone or its heartbeat "
              "stopped); ended by a later bench run")
        retry(c.set_terminated, r.info.run_id, status="KILLED", end_time=end_ms)
        ended.append(r.info.run_id)
    return ended


def reopen_run(uri: str, run_id: str, parent_id: str) -> None:
    """A trial resumed by a later `bench run` continues its run, now under that run's parent."""
    c = client(uri)
    retry(c.set_tag, run_id, "mlflow.parentRunId", parent_id)
    retry(c.update_run, run_id, status="SCHEDULED")


def end_run(uri: str, run_id: str, status: str, error: str | None = None) -> None:
    c = client(uri)
    if error:
        retry(c.set_tag, run_id, f"{T}error", error[:5000])
    retry(c.set_terminated, run_id, status=status)

def run_status(uri: str, run_id: str) -> str:
    return retry(client(uri).get_run, run_id).info.status


def run_state(uri: str, run_id: str) -> tuple[str, str | None]:
    """(status, the error tag if any)."""
    r = retry(client(uri).get_run, run_id)
    return r.info.status, r.data.tags.get(f"{T}error")

def _now() -> int:
    return int(time.time() * 1000)

class TrialTracker:
    """Worker side: appends to a run the driver already created. One log_batch per epoch keeps SQLite calm."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.c = client(uri)
        status = retry(self.c.get_run, run_id).info.status
        if status in ("FINISHED", "FAILED", "KILLED"):
            # Its driver ended it (Ctrl-C, `bench stop`) as this worker started: do not make it RUNNING again.
            raise RunEnded(f"run {run_id} was ended {status} by its bench run before this trial started")
        retry(self.c.update_run, run_id, status="RUNNING")
        self.logged: dict[str, int] = {}   # metric -> last step already in the run (a resumed trial)

    def tags(self) -> dict[str, str]:
        return retry(self.c.get_run, self.run_id).data.tags

    def skip_logged(self) -> None:
        """A resumed trial replays epochs after its checkpoint; some may be logged already (killed between the
        log and the checkpoint). Log each (metric, step) once."""
        for key in retry(self.c.get_run, self.run_id).data.metrics:
            hist = retry(self.c.get_metric_history, self.run_id, key)
            self.logged[key] = max((h.step for h in hist), default=-1)

    def set_tags(self, tags: dict[str, Any]) -> None:
        retry(self.c.log_batch, self.run_id, tags=[RunTag(f"{T}{k}", str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        # Retrying log_batch cannot duplicate rows, provided the retry sends the very same Metric objects (hence
        # the timestamp is fixed here, outside retry). MLflow's SQL store does NOT commit a log_batch as one
        # transaction (params, metrics, model metrics and tags each open their own session), but its metrics part
        # is one: add_all + latest_metrics update + commit. And the metrics primary key is (run, key, timestamp,
        # step, value, is_nan): a replay of rows that did land raises IntegrityError, which the store catches to
        # insert only the missing ones. Batches here carry metrics only, so no half-committed mix either.
        ts = _now()
        batch = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if step > self.logged.get(k, -1)]
        if batch:
            retry(self.c.log_batch, self.run_id, metrics=batch)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        retry(self.c.log_artifact, self.run_id, str(path), subdir)   # a copy/upload: repeating overwrites

    def finish(self, status: str = "FINISHED") -> None:
        retry(self.c.set_terminated, self.run_id, status=status)

def download_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(retry(mlflow.artifacts.download_artifacts, run_id=run_id, artifact_path=path, dst_path=str(dst),
                      tracking_uri=uri))

def _search_df(uri: str, exp: str, filter_string: str, **kw) -> pd.DataFrame:
    # mlflow.search_runs reads the global tracking URI, and set_tracking_uri exports it to the environment
    # (child processes would inherit it): set it for this call only.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return retry(mlflow.search_runs, [exp], filter_string=filter_string, max_results=50000, **kw)
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
            for h in retry(c.get_metric_history, rid, m):
                rows.append((rid, m, h.step, h.value))
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])

RUN_STATUSES = tuple(RunStatus.all_status())
