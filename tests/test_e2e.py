"""The whole path through the real components: suite -> Ray Tune -> Lightning -> MLflow (SQLite) -> report.

One embedded Ray runtime serves the module (starting one costs seconds); the first test goes through the CLI
as a user would, the others call the driver in-process.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from bench import track
from bench.report import build_report
from bench.run.driver import run_suite
from bench.spec import list_suites, load_suite

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    yield d, f"sqlite:///{d / 'mlflow.db'}"
    from bench.run import ray_exec
    ray_exec.shutdown()


def _bench(args, cwd, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_quickstart_smoke_through_the_cli(tmp_path):
    """`bench run` then `bench report`, as a user types them; a second run skips what finished. The first run
    meets what a `ray start` cluster killed without `ray stop` leaves behind (ray_current_cluster naming a dead
    head), which a plain ray.init() tries to join: without --address bench starts its own Ray anyway."""
    import os
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))   # short: Ray's socket paths have a length cap
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    try:
        r = _bench(["run", "quickstart", "--profile", "smoke", "--num-cpus", "2"], tmp_path,
                   env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 finished, 0 failed, 0 skipped" in r.stdout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("bench/quickstart")
    runs = c.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("bench.kind") == "parent"]
    children = [x for x in runs if x.data.tags.get("bench.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 8
    for ch in children:
        assert ch.info.status == "FINISHED"
        assert ch.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for tag in ("suite", "cell", "seed", "profile", "dataset", "config_hash", "git_commit", "torch",
                    "lightning", "device"):
            assert ch.data.tags.get(f"bench.{tag}"), tag
        assert ch.data.params["protocol.optimizer.lr"] == "0.1"
        hist = c.get_metric_history(ch.info.run_id, "train_error")
        assert len(hist) == 2 and hist[0].step < hist[1].step  # one point per epoch, step = iteration
        for m in ("train_loss", "test_error", "lr", "images_per_sec", "wall_time_s"):
            assert m in ch.data.metrics, m
        assert "best_test_error" not in ch.data.metrics   # a minimum over test evaluations selects on test
        assert [a.path for a in c.list_artifacts(ch.info.run_id)] == ["curve.csv"]

    again = _bench(["run", "quickstart", "--profile", "smoke", "--num-cpus", "2"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipping 8 trial(s) already FINISHED" in again.stdout
    assert len(c.search_runs([exp.experiment_id])) == 9  # nothing new was created

    out = tmp_path / "rep"
    rep = _bench(["report", "quickstart", "--tracking-uri", uri, "--out", str(out)], tmp_path)
    assert rep.returncode == 0, rep.stderr
    for f in ("report.md", "report.html", "table.csv", "runs.parquet", "curves.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "synthetic" in md and "WARNING" in md and "profile smoke" in md
    assert pq.read_table(out / "runs.parquet").num_rows == 8
    table = pd.read_csv(out / "table.csv", index_col=0)
    assert list(table.index) == ["20 layers", "56 layers"]


def test_unreachable_cluster_fails_fast_without_state(tmp_path):
    r = _bench(["run", "quickstart", "--profile", "smoke", "--address", "127.0.0.1:9"], tmp_path, timeout=120)
    assert r.returncode == 1
    assert "cannot reach Ray cluster at 127.0.0.1:9" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_fitnet_students_start_after_and_load_their_teacher(store):
    d, uri = store
    s = run_suite("highway_fitnet", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=2,
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
    s = run_suite("highway_depth", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=2,
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
    again = run_suite("highway_depth", profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=2,
                      argv=["test"])
    assert again.skipped == n * len(cells) and not again.finished


OTHER = sorted(p.stem for p in list_suites() if p.stem not in ("quickstart", "highway_fitnet", "highway_depth"))


@pytest.mark.parametrize("name", OTHER)
def test_every_suite_smoke_profile_runs_and_reports(store, name):
    d, uri = store
    s = run_suite(name, profile="smoke", tracking_uri=uri, state_dir=d / ".bench", num_cpus=2, argv=["test"])
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
