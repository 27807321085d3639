"""Trials that survive failures, on the real components: exact resume (Lightning, no Ray), a SIGKILLed trial
worker, Ctrl-C and kill -9 of `bench run` followed by a re-run, and two drivers against one store.

The suite is a tiny synthetic one with enough epochs to be caught mid-run; drivers run as subprocesses, as a
user starts them, with their own embedded Ray (torn down with them)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import data
from bench.train.fit import Checkpointing, run_trial
from bench.train.module import Diverged
from bench.trials import Trial

SUITE = """
name: faults
title: fault-tolerance test suite
paper: {citation: test, ref: none, dataset: synthetic}
dataset: synthetic
cells:
  - {id: a, model: resnet20, row: a}
  - {id: b, model: resnet20, row: b}
protocol:
  batch_size: 32
  epochs: %(epochs)d
  train_subset: %(subset)d
  test_subset: 32
  schedule: {unit: fraction, milestones: [0.5]}
seeds: 1
resources: {cpus: 1, gpus: 0}
"""


def _suite(tmp: Path, epochs: int, subset: int = 256) -> Path:
    p = tmp / "faults.yaml"
    p.write_text(SUITE % {"epochs": epochs, "subset": subset})
    return p


def _as_from_a_terminal() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (no
    # KeyboardInterrupt): restore the default, as a terminal user's `bench run` has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _bench(args: list[str], cwd: Path, extra_env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_as_from_a_terminal, **kw)


def _runs(uri: str, kind: str = "trial") -> list:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("bench/faults")
    return [] if exp is None else [r for r in c.search_runs([exp.experiment_id])
                                   if r.data.tags.get("bench.kind") == kind]


def _wait(pred, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _epochs_done(uri: str) -> dict[str, float]:
    """run id -> last logged epoch, for runs that logged one."""
    try:
        return {r.info.run_id: r.data.metrics["epoch"] for r in _runs(uri) if "epoch" in r.data.metrics}
    except Exception:  # noqa: BLE001 - the store may be mid-creation
        return {}


def _duplicate_rows(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM (SELECT run_uuid, key, step FROM metrics "
                           "GROUP BY run_uuid, key, step HAVING COUNT(*) > 1)").fetchone()[0]


def _finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


# ---- exact resume, divergence: Lightning only --------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth():
    return data.load("synthetic", n_train=96, n_test=32, channels=1)


def _trial(**proto) -> Trial:
    return Trial.adhoc("resnet20", {"batch_size": 32, "epochs": 3, "schedule": {"unit": "fraction",
                                                                                "milestones": [0.5]}, **proto})


class _Stop(Exception):
    pass


def test_resume_after_a_kill_ends_bitwise_equal(synth, tmp_path):
    """Killed after epoch 1 and resumed from its checkpoint, a trial ends with the weights of an uninterrupted
    run: a bitwise-equal state_dict and the same test error."""
    full = run_trial(_trial(), synth, save_checkpoint=True, workdir=tmp_path / "full")

    def die_after_first(path: Path, rec: dict) -> None:
        if rec["epoch"] == 1:
            shutil.copy(path, tmp_path / "e1.ckpt")
            raise _Stop

    with pytest.raises(_Stop):
        run_trial(_trial(), synth, ckpt=Checkpointing(tmp_path / "ck", die_after_first))
    seen = []
    resumed = run_trial(_trial(), synth, save_checkpoint=True, workdir=tmp_path / "res",
                        sinks=[lambda rec, step: seen.append(step)],
                        ckpt=Checkpointing(tmp_path / "ck", None, tmp_path / "e1.ckpt"))
    a = torch.load(full.checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.final["test_error"] == full.final["test_error"]
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [3, 6, 9]
    assert seen == [6, 9]   # only the epochs after the checkpoint are reported again


def test_a_diverging_trial_stops_with_its_step(synth):
    with pytest.raises(Diverged, match=r"diverged at step \d+") as e:
        run_trial(_trial(optimizer={"lr": 1e12, "momentum": 0.9}), synth)
    assert 0 <= e.value.step < 9


def test_a_trial_leaves_no_scratch_directory_however_it_ends(synth, tmp_path, monkeypatch):
    """The Tune trainable, called in-process (no Ray), against a real SQLite store: a finished, a diverged, a
    failed and an interrupted trial each leave nothing behind in the temp directory."""
    from bench import track
    from bench.run import ray_exec, worker

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))   # other processes' /tmp/bench-* don't count here
    monkeypatch.setattr(ray_exec, "node_info", lambda: {})
    monkeypatch.setattr(ray_exec, "report", lambda *a, **k: None)
    monkeypatch.setattr(ray_exec, "tune_checkpoint", lambda *a, **k: None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = track.ensure_experiment(uri, "scratch")
    parent = track.start_parent(uri, exp, suite="scratch", profile="p", dataset="synthetic", argv=["test"],
                                n_trials=4, n_skipped=0)

    runs = []

    def run(trial: Trial, teacher_run: str | None = None) -> tuple[str, str | None]:
        rid = track.create_trial_run(uri, exp, parent, trial)
        runs.append(rid)
        cfg = {"trial": trial.to_dict(), "name": trial.name, "uri": uri, "run_id": rid, "teacher_run": teacher_run,
               "save_checkpoint": False, "ckpt_dir": str(tmp_path / "ckpt" / rid), "speed": "off"}
        try:
            worker.trainable({"cfg": cfg}, data=synth)
        finally:
            assert [p.name for p in tmp.iterdir() if p.name.startswith("bench-")] == []
        return track.run_state(uri, rid)

    assert run(_trial(epochs=1))[0] == "FINISHED"                       # wrote curve.csv there
    status, error = run(_trial(epochs=1, optimizer={"lr": 1e12, "momentum": 0.9}))
    assert status == "FAILED" and error.startswith("diverged at step")
    with pytest.raises(Exception):                                      # the teacher's download fails
        run(_trial(epochs=1), teacher_run="0" * 32)
    assert track.run_status(uri, runs[-1]) == "FAILED"
    seen = []

    def interrupted(trial, data, *, workdir, **kw):
        seen.append(workdir)
        (workdir / "partial").write_text("x")
        raise KeyboardInterrupt

    import bench.train.fit

    monkeypatch.setattr(bench.train.fit, "run_trial", interrupted)   # worker imports it where a trial runs
    with pytest.raises(KeyboardInterrupt):
        run(_trial(epochs=1))
    assert seen and seen[0].parent == tmp and not seen[0].exists()
    assert track.run_status(uri, runs[-1]) == "KILLED"


def test_a_plan_held_by_a_live_driver_needs_no_ray_and_a_dead_ones_does(tmp_path):
    """The check that lets a second `bench run` beside a running one return without starting Ray: true only when
    every trial left has an open run under a live driver; read-only."""
    import platform

    from bench import track
    from bench.run.driver import _held_elsewhere

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a, b = _trial(epochs=1), _trial(epochs=2)
    assert not _held_elsewhere(uri, "scratch", [a]) and not (tmp_path / "mlflow.db").exists()   # nothing created
    exp = track.ensure_experiment(uri, "scratch")
    parent = track.start_parent(uri, exp, suite="scratch", profile="p", dataset="synthetic", argv=["test"],
                                n_trials=2, n_skipped=0)                  # its driver: this process, alive
    rid = track.create_trial_run(uri, exp, parent, a)
    status = track.run_status(uri, rid)
    assert _held_elsewhere(uri, "scratch", [a])
    assert not _held_elsewhere(uri, "scratch", [a, b])                    # b is nobody's: Ray is needed
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    track.client(uri).set_tag(parent, "bench.driver", f"{platform.node()}:{gone}")
    assert not _held_elsewhere(uri, "scratch", [a])                       # a dead driver's run is taken over
    assert track.run_status(uri, rid) == status                           # ...later, by _claim; not here


def test_a_worker_starting_on_a_run_its_driver_ended_leaves_it_ended(tmp_path):
    from bench import track

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = track.ensure_experiment(uri, "scratch")
    parent = track.start_parent(uri, exp, suite="scratch", profile="p", dataset="synthetic", argv=["test"],
                                n_trials=1, n_skipped=0)
    rid = track.create_trial_run(uri, exp, parent, _trial(epochs=1))
    track.TrialTracker(uri, rid)                                      # SCHEDULED: the worker takes it
    assert track.run_status(uri, rid) == "RUNNING"
    track.end_run(uri, rid, "KILLED", "interrupted")
    with pytest.raises(track.RunEnded, match="ended KILLED"):
        track.TrialTracker(uri, rid)
    assert track.run_status(uri, rid) == "KILLED"


# ---- the whole path: Ray Tune, Lightning, MLflow ------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_and_killed_drivers_resume_on_the_next_run(tmp_path):
    # 16 steps an epoch (~3 s here): a killed driver's workers take a few seconds to notice, and must not
    # finish the trial in that time.
    suite = _suite(tmp_path, epochs=6, subset=512)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(suite), "--num-cpus", "2"]

    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        started.append(_bench(args, tmp_path))
        return started[-1]

    try:
        # A second driver beside the first leaves the trials the first holds alone, and starts no Ray for them.
        p = start()
        _wait(lambda: len(_runs(uri)) == 2 and all(r.info.status == "RUNNING" for r in _runs(uri)), 120,
              "the first driver's runs")
        timeline = tmp_path / "second.timeline"
        started.append(_bench(["run", str(suite), "--num-cpus", "1"], tmp_path, {"BENCH_TIMELINE": str(timeline)}))
        code2, out2, err2 = _finish(started[-1], 120)
        assert code2 == 0, out2 + err2
        assert "leaving 2 trial(s) to another bench run" in out2 and "nothing to run" in out2, out2
        moments = [line.split()[2] for line in timeline.read_text().splitlines()]
        assert "driver.data_loaded" in moments and "driver.ray_up" not in moments, moments
        assert p.poll() is None, "the first driver ended before the second one had planned"
        assert all(r.info.status == "RUNNING" and not r.data.tags.get("bench.retries") for r in _runs(uri))

        # SIGTERM, what `bench stop` sends, ends a run like Ctrl-C (tests/test_until_decided.py sends that): one
        # line, exit 130, every unfinished run KILLED. Before, the embedded Ray's own handler won: exit -6, runs
        # left RUNNING.
        _wait(lambda: any(e >= 1 for e in _epochs_done(uri).values()), 240, "a first epoch")
        p.send_signal(signal.SIGTERM)
        code, out, err = _finish(p, 60)
        assert code == 130, out + err
        assert err.strip().count("\n") == 0 and "interrupted" in err
        first = {r.info.run_id: r.info.status for r in _runs(uri)}
        assert len(first) == 2 and all(s == "KILLED" for s in first.values()), first

        # The next run continues those runs from their checkpoints; then it is killed -9 mid-run.
        p = start()
        _wait(lambda: any(r.data.tags.get("bench.retries") == "1" for r in _runs(uri)), 240, "a resumed trial")
        code, out, err = _kill_driver(p)
        assert {r.info.run_id for r in _runs(uri)} == set(first)   # continued, not duplicated
        assert sum(r.info.status == "FINISHED" for r in _runs(uri)) < 2, "the kill came too late to test anything"
        (killed,) = [r.info.run_id for r in _runs(uri, "parent") if r.info.status == "RUNNING"]

        # A dead driver's runs are recognised, ended KILLED and resumed, from their newest checkpoints.
        p = start()
        code, out, err = _finish(p)
        assert code == 0, out + err
        assert "resuming" in out and "from epoch" in out, out
        runs = _runs(uri)
        assert {r.info.run_id for r in runs} == set(first) and all(r.info.status == "FINISHED" for r in runs)
        assert _duplicate_rows(tmp_path / "mlflow.db") == 0
        for r in runs:
            hist = MlflowClient(uri).get_metric_history(r.info.run_id, "train_loss")
            assert sorted(h.step for h in hist) == [16 * i for i in range(1, 7)]
        # The killed driver's parent run, which the MLflow UI shows, is ended too; no parent is left RUNNING.
        parents = {r.info.run_id: r.info.status for r in _runs(uri, "parent")}
        assert len(parents) == 3 and parents[killed] == "KILLED" and "RUNNING" not in parents.values(), parents
    finally:   # a failed wait must not leave a driver and its embedded Ray running
        from fixtures_cluster import stop_trees

        stop_trees([d for d in started if d.poll() is None])

def _kill_driver(p: subprocess.Popen) -> tuple[int, str, str]:
    """kill -9 of `bench run`, then of whatever of its embedded Ray outlives it (Ray's dashboard and
    runtime-env agents are re-parented, not killed), by PID."""
    import psutil

    kids = psutil.Process(p.pid).children(recursive=True)
    p.kill()
    out, err = p.communicate(timeout=60)
    time.sleep(1)
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    return p.returncode, out, err


@pytest.mark.slow
def test_a_trial_moves_off_a_removed_node_and_finishes(tmp_path):
    """A real multi-node Ray cluster on this machine (ray.cluster_utils): the head schedules nothing, two
    one-CPU nodes run trials, and the trial logs to a `bench server` (a SQLite file is refused on a multi-node
    cluster). The node running the trial is removed; the trial restarts on the other node from its last
    checkpoint and finishes in the same MLflow run."""
    from ray.cluster_utils import Cluster

    from fixtures_cluster import bench_env, free_ports, stop_trees

    (port,) = free_ports(1)
    server = subprocess.Popen([sys.executable, "-m", "bench.cli", "server", "--port", str(port), "--store",
                               str(tmp_path / "store"), "--workers", "1"], env=bench_env(), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    p = None
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        uri = f"http://127.0.0.1:{port}"
        _wait(lambda: _reachable(uri), 60, "the tracking server")
        suite = _suite(tmp_path, epochs=8, subset=512)
        p = _bench(["run", str(suite), "--cells", "a", "--address", cluster.address, "--tracking-uri", uri,
                    "--storage", str(tmp_path / "shared")], tmp_path)
        rid, _ = _wait(lambda: p.poll() is None and next(iter(_epochs_done(uri).items()), None) or
                       (p.poll() is not None and _fail(p)), 180, "the trial's first epoch")
        node_id = MlflowClient(uri).get_run(rid).data.tags["bench.node_id"]
        (doomed,) = [n for n in nodes if n.node_id == node_id]
        cluster.remove_node(doomed)
        code, out, err = _finish(p, 300)
        assert code == 0, out + err
        (run,) = _runs(uri)
        assert run.info.run_id == rid and run.info.status == "FINISHED"
        assert run.data.tags["bench.node_id"] != node_id and run.data.tags["bench.retries"] == "1"
        assert _duplicate_rows(tmp_path / "store" / "mlflow.db") == 0
    finally:
        if p is not None and p.poll() is None:
            p.kill()
        cluster.shutdown()
        stop_trees([server])


def _reachable(uri: str) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
    except OSError:
        return False


def _fail(p: subprocess.Popen):
    out, err = p.communicate()
    raise AssertionError(f"bench run exited {p.returncode}: {out}{err}")


@pytest.mark.slow
def test_chaos_script_kills_and_finds_nothing_lost(tmp_path):
    suite = _suite(tmp_path, epochs=8, subset=512)
    r = subprocess.run([sys.executable, "-m", "bench.perf.chaos", str(suite), "--profile", "paper", "--kills", "2",
                        "--every", "2,4", "--no-baseline", "--workdir", str(tmp_path / "wd"), "--num-cpus", "2"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kills made            : 2 of 2" in r.stdout and "trials FINISHED       : 2 of 2" in r.stdout
    assert "duplicate metric rows : 0" in r.stdout and "runs left non-terminal: 0" in r.stdout
    # Checked here too, not only as the script reports it: the killed runs were retried (from their last
    # checkpoint, or from zero when killed before the first was saved) and hold every epoch exactly once.
    db = tmp_path / "wd" / "chaos" / "mlflow.db"
    uri = f"sqlite:///{db}"
    runs = _runs(uri)
    assert sum(int(x.data.tags.get("bench.retries", 0)) for x in runs) == 2
    assert all(x.info.status == "FINISHED" for x in runs) and _duplicate_rows(db) == 0
    for x in runs:
        if x.data.tags.get("bench.retries"):
            assert 0 <= int(x.data.tags["bench.resumed_from_epoch"]) < 8
        hist = MlflowClient(uri).get_metric_history(x.info.run_id, "train_loss")
        assert sorted(h.step for h in hist) == [16 * i for i in range(1, 9)]
