"""bench.track under concurrency, on real SQLite stores with real processes, and its retry wrapper."""

from __future__ import annotations

import multiprocessing as mp
import queue
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from bench import track
from bench.trials import Trial

WRITERS, EPOCHS, METRICS = 16, 30, 8
# Fresh processes, as Ray workers are, but forked from one server that imported mlflow and its SQL store once:
# 16 spawned interpreters importing them each (~2.3 s of CPU apiece) cost more than the test itself on 2 shared
# cores. The server only imports third-party modules (bench itself is imported by each child, from its own
# sys.path), opens no store and starts no threads; each child opens its own store and engine.
SPAWN = mp.get_context("forkserver")
SPAWN.set_forkserver_preload(["pandas", "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
                              "alembic.script", "alembic.migration", "pydantic"])


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One store for the tests that need not start from an empty file: creating its schema takes seconds."""
    path = tmp_path_factory.mktemp("store")
    track.client(_uri(path))
    return path


# ---- children (module level: spawn imports them by name) -------------------------------------------------------

def _writer(uri: str, run_id: str, barrier, out) -> None:
    tracker = track.TrialTracker(uri, run_id)
    barrier.wait(timeout=120)
    t0 = time.time()
    for epoch in range(EPOCHS):
        tracker.log_metrics({f"m{i}": epoch + i / 10 for i in range(METRICS)}, step=epoch)
    tracker.set_tags({"device": "cpu"})
    tracker.finish()
    out.put((run_id, dict(track.RETRY_STATS), t0, time.time()))


def _creator(uri: str, barrier, out) -> None:
    barrier.wait(timeout=120)
    out.put(track.ensure_experiment(uri, "race"))


def _run_all(target, argss: list[tuple], timeout: float = 120) -> list:
    """Start one child per args tuple, each handed `out` last; collect one result from each. A child that dies
    fails the test at once rather than after the timeout."""
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, out)) for a in argss]
    for p in procs:
        p.start()
    results, deadline = [], time.monotonic() + timeout
    try:
        while len(results) < len(procs):
            try:
                results.append(out.get(timeout=0.5))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"child exited with {dead[0]}"
                assert time.monotonic() < deadline, "children timed out"
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0, f"child exited with {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return results


# ---- (a) 16 concurrent writers lose and duplicate nothing ------------------------------------------------------

@pytest.mark.slow   # 16 processes each importing MLflow: a minute here, too long for `make check`
def test_sixteen_writers_lose_no_metric_row(store):
    uri = _uri(store)
    exp = track.ensure_experiment(uri, "load")
    parent = track.start_parent(uri, exp, suite="load", profile="p", dataset="synthetic", argv=["test"],
                                n_trials=WRITERS, n_skipped=0)
    runs = [track.create_trial_run(uri, exp, parent, Trial.adhoc("resnet20", {"epochs": 1}, seed=s))
            for s in range(WRITERS)]

    t0 = time.time()
    barrier = SPAWN.Barrier(WRITERS)
    results = _run_all(_writer, [(uri, rid, barrier) for rid in runs])
    wall = time.time() - t0
    retries = sum(r[1]["retries"] for r in results)
    gave_up = sum(r[1]["gave_up"] for r in results)
    ready = min(r[2] for r in results) - t0
    logging_s = max(r[3] for r in results) - min(r[2] for r in results)

    with sqlite3.connect(store / "mlflow.db") as db:
        marks = ",".join("?" * len(runs))
        total = db.execute(f"SELECT COUNT(*) FROM metrics WHERE run_uuid IN ({marks})", runs).fetchone()[0]
        dups = db.execute(f"SELECT run_uuid, key, step, COUNT(*) FROM metrics WHERE run_uuid IN ({marks}) "
                          "GROUP BY run_uuid, key, step HAVING COUNT(*) > 1", runs).fetchall()
        per_run = dict(db.execute(f"SELECT run_uuid, COUNT(*) FROM metrics WHERE run_uuid IN ({marks}) "
                                  "GROUP BY run_uuid", runs).fetchall())
    print(f"\n16 writers x {EPOCHS} epochs x {METRICS} metrics: {total} rows, wall {wall:.1f} s "
          f"(start to exit), all 16 ready after {ready:.1f} s, logging phase {logging_s:.1f} s, "
          f"retries {retries}, gave up {gave_up}")
    assert total == WRITERS * EPOCHS * METRICS
    assert dups == []
    assert per_run == {rid: EPOCHS * METRICS for rid in runs}
    assert gave_up == 0
    assert {track.run_status(uri, rid) for rid in runs} == {"FINISHED"}


# ---- (b) concurrent first contact with a fresh store -----------------------------------------------------------

def test_concurrent_ensure_experiment_on_fresh_store(tmp_path):
    uri = _uri(tmp_path)
    n = 4
    barrier = SPAWN.Barrier(n)
    ids = _run_all(_creator, [(uri, barrier)] * n)
    assert len(set(ids)) == 1
    assert track.find_experiment(uri, "race") == ids[0]
    names = [e.name for e in track.client(uri).search_experiments()]
    assert names.count("bench/race") == 1


# ---- (c) the retry wrapper ------------------------------------------------------------------------------------

@pytest.fixture
def fast_retry(monkeypatch):
    monkeypatch.setattr(track, "RETRY_BASE_S", 0.001)
    monkeypatch.setattr(track, "RETRY_CAP_S", 0.004)
    monkeypatch.setattr(track, "RETRY_STATS", {"retries": 0, "gave_up": 0})


def _locked_mlflow() -> MlflowException:
    """What MLflow's SQL store raises: MlflowException from sqlalchemy's OperationalError from sqlite3's."""
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as e:
            raise sqlalchemy.exc.OperationalError("INSERT INTO metrics ...", {}, e) from e
    except sqlalchemy.exc.OperationalError as e:
        return MlflowException(message=e, error_code=TEMPORARILY_UNAVAILABLE)


