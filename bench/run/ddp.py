"""Data-parallel trials: one Ray Train TorchTrainer per Tune trial, each of its workers one Lightning DDP rank.

The Tune trial (worker.trainable) holds only a tiny coordinating slot and owns the MLflow run; the TorchTrainer's
workers hold the CPUs/GPUs. Every rank runs bench.train.fit.run_trial with Ray's Lightning strategy, plugin and
prepare_trainer, on its own disjoint shard of the train split; the epoch sums are all-reduced, so the records
are global. Rank 0 streams them to MLflow; every rank calls ray.train.report (a barrier in Train v2), and rank
0's reports reach the Tune trial through TuneReportCallback. Rank 0's return value carries the final metrics
back to the trial, which logs them and finishes the run as for a single-device trial.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from bench import BenchError, track
from bench.train.fit import TrialResult

_SLOT_CPU = 0.01  # the Tune trial's own coordinating slot (driver.tune_resources), beside the workers


@dataclass
class DataParallelResult(TrialResult):
    world_size: int = 1
    ranks: list[dict[str, Any]] = field(default_factory=list)   # per rank: rank, device, steps, shard size...
    shard_overlap: int = 0                                       # train images on more than one rank (0)

    def summary(self) -> str:
        """Compact JSON of the ranks (no index lists), for an MLflow tag."""
        return json.dumps({"world_size": self.world_size, "shard_overlap": self.shard_overlap,
                           "ranks": self.ranks}, separators=(",", ":"))


def scaling(resources: dict[str, Any]) -> dict[str, Any]:
    """ScalingConfig arguments from a trial's resources (cpus and gpus are per worker)."""
    workers = int(resources.get("workers", 1))
    cpus, gpus = float(resources.get("cpus", 1)), float(resources.get("gpus", 0))
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    return {"num_workers": workers, "use_gpu": gpus > 0, "resources_per_worker": per_worker}


def check_fits(resources: dict[str, Any], cluster: dict[str, float]) -> None:
    """Refuse a worker group the cluster can never hold (Ray Train would wait for it silently)."""
    workers = int(resources.get("workers", 1))
    cpu = workers * float(resources.get("cpus", 1)) + _SLOT_CPU
    gpu = workers * float(resources.get("gpus", 0))
    have_cpu, have_gpu = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if cpu > have_cpu + 1e-9 or gpu > have_gpu + 1e-9:
        raise BenchError(f"a data-parallel trial of {workers} workers needs {cpu:g} CPU and {gpu:g} GPU "
                         f"(per worker {resources.get('cpus', 1)} CPU, {resources.get('gpus', 0)} GPU); "
                         f"the Ray cluster has {have_cpu:g} CPU and {have_gpu:g} GPU")


def _train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank. Runs inside a Ray Train worker."""
    import torch.distributed as dist
    import ray.train
    import ray.train.torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from bench.train.fit import run_trial

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trial, uri, run_id = config["trial"], config["uri"], config["run_id"]
    data = ray.get(config["data"])
    tracker = track.TrialTracker(uri, run_id) if rank == 0 and run_id else None
    sinks = []
    if tracker is not None:
        sinks.append(lambda rec, step: tracker.log_metrics(rec, step))
    # Every rank reports (Train v2 wants the same number of reports from each); Tune sees rank 0's.
    sinks.append(lambda rec, step: ray.train.report({**rec, "step": step, "run_id": run_id}))
    work = Path(tempfile.mkdtemp(prefix=f"bench-{trial['cell']}-r{rank}-"))
    strategy = RayDDPStrategy(find_unused_parameters=trial.get("method") == "fitnet")  # hint stage skips the head
    res = run_trial(trial, data, sinks=sinks, threads=trial["resources"].get("cpus", 1),
                    device=ray.train.torch.get_device(), shard=(rank, world), workdir=work,
                    teacher_state=config.get("teacher_state"), save_checkpoint=config["save_checkpoint"] and rank == 0,
                    trainer_kwargs={"strategy": strategy, "plugins": [RayLightningEnvironment()], "devices": "auto",
                                    "use_distributed_sampler": False},
                    prepare=prepare_trainer)
    mine = {**res.rank, "device": res.device}
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


def _storage() -> str:
    from ray import tune

    try:
        return str(Path(tune.get_context().get_trial_dir()) / "train")
    except Exception:  # noqa: BLE001 - no Tune context outside a trial
        return tempfile.mkdtemp(prefix="bench-train-")


def run_data_parallel(trial: dict[str, Any], data, *, uri: str, run_id: str | None,
                      teacher_state: dict | None = None, save_checkpoint: bool = False,
                      checkpoint_dir: str = "checkpoint") -> DataParallelResult:
    """Train `trial` on trial["resources"]["workers"] Ray Train workers; returns rank 0's result with every
    rank's summary. Per-epoch records go to MLflow (rank 0) and, inside a Tune trial, to Tune."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_fits(trial["resources"], ray.cluster_resources())
    config = {"trial": trial, "data": ray.put(data), "uri": uri, "run_id": run_id, "teacher_state": teacher_state,
              "save_checkpoint": save_checkpoint, "checkpoint_dir": checkpoint_dir}
    name = f"ddp-{trial['cell']}-s{trial['seed']}-{(run_id or 'direct')[:8]}"
    trainer = TorchTrainer(
        _train_loop, train_loop_config=config, scaling_config=ScalingConfig(**scaling(trial["resources"])),
        run_config=RunConfig(name=name, storage_path=_storage(), callbacks=_tune_callbacks(),
                             failure_config=FailureConfig(max_failures=0)))
    out = trainer.fit().return_value
    if not out:
        raise BenchError(f"trial {trial['cell']}: the data-parallel run returned no result from rank 0")
    ranks = sorted(out["ranks"], key=lambda r: r["rank"])
    seen: set[int] = set()
    overlap = 0
    for r in ranks:
        s = set(r.pop("shard"))
        overlap += len(seen & s)
        seen |= s
        r["shard_size"] = len(s)
    if overlap:
        raise BenchError(f"trial {trial['cell']}: rank shards overlap on {overlap} training images")
    return DataParallelResult(final=out["final"], history=out["history"], device=f"{len(ranks)}× {out['device']}",
                              world_size=len(ranks), ranks=ranks, shard_overlap=overlap)
