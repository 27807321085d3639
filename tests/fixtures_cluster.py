"""Real processes for the cluster tests: a 2-node Ray cluster on this machine and a `bench server`.

Every process is started here under subprocess.Popen (`ray start --block`), so its PID is ours; teardown
terminates exactly those processes and their descendants (found with psutil before the first signal), never by
name, and runs in a finally even when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.procs import reap

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env() -> dict[str, str]:
    """The environment the Ray nodes (and the jobs they run) inherit: this venv first on PATH, and no
    PYTHONPATH pointing at this checkout, so a job can only import `bench` from what it was shipped."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "BENCH_TRACKING_URI")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def bench_env() -> dict[str, str]:
    """The environment of a `bench` client run from this checkout."""
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return env


def stop_trees(popens: list[subprocess.Popen], timeout: float = 5.0) -> None:
    """SIGTERM the processes we started and every descendant they have now (all at once, so the nodes shut down
    in parallel); SIGKILL what is left after timeout."""
    procs = []
    for proc in popens:
        try:
            root = psutil.Process(proc.pid)
            procs += [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    reap(procs, timeout, signal.SIGTERM)
    for proc in popens:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _get_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _wait(cond, what: str, timeout: float, procs: list[subprocess.Popen], logs: Path | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        for p in procs:
            if p.poll() is not None:
                tail = ""
                if logs is not None:
                    tail = "".join(f"\n--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-20:])
                                   for f in sorted(logs.glob("*.out")))
                raise RuntimeError(f"{what}: a process exited early with {p.returncode}{tail}")
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


@dataclass
class LocalCluster:
    gcs: str                 # 127.0.0.1:P (for `bench run --address`)
    jobs: str                # http://127.0.0.1:D (for `bench submit --address`)
    tracking: str            # http://127.0.0.1:S (the bench server)
    root: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def alive_nodes(self) -> int:
        return len(self.node_ids())

    def node_ids(self) -> set[str]:
        data = _get_json(f"{self.jobs}/api/v0/nodes?limit=10")
        return {n["node_id"] for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"}


def _node_args(temp: Path, ports: list[int]) -> list[str]:
    agent, grpc, metrics, renv, nm, om, client = ports
    # One declared GPU per node (Ray counts it as a resource; the trials still train on the CPU): fractional-GPU
    # trials then pack onto nodes as they would on GPU machines.
    return ["--temp-dir", str(temp), "--num-cpus", "1", "--num-gpus", "1", "--block", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
            "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(renv),
            "--node-manager-port", str(nm), "--object-manager-port", str(om)]


@contextmanager
def local_cluster():
    """Head (1 CPU, 1 declared GPU, dashboard + Jobs API) and a worker node (1 CPU, 1 declared GPU), each with its
    own temp dir and agent ports, plus `bench server` on a free port. Yields a LocalCluster; tears everything down
    by PID.

    Ray starts the way a user hit two defects: `<venv>/bin/ray start` with a PATH whose first `python` is a bare
    interpreter without bench's dependencies (the venv not activated). Every job on this cluster then shows that
    `bench submit` runs its job under the workers' interpreter, not the first python on the head's PATH."""
    root = Path(tempfile.mkdtemp(prefix="bench-cl-", dir="/tmp"))   # short: Ray's socket paths have a length cap
    ports = free_ports(19)
    gcs, dash, client, server_port = ports[:4]
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(root / "bare")], check=True)
    env = clean_env()
    env["PATH"] = f"{root / 'bare' / 'bin'}{os.pathsep}{env['PATH']}"
    # On 2 busy cores a raylet can take more than Ray's 10 s to register, and the dashboard's modules more than
    # their 30 s to start: both made `ray start` exit 1 under load here.
    env.update(RAY_raylet_start_wait_time_s="120", RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT="120",
               RAY_DASHBOARD_STARTUP_TIMEOUT_S="180")
    ray = str(BIN / "ray")
    cl = LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", f"http://127.0.0.1:{server_port}", root)
    logs = root / "logs"
    logs.mkdir()
    try:
        head = subprocess.Popen(
            [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
             "--ray-client-server-port", str(client), *_node_args(root / "h", ports[4:11])],
            env=env, cwd=root, stdout=open(logs / "head.out", "w"), stderr=subprocess.STDOUT)
        cl.procs.append(head)
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "server", "--port", str(server_port), "--store", str(root / "mlflow"),
             "--workers", "1"],
            env=bench_env(), cwd=root, stdout=open(logs / "server.out", "w"), stderr=subprocess.STDOUT)
        cl.procs.append(server)
        _wait(lambda: _get_json(f"{cl.jobs}/api/version"), "ray head", 240, cl.procs, logs)
        worker = subprocess.Popen(
            [ray, "start", "--address", cl.gcs, "--node-ip-address", "127.0.0.1",
             *_node_args(root / "w", ports[11:18])],
            env=env, cwd=root, stdout=open(logs / "worker.out", "w"), stderr=subprocess.STDOUT)
        cl.procs.append(worker)
        _wait(lambda: cl.alive_nodes() >= 2, "ray worker node", 240, cl.procs, logs)
        _wait(lambda: urllib.request.urlopen(f"{cl.tracking}/health", timeout=2).status == 200,
              "bench server", 120, cl.procs, logs)
        yield cl
    finally:
        stop_trees(cl.procs)
        shutil.rmtree(root, ignore_errors=True)