@pytest.mark.parametrize("error", [lambda: sqlite3.OperationalError("database is locked"), _locked_mlflow,
                                   lambda: ConnectionResetError(104, "Connection reset by peer")])
def test_retry_transient_then_succeed(fast_retry, error):
    calls = []

    def flaky(x, *, y):
        calls.append(1)
        if len(calls) <= 2:
            raise error()
        return x + y

    assert track.retry(flaky, 1, y=2) == 3
    assert len(calls) == 3
    assert track.RETRY_STATS == {"retries": 2, "gave_up": 0}


@pytest.mark.parametrize("error", [lambda: ValueError("boom"), lambda: sqlite3.OperationalError("no such table: runs"),
                                   lambda: MlflowException("Changing param values is not allowed",
                                                           INVALID_PARAMETER_VALUE)])
def test_retry_does_not_retry_other_errors(fast_retry, error):
    calls = []

    def broken():
        calls.append(1)
        raise error()

    with pytest.raises(type(error())):
        track.retry(broken)
    assert len(calls) == 1
    assert track.RETRY_STATS["retries"] == 0


def test_retry_gives_up_after_budget(fast_retry, monkeypatch):
    monkeypatch.setattr(track, "RETRY_BUDGET_S", 0.05)
    calls = []

    def stuck():
        calls.append(1)
        raise _locked_mlflow()

    # Giving up names the store and keeps the cause (TrackingUnavailable, a one-line BenchError).
    with pytest.raises(track.TrackingUnavailable, match="database is locked") as info:
        track.retry(stuck)
    assert isinstance(info.value.__cause__, MlflowException)
    assert len(calls) > 2
    assert track.RETRY_STATS["gave_up"] == 1


