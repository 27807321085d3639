"""`bench submit / jobs / status / logs / stop`: `bench run` as a Ray job, through the Jobs API (ray[default]).

The job ships the `bench` package as a runtime-env module (from a checkout or a wheel install alike) and the
suite's YAML file as its working dir, and runs `python -m bench.cli run SUITE.yaml ... --address auto` on the
head, under the interpreter Ray's workers run there. The submitter validates the suite (and plans it) and
checks what it can see of the cluster first, so a malformed suite or a cluster it would refuse gets no job.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench import BenchError
from bench.net import unreachable

PKG = Path(__file__).resolve().parent.parent          # the installed or checked-out `bench` package
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
PROBE_TIMEOUT_S = 3.0
# Ray SIGKILLs a stopped job's driver 3 s after its SIGTERM by default. Ending its open runs through a busy
# tracking server can take longer, and a driver killed first leaves them RUNNING until the next `bench run`.
STOP_GRACE_S = 20


class JobError(BenchError):
    exit_code = 2


def resolve_address(address: str | None) -> str:
    addr = address or os.environ.get("BENCH_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not addr:
        raise JobError("no Ray Jobs address; pass --address http://HEAD:8265 (or set BENCH_JOBS_ADDRESS)")
    if "://" not in addr:
        addr = f"http://{addr}"
    return addr.rstrip("/")


def probe(url: str, what: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A TCP connect answers in seconds; the Jobs client (and MLflow's) retry an unreachable host for long."""
    try:
        why = unreachable(url, timeout)
    except ValueError as e:
        raise JobError(f"bad {what} address {url!r}: {e}") from None
    if why:
        raise JobError(f"cannot reach {what} at {url}: {why}")


