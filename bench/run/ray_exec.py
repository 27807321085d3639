"""Every Ray import of bench lives here (Ray's API has moved before: run_experiments -> tune.run -> Tuner).

Trials run as Ray Tune trials: `Tuner` + `tune.with_resources` for per-trial CPUs/GPUs, `tune.with_parameters`
to put the dataset in the object store once, and a grid over the wave's trials. A data-parallel trial runs a
Ray Train TorchTrainer inside its Tune trial (bottom of this file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import ray
from ray import tune

from bench import BenchError
from bench.procs import reap
from bench.timeline import mark

REPO = Path(__file__).resolve().parent.parent.parent


class ClusterError(BenchError):
    pass


@dataclass
class Outcome:
    status: str            # FINISHED | FAILED
    error: str | None = None
    final: dict | None = None


def connect(address: str | None, num_cpus: int | None = None) -> dict[str, float]:
    """Start an embedded local Ray (this machine's CPUs and GPUs) or join a cluster. Returns its resources."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ctrl-C must reach the driver at once (it ends the open runs as KILLED), not start Tune's graceful stop.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if ray.is_initialized():
        return ray.cluster_resources()
    if address and address != "auto":
        _probe(address)
    # ray.init replaces SIGTERM's handler with sys.exit, and an embedded head's handler kills Ray's processes
    # first: the driver then aborts (signal 6) before it has ended its open runs. `bench stop` sends SIGTERM.
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            # Ship the package to the cluster: nodes need bench's code, not this checkout. A Ray job (bench
            # submit) already ships it in the job's runtime env, which its workers inherit.
            # Workers of a joined cluster inherit the nodes' environment, not ours: the tracking server's
            # credentials travel in the runtime env too, when set.
            from bench.track import credential_env

            in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
            env = {"py_modules": [str(REPO / "bench")], **({"env_vars": credential_env()} if credential_env() else {})}
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", runtime_env=None if in_job else env)
        else:
            # "local": a new instance of our own, even where `ray start` left a cluster (or a stale
            # /tmp/ray/ray_current_cluster of a dead one) that a plain ray.init() would try to join.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"cannot reach Ray cluster at {address or 'local'}: {msg}") from None
    if callable(sigterm) and signal.getsignal(signal.SIGTERM) is not sigterm:
        signal.signal(signal.SIGTERM, sigterm)
    return ray.cluster_resources()


def _probe(address: str, timeout: float = 5.0) -> None:
    """ray.init retries an unreachable GCS for minutes; a plain TCP connect answers in seconds."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}; expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"cannot reach Ray cluster at {address}: {e.strerror or e}") from None


def shutdown(wait_workers: bool = False) -> None:
    """Leave Ray; an embedded one stops. `wait_workers`: also wait (5 s at most, then SIGKILL) until this
    process's own children, an embedded Ray's workers among them, are gone. Its raylet's end reaches them only
    later, and a driver that ends the runs of an interrupted wave must know that no worker writes to them after."""
    if not ray.is_initialized():
        return
    kids = psutil.Process().children(recursive=True) if wait_workers else []
    ray.shutdown()
    reap(kids, timeout=5)


class _Progress(tune.Callback):
    """Forwards Tune's trial events to the driver's progress display."""

    def __init__(self, on_event: Callable[[str, str, dict], None]):
        self.on_event = on_event

    # Tune pickles its callbacks with the experiment state; the live display (locks, a terminal) stays behind.
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.on_event = lambda *a: None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.on_event("start", _key(trial), {"name": _name(trial)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.on_event("result", _key(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_event("complete", _key(trial), trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_event("error", _key(trial), {})


def _key(trial) -> str:
    return trial.config["cfg"]["run_id"]


def _name(trial) -> str:
    return trial.config["cfg"]["name"]


def run_wave(trainable: Callable, configs: list[dict[str, Any]], *, resources: Callable[[dict], dict],
             data: Any, storage: Path, name: str, on_event: Callable[[str, str, dict], None],
             max_concurrent: int = 0, max_failures: int = 2) -> dict[str, Outcome]:
    """Run one wave of independent trials; returns run id -> outcome. A failing trial does not stop the rest;
    a trial whose worker dies is restarted (up to max_failures times) from its last epoch checkpoint."""
    fn = tune.with_resources(tune.with_parameters(trainable, data=data), resources=resources)
    tuner = tune.Tuner(
        fn,
        param_space={"cfg": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"{t.config['cfg']['trial']['cell']}"
                                                                    f"-s{t.config['cfg']['trial']['seed']}-{t.trial_id}"),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[_Progress(lambda ev, rid, res: on_event(ev, rid, res))],
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  # Our own per-trial checkpoint is the newest; Tune keeps one copy to retry from.
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    mark("driver.wave_submitted")
    grid = tuner.fit()
    out: dict[str, Outcome] = {}
    for r in grid:
        rid = r.config["cfg"]["run_id"]
        if r.error is not None:
            out[rid] = Outcome("FAILED", _short_error(r.error))
        else:
            out[rid] = Outcome("FINISHED", final=r.metrics)
    return out


def _short_error(e: BaseException) -> str:
    """The root cause's last line: Ray wraps worker exceptions in several layers of traceback. A worker that
    died is named as such; Ray's text guesses "possibly the OOM killer" for any death, so OOM is said only
    when Ray reports memory pressure."""
    text = str(e).strip()
    low = text.lower()
    if isinstance(e, ray.exceptions.OutOfMemoryError) or "running low on memory" in low:
        return "worker killed by Ray's memory monitor (out of memory)"
    if isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)) or \
            "actor died unexpectedly" in low:
        return "worker lost (signal or node failure)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(" "):
            return ln.strip()[:500]
    return (lines[-1] if lines else type(e).__name__)[:500]


def report(metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
    """One Tune result; with a checkpoint, Tune persists a copy into the trial's storage and retries from it."""
    if checkpoint_dir is None:
        tune.report(metrics)
    else:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


def tune_checkpoint(dst: Path, name: str) -> Path | None:
    """The file `name` of the checkpoint Tune restarts this trial from (after a failure), copied to dst."""
    ck = tune.get_checkpoint()
    if ck is None:
        return None
    with ck.as_directory() as d:
        src = Path(d) / name
        if not src.exists():
            return None
        dst.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(src, dst / name))