def test_replayed_log_batch_adds_no_rows(store, fast_retry, monkeypatch):
    """A log_batch that committed but reported 'locked' is retried with the same Metric objects: no duplicates."""
    uri = _uri(store)
    exp = track.ensure_experiment(uri, "replay")
    parent = track.start_parent(uri, exp, suite="replay", profile="p", dataset="d", argv=[], n_trials=1,
                                n_skipped=0)
    rid = track.create_trial_run(uri, exp, parent, Trial.adhoc("resnet20", {"epochs": 1}))
    tracker = track.TrialTracker(uri, rid)
    real = tracker.c.log_batch
    failed = []

    def commit_then_fail(*a, **kw):
        real(*a, **kw)
        if not failed:
            failed.append(1)
            raise _locked_mlflow()

    monkeypatch.setattr(tracker.c, "log_batch", commit_then_fail)
    tracker.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    assert track.RETRY_STATS["retries"] == 1
    assert [len(tracker.c.get_metric_history(rid, k)) for k in ("a", "b")] == [1, 1]


def test_create_run_retry_finds_the_committed_run(store, fast_retry, monkeypatch):
    """create_run is not idempotent: a retry after a commit whose reply was lost must not make a second run."""
    uri = _uri(store)
    exp = track.ensure_experiment(uri, "token")
    c = track.client(uri)
    real = c.create_run
    failed = []

    def commit_then_drop(*a, **kw):
        run = real(*a, **kw)
        if not failed:
            failed.append(1)
            raise ConnectionResetError(104, "Connection reset by peer")
        return run

    monkeypatch.setattr(c, "create_run", commit_then_drop)
    rid = track._create_run(c, exp, "r", {"bench.kind": "trial"})
    assert len(failed) == 1
    assert [r.info.run_id for r in c.search_runs([exp])] == [rid]


# ---- parent runs of drivers that died ----------------------------------------------------------------------------

def test_dead_drivers_parent_runs_end_killed_and_live_ones_stay(store):
    """Parents fabricated in a real store: one whose driver process on this host is gone, one from another host
    whose heartbeat stopped long ago, one from another host beating now, this live process's own, and one that
    already ended. Only the first two are ended, KILLED at their last heartbeat; a second sweep finds none."""
    import os
    import platform
    import subprocess

    uri = _uri(store)
    exp = track.ensure_experiment(uri, "orphans")
    c = track.client(uri)

    def parent(driver: str, beat: float | None) -> str:
        rid = track.start_parent(uri, exp, suite="orphans", profile="p", dataset="synthetic", argv=["test"],
                                 n_trials=1, n_skipped=0)
        c.set_tag(rid, "bench.driver", driver)
        if beat is not None:
            c.set_tag(rid, "bench.heartbeat", f"{beat:.0f}")
        elif "bench.heartbeat" in c.get_run(rid).data.tags:
            c.delete_tag(rid, "bench.heartbeat")
        return rid

    gone = subprocess.Popen(["true"])
    gone.wait()                                 # a pid that was a process and is not any more
    now = time.time()
    dead_here = parent(f"{platform.node()}:{gone.pid}", int(now) + 2)   # its last beat, after its start
    dead_there = parent("other-host:4242", now - 3600)
    silent_there = parent("other-host:4243", None)      # no heartbeat at all: nothing says it lives
    live_there = parent("other-host:4244", now)
    mine = parent(f"{platform.node()}:{os.getpid()}", now - 3600)   # a live process here: beats don't matter
    done = parent("other-host:4245", now - 3600)
    track.end_run(uri, done, "FINISHED")

    assert sorted(track.end_dead_parents(uri, exp, live_s=60)) == sorted([dead_here, dead_there, silent_there])
    runs = {rid: c.get_run(rid) for rid in (dead_here, dead_there, silent_there, live_there, mine, done)}
    assert {rid: r.info.status for rid, r in runs.items()} == {
        dead_here: "KILLED", dead_there: "KILLED", silent_there: "KILLED", live_there: "RUNNING",
        mine: "RUNNING", done: "FINISHED"}
    assert "driver lost" in runs[dead_here].data.tags["bench.error"]
    assert runs[dead_here].info.end_time == (int(now) + 2) * 1000                 # at its last heartbeat
    assert runs[dead_there].info.end_time == runs[dead_there].info.start_time   # never before it started
    assert track.end_dead_parents(uri, exp, live_s=60) == []
