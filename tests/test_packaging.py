"""A non-editable install works away from the checkout: the wheel carries the suites, `bench list` and
`bench run` find them from another directory, and `bench report` writes to that directory, not site-packages.
The same run is the whole CLI path as a user types it (`bench run`, a re-run, `bench report`), checked in detail.

The fresh venv borrows the dependencies (torch, ray, mlflow ...) of the venv running the tests through a .pth
line naming its site-packages; a plain-path line adds the directory only, so that venv's editable finder for
the checkout is not run and `bench` can only come from the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SUITES = sorted(p.name for p in (REPO / "bench" / "suites").glob("*.yaml"))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_installed_wheel_lists_runs_and_reports_the_quickstart_outside_the_checkout(tmp_path):
    assert len(SUITES) == 11  # the 10 seed tables plus ResNet Fig. 4
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}

    # Build from a copy, so the build leaves no build/ or *.egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    shutil.copytree(REPO / "bench", src / "bench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."],
         src, env)
    (wheel,) = dist.glob("bench-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = sorted(Path(n).name for n in z.namelist() if n.startswith("bench/suites/") and n.endswith(".yaml"))
    assert shipped == SUITES

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).stdout.strip())
    (site / "_bench_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the borrowed site-packages holds the checkout's editable bench; never touch it.
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--ignore-installed",
          str(wheel)], tmp_path, env)

    work = tmp_path / "work"
    work.mkdir()
    where = _run([str(py), "-c", "import bench, bench.spec; print(bench.__file__); print(bench.spec.SUITES_DIR)"],
                 work, env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    out = _run([str(venv / "bin" / "bench"), "list"], work, env).stdout
    listed = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert sorted(f"{n}.yaml" for n in listed) == SUITES

    # The run meets what a `ray start` cluster killed without `ray stop` leaves behind (ray_current_cluster naming a
    # dead head), which a plain ray.init() tries to join: without --address bench starts its own Ray anyway.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))   # short: Ray's socket paths have a length cap
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    bench = str(venv / "bin" / "bench")
    try:
        r = _run([bench, "run", "quickstart", "--profile", "smoke", "--num-cpus", "2"], work,
                 {**env, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "8 finished, 0 failed, 0 skipped" in r.stdout, r.stdout[-3000:]  # 4 cells x 2 seeds
    _check_quickstart_runs(f"sqlite:///{work / 'mlflow.db'}")

    # A re-run skips what finished, creates nothing, and starts no Ray runtime (its RAY_TMPDIR stays empty).
    quiet = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    try:
        again = _run([bench, "run", "quickstart", "--profile", "smoke", "--num-cpus", "2"], work,
                     {**env, "RAY_TMPDIR": str(quiet)})
        assert not list(quiet.iterdir())
    finally:
        shutil.rmtree(quiet, ignore_errors=True)
    assert "skipping 8 trial(s) already FINISHED" in again.stdout and "nothing to run" in again.stdout
    c = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    assert len(c.search_runs([c.get_experiment_by_name("bench/quickstart").experiment_id])) == 9

    # The default report goes to ./reports/quickstart in the working directory, never into the venv.
    _run([bench, "report", "quickstart"], work, env)
    out = work / "reports" / "quickstart"
    for f in ("report.md", "report.html", "table.csv", "runs.parquet", "curves.png"):
        assert (out / f).stat().st_size > 0, f
    assert not list(venv.rglob("report.md"))
    md = (out / "report.md").read_text()
    assert "synthetic" in md and "WARNING" in md and "profile smoke" in md
    assert pq.read_table(out / "runs.parquet").num_rows == 8
    table = pd.read_csv(out / "table.csv", index_col=0)
    assert list(table.index) == ["20 layers", "56 layers"]


def _check_quickstart_runs(uri: str) -> None:
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