# ---- data-parallel trials: one Ray Train TorchTrainer per Tune trial, each worker one Lightning DDP rank --------
#
# The Tune trial (worker.trainable) holds only the coordinating slot (Resources.slot) and owns the MLflow run; the
# TorchTrainer's workers hold the CPUs/GPUs. Every rank runs bench.train.fit.run_trial with Ray's Lightning
# strategy, plugin and prepare_trainer on its own disjoint shard; the epoch sums are all-reduced, so the records
# are global. Rank 0 streams them to MLflow; every rank calls ray.train.report (a barrier in Train v2), and rank
# 0's reports reach the Tune trial through TuneReportCallback. Rank 0's return value carries the final metrics.

@dataclass
class DataParallelResult:
    final: dict[str, float]
    history: list[dict]
    device: str
    world_size: int = 1
    ranks: list[dict[str, Any]] = field(default_factory=list)   # per rank: rank, device, steps, shard size...
    shard_overlap: int = 0                                       # train images on more than one rank (0)

    def summary(self) -> str:
        """Compact JSON of the ranks (no index lists), for an MLflow tag."""
        return json.dumps({"world_size": self.world_size, "shard_overlap": self.shard_overlap,
                           "ranks": self.ranks}, separators=(",", ":"))


def _train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank. Runs inside a Ray Train worker."""
    import torch.distributed as dist
    import ray.train
    import ray.train.torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from bench import track
    from bench.train.fit import Distributed, run_trial
    from bench.trials import Trial

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trial, uri, run_id = Trial.from_dict(config["trial"]), config["uri"], config["run_id"]
    data = ray.get(config["data"])
    tracker = track.TrialTracker(uri, run_id) if rank == 0 and run_id else None
    sinks = []
    if tracker is not None:
        sinks.append(lambda rec, step: tracker.log_metrics(rec, step))
    # Every rank reports (Train v2 wants the same number of reports from each); Tune sees rank 0's.
    sinks.append(lambda rec, step: ray.train.report({**rec, "step": step, "run_id": run_id}))
    strategy = RayDDPStrategy(find_unused_parameters=trial.method == "fitnet")  # the hint stage skips the head
    ctx_dist = Distributed(rank, world, ray.train.torch.get_device(),
                           {"strategy": strategy, "plugins": [RayLightningEnvironment()], "devices": "auto",
                            "use_distributed_sampler": False}, prepare_trainer)
    # The rank's scratch (rank 0's final weights until they are logged) goes when the rank ends, however.
    with tempfile.TemporaryDirectory(prefix=f"bench-{trial.cell}-r{rank}-", ignore_cleanup_errors=True) as work:
        res = run_trial(trial, data, sinks=sinks, workdir=Path(work), teacher_state=config.get("teacher_state"),
                        save_checkpoint=config["save_checkpoint"] and rank == 0, dist=ctx_dist)
        mine = {**res.rank, "device": res.device, "node_id": ray.get_runtime_context().get_node_id()}
        everyone: list[dict | None] = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank != 0:
            return None
        if res.checkpoint is not None and tracker is not None:
            # The Tune trial may sit on another node: rank 0 logs the weights itself.
            tracker.log_artifact(res.checkpoint, config["checkpoint_dir"])
        return {"final": res.final, "history": res.history, "device": res.device, "ranks": everyone}


def _tune_callbacks() -> list:
    from ray.tune.integration.ray_train import TuneReportCallback

    try:
        return [TuneReportCallback()]
    except RuntimeError:  # not inside a Tune trial (called directly)
        return []


def _train_storage() -> str:
    try:
        return str(Path(tune.get_context().get_trial_dir()) / "train")
    except Exception:  # noqa: BLE001 - no Tune context outside a trial
        return tempfile.mkdtemp(prefix="bench-train-")


def run_data_parallel(trial, data, *, uri: str, run_id: str | None, teacher_state: dict | None = None,
                      save_checkpoint: bool = False, checkpoint_dir: str = "checkpoint") -> DataParallelResult:
    """Train `trial` on trial.resources.workers Ray Train workers; returns rank 0's result with every rank's
    summary. Per-epoch records go to MLflow (rank 0) and, inside a Tune trial, to Tune."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    r = trial.resources
    cpu, gpu = r.total()
    have = ray.cluster_resources()
    if cpu > have.get("CPU", 0) + 1e-9 or gpu > have.get("GPU", 0) + 1e-9:
        raise BenchError(f"a data-parallel trial of {r.workers} workers needs {cpu:g} CPU and {gpu:g} GPU; the Ray "
                         f"cluster has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU")
    config = {"trial": trial.to_dict(), "data": ray.put(data), "uri": uri, "run_id": run_id,
              "teacher_state": teacher_state, "save_checkpoint": save_checkpoint, "checkpoint_dir": checkpoint_dir}
    scaling = ScalingConfig(num_workers=r.workers, use_gpu=r.gpus > 0,
                            resources_per_worker={"CPU": r.cpus, **({"GPU": r.gpus} if r.gpus > 0 else {})})
    trainer = TorchTrainer(
        _train_loop, train_loop_config=config, scaling_config=scaling,
        run_config=RunConfig(name=f"ddp-{trial.cell}-s{trial.seed}-{(run_id or 'direct')[:8]}",
                             storage_path=_train_storage(), callbacks=_tune_callbacks(),
                             failure_config=FailureConfig(max_failures=0)))
    out = trainer.fit().return_value
    if not out:
        raise BenchError(f"trial {trial.cell}: the data-parallel run returned no result from rank 0")
    ranks = sorted(out["ranks"], key=lambda x: x["rank"])
    seen: set[int] = set()
    for x in ranks:
        s = set(x.pop("shard"))
        if seen & s:
            raise BenchError(f"trial {trial.cell}: rank shards overlap on {len(seen & s)} training images")
        seen |= s
        x["shard_size"] = len(s)
    return DataParallelResult(final=out["final"], history=out["history"], device=f"{len(ranks)}× {out['device']}",
                              world_size=len(ranks), ranks=ranks)


