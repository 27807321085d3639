"""What `bench submit` checks against a real cluster before it creates a job, and which interpreter the job gets.

One two-node cluster on this machine, started the way a user hit both defects: `<venv>/bin/ray start` with a
PATH whose first `python` is a bare interpreter that lacks bench's dependencies (the venv is not activated).
The submitter only talks to the dashboard's REST API; it never joins the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixtures_cluster import BIN, bench_env, clean_env, free_ports, stop_trees


@contextmanager
def _cluster_with_a_bare_python_first():
    """Head (dashboard, Jobs API) and a worker node, 1 CPU each, plus `bench server`; torn down by PID."""
    root = Path(tempfile.mkdtemp(prefix="bench-sc-", dir="/tmp"))   # short: Ray's socket paths have a length cap
    procs: list[subprocess.Popen] = []
    try:
        # An empty venv: a `python` that exists and imports nothing of bench's (no rich, no ray).
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                        str(root / "bare")], check=True)
        env = clean_env()
        env["PATH"] = f"{root / 'bare' / 'bin'}{os.pathsep}{env['PATH']}"
        # On 2 shared, busy cores a raylet can take more than Ray's 10 s to register, and the dashboard's modules
        # more than its 30 s (60 s in all) to start; both failed here under load.
        env.update(RAY_raylet_start_wait_time_s="120", RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT="120",
                   RAY_DASHBOARD_STARTUP_TIMEOUT_S="180")
        ports = free_ports(16)
        gcs, dash, server_port = ports[:3]
        jobs, tracking = f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{server_port}"

        def node(name: str, p: list[int]) -> list[str]:
            agent, grpc, metrics, renv, nm, om = p
            return ["--node-ip-address", "127.0.0.1", "--temp-dir", str(root / name), "--num-cpus", "1", "--block",
                    "--disable-usage-stats", "--dashboard-agent-listen-port", str(agent),
                    "--dashboard-agent-grpc-port", str(grpc), "--metrics-export-port", str(metrics),
                    "--runtime-env-agent-port", str(renv), "--node-manager-port", str(nm),
                    "--object-manager-port", str(om)]

        log = open(root / "cluster.log", "w")
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--head", "--port", str(gcs), "--dashboard-host",
                                       "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
                                       "--ray-client-server-port", str(ports[15]), *node("h", ports[3:9])],
                                      env=env, cwd=root, stdout=log, stderr=log))
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.cli", "server", "--port", str(server_port),
                                       "--store", str(root / "mlflow"), "--workers", "1"], env=bench_env(), cwd=root,
                                      stdout=log, stderr=log))
        waits = dict(procs=procs, log=root / "cluster.log")
        _wait(lambda: _json(f"{jobs}/api/version"), "ray head", 240, **waits)
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs}",
                                       *node("w", ports[9:15])], env=env, cwd=root, stdout=log, stderr=log))
        _wait(lambda: _alive(jobs) >= 2, "ray worker node", 240, **waits)
        _wait(lambda: urllib.request.urlopen(f"{tracking}/health", timeout=2).status == 200, "bench server", 120,
              **waits)
        yield jobs, tracking
    finally:
        stop_trees(procs)
        shutil.rmtree(root, ignore_errors=True)


def _json(url: str):
    import json

    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def _alive(jobs: str) -> int:
    return sum(n["state"] == "ALIVE" for n in _json(f"{jobs}/api/v0/nodes?limit=100")["data"]["result"]["result"])


def _wait(cond, what: str, timeout: float, procs: list[subprocess.Popen], log: Path) -> None:
    end = time.time() + timeout
    while time.time() < end:
        dead = [p.returncode for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: a process exited early with {dead[0]}; its log ends:\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


@pytest.fixture(scope="module")
def cl():
    with _cluster_with_a_bare_python_first() as c:
        yield c


def _bench(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=bench_env())


def _job_ids(jobs: str) -> set[str]:
    from ray.job_submission import JobSubmissionClient

    return {j.submission_id for j in JobSubmissionClient(jobs).list_jobs()}


@pytest.mark.slow
def test_multi_node_cluster_without_storage_is_refused_before_a_job_exists(cl, tmp_path):
    jobs, tracking = cl
    before = _job_ids(jobs)
    t0 = time.time()
    r = _bench(["submit", "quickstart", "--profile", "smoke", "--address", jobs, "--tracking-uri", tracking], tmp_path)
    took = time.time() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert lines[0].startswith("bench: error: ") and "2 nodes" in lines[0] and "--storage" in lines[0], lines
    assert r.stdout == "" and _job_ids(jobs) == before
    print(f"\nrefused in {took:.1f} s")


@pytest.mark.slow
def test_the_job_runs_under_the_workers_interpreter_not_the_first_python_on_path(cl, tmp_path):
    """Before: the job ran the bare `python` and failed with ModuleNotFoundError: No module named 'rich'."""
    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobSubmissionClient

    jobs, tracking = cl
    r = _bench(["submit", "quickstart", "--profile", "smoke", "--cells", "resnet20", "--seeds", "1", "--wait",
                "--address", jobs, "--tracking-uri", tracking, "--storage", str(tmp_path / "shared")], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.splitlines()[0].strip()
    exe = JobSubmissionClient(jobs).get_job_info(job_id).entrypoint.split()[0]
    assert Path(exe).parent == BIN, exe                      # the venv's interpreter, as Ray's workers run it
    c = MlflowClient(tracking)
    exp = c.get_experiment_by_name("bench/quickstart")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`bench.kind` = 'trial'")
    assert [(x.data.tags["bench.cell"], x.info.status) for x in runs] == [("resnet20", "FINISHED")]