def client(address: str | None):
    addr = resolve_address(address)
    probe(addr, "Ray Jobs API")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(addr)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError (no dashboard, version mismatch)
        raise JobError(f"Ray Jobs API at {addr}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def _info(c, job_id: str):
    try:
        return c.get_job_info(job_id)
    except Exception as e:  # noqa: BLE001 - RuntimeError "... does not exist" (HTTP 404)
        if "does not exist" in str(e) or "404" in str(e):
            raise JobError(f"no job {job_id!r} on this cluster (see: bench jobs)") from None
        raise JobError(f"job {job_id}: {_one_line(e)}") from None


def _dashboard_json(addr: str, path: str, timeout: float = 10.0) -> Any:
    import requests

    r = requests.get(f"{addr}{path}", timeout=timeout)
    r.raise_for_status()
    return r.json()


def alive_nodes(addr: str) -> int | None:
    """How many nodes the cluster has now, from the dashboard's state API (the submitter never joins the
    cluster); None when it cannot tell."""
    try:
        found = _dashboard_json(addr, "/api/v0/nodes?limit=10000")["data"]["result"]["result"]
        return sum(1 for n in found if n.get("state") == "ALIVE")
    except Exception:  # noqa: BLE001 - an older or trimmed dashboard: the job's own check still applies
        return None


def head_python(addr: str) -> str | None:
    """The interpreter Ray's workers run on the head, where the job's driver runs: the raylet's
    --python_worker_command, from the command line the dashboard's node summary shows. Not `python` on the
    head's PATH, which is whatever came first when `ray start` ran (a system Python without bench's deps,
    when Ray was started as .venv/bin/ray). None when the dashboard does not say."""
    try:
        for node in _dashboard_json(addr, "/nodes?view=summary")["data"]["summary"]:
            if not (node.get("raylet") or {}).get("isHeadNode"):
                continue
            for arg in node.get("cmdline") or []:
                if arg.startswith("--python_worker_command="):
                    return shlex.split(arg.partition("=")[2])[0]
    except Exception:  # noqa: BLE001 - a field the dashboard marks deprecated; if it goes, PATH's python
        return None
    return None


def default_tracking_uri(address: str) -> str:
    """The cluster's tracking server: BENCH_TRACKING_URI on the head, else port 5000 on the head's host."""
    host = urlparse(address).hostname or "127.0.0.1"
    return f"${{BENCH_TRACKING_URI:-http://{host}:5000}}"


def entrypoint(suite_file: str, *, profile: str, dataset: str | None, seeds: int | None, cells: list[str] | None,
               tracking_uri: str, storage: str | None, python: str = "python", until_decided: bool = False,
               max_seeds: int | None = None, budget: str | None = None) -> str:
    args = ["run", suite_file, "--profile", profile, "--address", "auto"]
    if dataset:
        args += ["--dataset", dataset]
    if seeds is not None:
        args += ["--seeds", str(seeds)]
    if cells:
        args += ["--cells", *cells]
    if storage:
        args += ["--storage", storage]
    if until_decided:
        args += ["--until-decided"]
        if max_seeds is not None:
            args += ["--max-seeds", str(max_seeds)]
        if budget is not None:
            args += ["--budget", budget]
    # "${BENCH_TRACKING_URI:-...}" is expanded by the head's shell; anything else is quoted as it is.
    uri = f'"{tracking_uri}"' if tracking_uri.startswith("${") else shlex.quote(tracking_uri)
    # Without --storage, the head's BENCH_STORAGE (a path every node shares) names where checkpoints live.
    default_storage = "" if storage else ' ${BENCH_STORAGE:+--storage "$BENCH_STORAGE"}'
    return f"{shlex.quote(python)} -m bench.cli {shlex.join(args)} --tracking-uri {uri}{default_storage}"


def submit(suite_ref: str, *, profile: str, dataset: str | None, seeds: int | None, cells: list[str] | None,
           tracking_uri: str | None, storage: str | None, address: str | None, wait: bool, out=print,
           until_decided: bool = False, max_seeds: int | None = None, budget: str | None = None) -> int:
    from bench import models
    from bench.spec import load_suite, resolve_path
    from bench.track import credential_env, git_commit
    from bench.trials import make_plan

    # Everything that can fail on the input fails here, before anything reaches the cluster.
    suite = load_suite(suite_ref)
    if until_decided:
        from bench.run.until_decided import check_args
        from bench.spec import parse_duration

        check_args(suite, profile, seeds, max_seeds, cells)
        if budget is not None:
            parse_duration(budget)
    plan = make_plan(suite, profile, dataset, seeds, cells, model_options=lambda m: set(models.model_options(m)))
    addr = resolve_address(address)
    c = client(addr)
    nodes = alive_nodes(addr)
    if storage is None and nodes is not None and nodes > 1:
        # bench run would refuse this inside the job; say it now, before a job exists.
        raise JobError(f"the Ray cluster at {addr} has {nodes} nodes: pass --storage PATH, a path every node "
                       "shares (NFS), where trial checkpoints live")
    python = head_python(addr)
    if python is None:
        print(f"bench: note: the dashboard at {addr} does not say which Python its workers run; the job runs "
              "`python` from the head's PATH", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench-job-"))
    try:
        shutil.copy(resolve_path(suite_ref), work / f"{suite.name}.yaml")
        job_id = f"bench-{suite.name}-{profile}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        uri = tracking_uri or default_tracking_uri(addr)
        cmd = entrypoint(f"{suite.name}.yaml", profile=profile, dataset=dataset, seeds=seeds, cells=cells,
                         tracking_uri=uri, storage=storage, python=python or "python", until_decided=until_decided,
                         max_seeds=max_seeds, budget=budget)
        meta = {"bench_suite": suite.name, "bench_profile": profile, "bench_dataset": plan.dataset,
                "bench_trials": str(len(plan.trials)), "bench_tracking_uri": uri}
        try:
            c.submit_job(entrypoint=cmd, submission_id=job_id, metadata=meta, entrypoint_num_cpus=0,
                         runtime_env={"working_dir": str(work), "py_modules": [str(PKG)],
                                      # The job runs from a copy without .git: the runs carry our commit. An
                                      # authenticated server's credentials travel in the job's env, when set here.
                                      "env_vars": {"PYTHONUNBUFFERED": "1", "BENCH_GIT_COMMIT": git_commit(),
                                                   "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S),
                                                   **credential_env()}})
        except Exception as e:  # noqa: BLE001
            raise JobError(f"submitting to {addr}: {_one_line(e)}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out(job_id)
    if not wait:
        print(f"follow with: bench logs {job_id} --address {addr} --follow; stop with: bench stop {job_id} "
              f"--address {addr}", file=sys.stderr)
        return 0
    return follow(c, job_id)


def follow(c, job_id: str) -> int:
    """Stream the job's logs to the end; 0 if it SUCCEEDED, 1 otherwise."""
    import asyncio

    async def tail():
        async for chunk in c.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"\nbench: stopped following; the job keeps running (bench stop {job_id})", file=sys.stderr)
        return 130
    status = str(_wait_terminal(c, job_id, timeout=30))
    print(f"job {job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def _wait_terminal(c, job_id: str, timeout: float) -> str:
    end = time.time() + timeout
    while True:
        status = str(_info(c, job_id).status)
        if status in TERMINAL or time.time() > end:
            return status
        time.sleep(0.5)


def _fmt_ts(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _duration(info) -> str:
    if not info.start_time:
        return "-"
    s = ((info.end_time or time.time() * 1000) - info.start_time) / 1000
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}m"


def describe(info) -> dict[str, Any]:
    m = info.metadata or {}
    return {"id": info.submission_id or info.job_id, "suite": m.get("bench_suite", "-"),
            "profile": m.get("bench_profile", "-"), "status": str(info.status), "start": _fmt_ts(info.start_time),
            "duration": _duration(info), "message": info.message or ""}


def list_jobs(address: str | None) -> list[dict[str, Any]]:
    c = client(address)
    jobs = sorted(c.list_jobs(), key=lambda j: j.start_time or 0)
    return [describe(j) for j in jobs]


def status(job_id: str, address: str | None) -> dict[str, Any]:
    return describe(_info(client(address), job_id))


def logs(job_id: str, address: str | None, follow_: bool) -> int:
    c = client(address)
    _info(c, job_id)
    if follow_:
        return follow(c, job_id)
    sys.stdout.write(c.get_job_logs(job_id))
    return 0


def stop(job_id: str, address: str | None, wait_s: float = STOP_GRACE_S + 10) -> str:
    """Ask the job to stop (SIGTERM to `bench run`, which ends its open runs KILLED), and wait until it has."""
    c = client(address)
    info = _info(c, job_id)
    if str(info.status) in TERMINAL:
        return str(info.status)
    c.stop_job(job_id)
    return _wait_terminal(c, job_id, timeout=wait_s)