# ---- placement: where a trial runs, what the cluster could ever run ---------------------------------------------

def node_info() -> dict[str, str]:
    """The Ray node this process runs on (for a trial's tags)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def node_types() -> list[dict[str, Any]] | None:
    """The node types the autoscaler may start (bench.run.cluster.NodeType), with the nodes alive now; None
    when no autoscaler config can be read (then only the current resources count). Sources: the GCS's cluster
    config (autoscaler v2, KubeRay), else the cluster-launcher file $BENCH_AUTOSCALER_CONFIG or, on a head
    started by `ray up`, ~/ray_bootstrap_config.yaml."""
    import yaml

    from bench.run.cluster import node_types_from_config

    types: list[dict[str, Any]] = []
    try:
        from ray._private.state import state

        cfg = state.get_cluster_config()
        for i, g in enumerate(cfg.node_group_configs if cfg is not None else []):
            types.append({"name": g.name or f"group{i}", "resources": {k: float(v) for k, v in g.resources.items()},
                          "max": int(g.max_count)})
    except Exception:  # noqa: BLE001 - private API; absent or moved: fall through to the file
        types = []
    if not types:
        path = Path(os.environ.get("BENCH_AUTOSCALER_CONFIG") or "~/ray_bootstrap_config.yaml").expanduser()
        if path.is_file():
            try:
                types = node_types_from_config(yaml.safe_load(path.read_text()) or {})
            except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
                types = []
    if not types:
        return None
    alive = [{"name": f"node {n['NodeManagerAddress']}", "max": 1,
              "resources": {k: float(v) for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU")}}
             for n in ray.nodes() if n.get("Alive")] if ray.is_initialized() else []
    return types + alive
