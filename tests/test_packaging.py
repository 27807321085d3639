"""A non-editable install works away from the checkout: the wheel carries the suites, `bench list` and
`bench run` find them from another directory, and `bench report` writes to that directory, not site-packages.

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
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SUITES = sorted(p.name for p in (REPO / "bench" / "suites").glob("*.yaml"))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_install_lists_runs_and_reports_outside_the_checkout(tmp_path):
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

    uri = f"sqlite:///{tmp_path}/m.db"
    r = _run([str(venv / "bin" / "bench"), "run", "quickstart", "--profile", "smoke", "--tracking-uri", uri,
              "--num-cpus", "2"], work, env)
    assert "8 finished, 0 failed" in r.stdout, r.stdout[-3000:]  # 4 cells x 2 seeds
    _run([str(venv / "bin" / "bench"), "report", "quickstart", "--tracking-uri", uri], work, env)
    assert (work / "reports" / "quickstart" / "report.md").is_file()
    assert not list(venv.rglob("report.md"))
