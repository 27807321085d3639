"""`bench run --until-decided`: refusals (no Ray, no store), the wave planner, and one end-to-end sequence on the
real components (Ray Tune, Lightning, a SQLite MLflow store) interrupted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.report.sequential import Design
from bench.run import jobs
from bench.run.until_decided import next_wave
from bench.spec import parse_duration

# good learns; bad (lr 1e-6) stays at chance. Welch's p for 'bad trains worse' is 0.048 at 2 seeds per cell and
# 0.005 at 3 (measured on this CPU), against boundaries of 0.0012 and 0.0077 with looks at 2..5: decided at 3.
SUITE = """
name: seqtest
title: sequential test suite
paper: {citation: test, ref: none, dataset: synthetic}
dataset: synthetic
cells:
  - {id: good, model: resnet20, kwargs: {width: 4}, row: good}
  - {id: bad, model: resnet20, kwargs: {width: 4}, row: bad, protocol: {optimizer: {lr: 0.000001}}}
protocol:
  batch_size: 32
  epochs: %(epochs)d
  train_subset: 256
  test_subset: 64
  schedule: {unit: fraction, milestones: [0.5]}
seeds: 2
resources: {cpus: 1, gpus: 0}
claims:
  - {id: lr_matters, text: "a net that does not learn trains worse", metric: train_error, lhs: bad, op: ">",
     rhs: good}
