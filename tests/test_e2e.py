"""The whole path through the real components: suite -> Ray Tune -> Lightning -> MLflow (SQLite) -> report.

One embedded Ray runtime serves the module (starting one costs seconds); the driver is called in-process.
The quickstart goes through the CLI of an installed wheel, as a user would, in tests/test_packaging.py.
"""

import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench import track
from bench.report import build_report
from bench.run.driver import run_suite
from bench.spec import list_suites, load_suite

pytestmark = pytest.mark.slow
# One CPU: a suite's smoke trials (a few seconds each) run one after another in one reused Tune actor, instead of
# two worker processes each paying the torch + Lightning + MLflow imports for a wave that lasts seconds.
NUM_CPUS = 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    yield d, f"sqlite:///{d / 'mlflow.db'}"
    from bench.run import ray_exec
    ray_exec.shutdown()


def _bench(args, cwd, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_unreachable_cluster_fails_fast_without_state(tmp_path):
    r = _bench(["run", "quickstart", "--profile", "smoke", "--address", "127.0.0.1:9"], tmp_path, timeout=120)
    assert r.returncode == 1
    assert "cannot reach Ray cluster at 127.0.0.1:9" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_fitnet_students_start_after_and_load_their_teacher(store):
    d, uri = store
    s = run_suite("highway_fitnet", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=NUM_CPUS,
                  argv=["test"])
    assert not s.failed, s.failed
    runs = track.load_runs(uri, "highway_fitnet")
    teacher = runs[runs["tags.bench.cell"] == "teacher"]
    students = runs[runs["tags.bench.model"].str.startswith("fitnet") & (runs["tags.bench.cell"] != "teacher")]
    assert len(teacher) >= 1 and len(students) >= 1
    c = MlflowClient(uri)
    for _, st in students.iterrows():
        seed = st["tags.bench.seed"]
        t = teacher[teacher["tags.bench.seed"] == seed].iloc[0]
        assert st["tags.bench.teacher_hash"] == t["tags.bench.config_hash"]
        assert st["tags.bench.teacher_run"] == t["run_id"]                      # loaded from that run's artifact
        assert st["start_time"] >= t["end_time"]                                # and started after it ended
        assert "checkpoint" in [a.path for a in c.list_artifacts(t["run_id"])]


def test_highway_depth_search_runs_through_tune(store):
    d, uri = store
    suite = load_suite("highway_depth")
    s = run_suite("highway_depth", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=NUM_CPUS,
                  argv=["test"])
    assert not s.failed, s.failed
    runs = track.load_runs(uri, "highway_depth")
    n = suite.profiles["smoke"].search["num_samples"]
    cells = suite.profiles["smoke"].cells
    assert len(runs) == n * len(cells)
    assert runs["tags.bench.search_base"].nunique() == len(cells)
    # Tune sampled different learning rates, and gate biases only reached the highway nets.
    assert runs["params.protocol.optimizer.lr"].nunique() == len(runs)
    hw = runs["tags.bench.model"].str.startswith("highway")
    assert runs.loc[hw, "params.search.model.gate_bias"].notna().all()
    assert runs.loc[~hw, "params.search.model.gate_bias"].isna().all()
    assert runs["params.search.optimizer.lr"].notna().all()
    res = build_report(suite, uri, out_dir=d / "hd")
    # One row per depth of the paper; only the depths the profile ran hold the best sample's value.
    rows = {suite.cell(c).row for c in cells}
    filled = {r for r in res.table.index if pd.notna(res.table.loc[r, "plain mean"])}
    assert filled == rows and pd.notna(res.table.loc[list(rows), "highway mean"]).all()
    again = run_suite("highway_depth", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=NUM_CPUS,
                      argv=["test"])
    assert again.skipped == n * len(cells) and not again.finished


OTHER = sorted(p.stem for p in list_suites() if p.stem not in ("quickstart", "highway_fitnet", "highway_depth"))


@pytest.mark.parametrize("name", OTHER)
def test_every_suite_smoke_profile_runs_and_reports(store, name):
    d, uri = store
    s = run_suite(name, profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=NUM_CPUS, argv=["test"])
    assert not s.failed, s.failed
    assert s.finished
    res = build_report(load_suite(name), uri, out_dir=d / name)
    assert (res.out_dir / "report.html").exists()
    suite = load_suite(name)
    assert [c["id"] for c in res.claims] == [c.id for c in suite.claims]
    ran = set(suite.profiles["smoke"].cells or [c.id for c in suite.cells])
    for c in res.claims:  # 'not run' exactly when the smoke profile leaves out one of the claim's cells
        expect = {"not run"} if not set(c["lhs"] + c["rhs"]) <= ran else {"holds", "fails", "inconclusive"}
        assert c["verdict"] in expect, c