"""
MAX = 5


def _suite(tmp: Path, epochs: int = 3) -> Path:
    p = tmp / "seqtest.yaml"
    p.write_text(SUITE % {"epochs": epochs})
    return p


# ---- bad input: one line, exit 2, nothing created ---------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--until-decided", "--max-seeds", "1"], "--max-seeds 1 is below the 2 seeds the sequence starts with"),
    (["--until-decided", "--max-seeds", "0"], "--max-seeds must be at least 1, got 0"),
    (["--until-decided", "--seeds", "4", "--max-seeds", "3"], "--max-seeds 3 is below the 4 seeds"),
    (["--until-decided", "--budget", "5x"], "--budget '5x' is not a duration"),
    (["--until-decided", "--budget", "90"], "--budget '90' is not a duration"),
    (["--until-decided", "--budget", "0s"], "--budget '0s' is zero"),
    (["--max-seeds", "5"], "--max-seeds needs --until-decided"),
    (["--budget", "1h"], "--budget needs --until-decided"),
    (["--until-decided", "--cells", "plain20"], "--cells cannot be combined with it"),
    (["--until-decided", "--first-seed", "1000"], "--first-seed is for fixed pilot runs"),
])
def test_bad_sequential_input_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, args, message):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["run", "quickstart", "--profile", "smoke", *args])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert err.startswith("bench: error: ") and err.count("\n") == 1 and message in err, err
    assert out == "" and list(tmp_path.iterdir()) == []    # no store, no .bench
    import ray
    assert not ray.is_initialized()


def test_submit_refuses_the_same_and_passes_the_flags_on(tmp_path):
    from bench.cli import main
    from bench.spec import SpecError

    with pytest.raises(SpecError, match="below the 2 seeds"):
        jobs.submit("quickstart", profile="smoke", dataset=None, seeds=None, cells=None, tracking_uri=None,
                    storage=None, address="http://127.0.0.1:9", wait=False, until_decided=True, max_seeds=1)
    assert main(["submit", "quickstart", "--profile", "smoke", "--budget", "2h", "--address",
                 "http://127.0.0.1:9"]) == 2
    cmd = jobs.entrypoint("q.yaml", profile="smoke", dataset=None, seeds=None, cells=None, tracking_uri="http://h:5",
                          storage=None, until_decided=True, max_seeds=8, budget="1h30m")
    assert "--until-decided --max-seeds 8 --budget 1h30m" in cmd


def test_a_profiles_declared_design_is_the_default_and_the_flags_win(tmp_path):
    from bench.run.until_decided import check_args
    from bench.spec import SpecError, load_suite

    text = SUITE % {"epochs": 1} + "profiles:\n  p:\n    until_decided: {max_seeds: 4, budget: 40m}\n"
    (tmp_path / "seqtest.yaml").write_text(text)
    s = load_suite(tmp_path / "seqtest.yaml")
    assert check_args(s, "p", None, None, None) == Design(2, 4)
    assert check_args(s, "p", None, 6, None) == Design(2, 6)
    assert check_args(s, "paper", None, None, None) == Design(2, 10)
    (tmp_path / "seqtest.yaml").write_text(text.replace("40m", "40 minutes"))
    with pytest.raises(SpecError, match="'40 minutes' is not a duration"):
        load_suite(tmp_path / "seqtest.yaml")


def test_durations():
    assert [parse_duration(s) for s in ("90s", "45m", "2h", "1h30m", "1h0m5s")] == [90, 2700, 7200, 5400, 3605]


def test_next_wave_serves_the_open_claims_furthest_behind():
    d = Design(2, 8)

    def claim(cid, status, n, lhs, rhs):
        return {"id": cid, "lhs": lhs, "rhs": rhs, "sequential": {"status": status, "n": n}}

    claims = [claim("a", "holds", 3, ["p56"], ["p20"]), claim("b", "open", 3, ["r56"], ["r20"]),
              claim("c", "open", 3, ["p56", "p20"], ["r56", "r20"]), claim("d", "open", 4, ["x"], ["y"])]
    assert next_wave(claims, d) == (4, ["r56", "r20", "p56", "p20"])   # a cell shared by open claims serves both
    assert next_wave([claim("w", "waiting", 0, ["a"], ["b"])], d) == (2, ["a", "b"])
    assert next_wave([claim("a", "futile", 4, ["a"], ["b"]), claim("m", "max", 8, ["a"], ["b"]),
                      {"id": "nr", "verdict": "not run", "lhs": ["a"], "rhs": ["b"]}], d) is None


# ---- the whole path ------------------------------------------------------------------------------------------------

def _as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # a shell's background job ignores SIGINT; a user's does not


def _bench(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_as_from_a_terminal)


def _runs(uri: str) -> list:
    try:
        c = MlflowClient(uri)
        exp = c.get_experiment_by_name("bench/seqtest")
        return [] if exp is None else c.search_runs([exp.experiment_id])
    except Exception:  # noqa: BLE001 - the store may be mid-creation
        return []


def _trials(uri: str) -> list:
    return [r for r in _runs(uri) if r.data.tags.get("bench.kind") == "trial"]


def _parents(uri: str) -> list:
    return [r for r in _runs(uri) if r.data.tags.get("bench.kind") == "parent"]


def _wait(pred, timeout: float, what: str, p: subprocess.Popen):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if p.poll() is not None:
            out, err = p.communicate()
            raise AssertionError(f"bench run exited {p.returncode} before {what}: {out}{err}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _kill_driver(p: subprocess.Popen) -> None:
    """kill -9 of the driver, then of what its embedded Ray leaves behind, by PID."""
    import psutil

    kids = psutil.Process(p.pid).children(recursive=True)
    p.kill()
    p.communicate(timeout=60)
    time.sleep(1)
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass


def _finished(uri: str) -> dict[str, tuple]:
    """run id -> (cell, seed, end time) of the FINISHED trial runs."""
    return {r.info.run_id: (r.data.tags["bench.cell"], int(r.data.tags["bench.seed"]), r.info.end_time)
            for r in _trials(uri) if r.info.status == "FINISHED"}


@pytest.mark.slow
def test_until_decided_stops_early_and_survives_ctrl_c_and_kill_9(tmp_path, monkeypatch):
    """One store, three drivers: the first is interrupted (SIGINT) as its second wave starts, the second is
    killed -9 as it takes that wave over, the third finishes. Covers: the sequence stops when its claim is decided,
    before the maximum; its state comes from the store (each re-run continues the same sequence, seeds 0, 1, 2 in
    order, no finished seed run again, no (cell, seed) run twice); the parent runs carry the design, the report
    shows where the claim was decided, and another design over the same store is refused."""
    from bench.cli import main
    from bench.report import build_report
    from bench.spec import load_suite

    suite = _suite(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(suite), "--until-decided", "--max-seeds", str(MAX), "--num-cpus", "2"]

    def seed2() -> list:
        return [r for r in _trials(uri) if r.data.tags.get("bench.seed") == "2"]

    p = _bench(args, tmp_path)
    _wait(lambda: len(_finished(uri)) >= 4 and seed2(), 240, "the first wave and the start of the next", p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, out + err
    # Interrupted as the wave's workers start: none may mark its run RUNNING after the driver ended it.
    assert not [r.info.status for r in _trials(uri) if r.info.status in ("RUNNING", "SCHEDULED")]
    done1 = _finished(uri)
    assert {(c, s) for c, s, _ in done1.values()} >= {(c, s) for c in ("good", "bad") for s in (0, 1)}

    (first,) = [r.info.run_id for r in _parents(uri)]

    def taken_over() -> bool:
        new = {r.info.run_id for r in _parents(uri)} - {first}
        return any(r.data.tags.get("mlflow.parentRunId") in new for r in seed2())

    p = _bench(args, tmp_path)
    _wait(taken_over, 240, "the second driver taking the wave over", p)
    _kill_driver(p)
    done2 = _finished(uri)
    assert len(done2) < 6, "the kill came too late to test anything"

    p = _bench(args, tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "sequence ended: every claim is decided, futile or at the maximum" in out, out
    assert "claim lr_matters: holds at 3 seeds per cell" in out, out

    final = _finished(uri)
    for rid, v in done2.items():                   # nothing that finished was run again
        assert final[rid] == v
    trials = _trials(uri)
    keys = sorted((r.data.tags["bench.cell"], int(r.data.tags["bench.seed"])) for r in trials)
    assert keys == [(c, s) for c in ("bad", "good") for s in range(3)], keys   # one run each, seeds in order
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.tags["bench.sequential.max_seeds"] == str(MAX) for r in _parents(uri))

    md = build_report(load_suite(suite), uri, out_dir=tmp_path / "rep").markdown
    assert "sequential: holds at n=3 seeds per cell (look 2 of 4; looks at 2..5 seeds per cell)" in md, md
    assert "survives Holm" in md and "| HOLDS | yes |" in md

    # Another design over the same store is refused before anything runs.
    monkeypatch.chdir(tmp_path)
    assert main([*args[:3], "--max-seeds", "8", "--tracking-uri", uri]) == 2
