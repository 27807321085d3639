"""The per-trial Ray Tune trainable: fetch the teacher if any, train, stream epochs to MLflow and Tune.

The driver created the trial's MLflow run; this appends to it and ends it. Ray is reached only through ray_exec.
Training code (torch, Lightning) is imported where a trial runs, not at import: the driver imports this module
to hand `trainable` to Tune, and Lightning's import alone costs it seconds.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import track
from bench.timeline import mark
from bench.run import ray_exec
from bench.trials import Trial

CHECKPOINT_DIR = "checkpoint"   # the MLflow artifact folder of a teacher's final weights
CKPT_FILE, META_FILE = "trial.ckpt", "meta.json"   # a trial's per-epoch checkpoint, in cfg["ckpt_dir"]


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def _teacher_state(uri: str, teacher_run: str, work: Path) -> dict:
    import torch

    path = track.download_artifact(uri, teacher_run, f"{CHECKPOINT_DIR}/model.pt", work / "teacher")
    return torch.load(path, map_location="cpu", weights_only=True)


def _resume_point(cfg: dict[str, Any], work: Path) -> Path | None:
    """Tune's checkpoint when Tune retries this trial; else what a driver that died left in the trial's dir."""
    got = ray_exec.tune_checkpoint(work / "resume", CKPT_FILE)
    if got is not None:
        return got
    own = Path(cfg["ckpt_dir"]) / CKPT_FILE
    return own if own.exists() else None


def _checkpointing(cfg: dict[str, Any], tracker: track.TrialTracker, work: Path):
    from bench.train.fit import Checkpointing

    ckdir = Path(cfg["ckpt_dir"])
    ckdir.mkdir(parents=True, exist_ok=True)
    resume = _resume_point(cfg, work)
    # Also without a checkpoint: an attempt killed between logging an epoch and saving it left that epoch behind.
    tracker.skip_logged()
    if resume is not None:
        meta = json.loads((ckdir / META_FILE).read_text()) if (ckdir / META_FILE).exists() else {}
        tracker.set_tags({"resumed_from_epoch": meta.get("epoch", "?")})

    def on_saved(path: Path, rec: dict) -> None:
        (ckdir / META_FILE).write_text(json.dumps({"epoch": rec["epoch"], "step": rec["step"],
                                                   "run_id": cfg["run_id"]}))
        ray_exec.report({**rec, "run_id": cfg["run_id"]}, checkpoint_dir=path.parent)

    return Checkpointing(ckdir, on_saved, resume)


def _train(trial: Trial, data, cfg: dict[str, Any], tracker: track.TrialTracker, work: Path):
    from bench.train.fit import run_trial

    uri, run_id = cfg["uri"], cfg["run_id"]
    teacher_state = None
    if cfg.get("teacher_run"):
        teacher_state = _teacher_state(uri, cfg["teacher_run"], work)
        tracker.set_tags({"teacher_run": cfg["teacher_run"]})
    if trial.resources.parallel:
        # Ray Train workers train; rank 0 streams the epochs to MLflow and (via Train) to Tune.
        res = ray_exec.run_data_parallel(trial, data, uri=uri, run_id=run_id, teacher_state=teacher_state,
                                         save_checkpoint=cfg["save_checkpoint"], checkpoint_dir=CHECKPOINT_DIR)
        tracker.set_tags({"world_size": res.world_size, "ranks": res.summary()})
        return res
    # Epoch records reach Tune with their checkpoint (on_saved); the final evaluation's record comes alone.
    sinks = [tracker.log_metrics,
             lambda rec, step: ray_exec.report({**rec, "step": step, "run_id": run_id}) if "epoch" not in rec
             else None]
    res = run_trial(trial, data, sinks=sinks, workdir=work, teacher_state=teacher_state,
                    save_checkpoint=cfg["save_checkpoint"], ckpt=_checkpointing(cfg, tracker, work),
                    speed=cfg.get("speed", "auto"))
    tracker.set_tags(res.speed)   # speed.* (channels_last, compile, optimizer): how, not what; not hashed
    if res.checkpoint is not None:
        tracker.log_artifact(res.checkpoint, CHECKPOINT_DIR)
    return res


def trainable(config: dict[str, Any], data=None) -> None:
    mark("worker.trainable")
    cfg = config["cfg"]
    trial = Trial.from_dict(cfg["trial"])
    # The trial's scratch (curve.csv, a teacher's download, a retry's copy of its checkpoint) goes with it,
    # however it ends; what outlives the trial is in MLflow and cfg["ckpt_dir"].
    with tempfile.TemporaryDirectory(prefix=f"bench-{trial.cell}-", ignore_cleanup_errors=True) as scratch:
        _run(trial, cfg, data, Path(scratch))


def _run(trial: Trial, cfg: dict[str, Any], data, work: Path) -> None:
    import lightning
    import torch

    from bench.train.fit import history_csv
    from bench.train.module import Diverged

    tracker = track.TrialTracker(cfg["uri"], cfg["run_id"])
    try:
        # An earlier attempt left its pid: this is a retry, with a checkpoint to resume from or not (a kill
        # before the first checkpoint restarts from zero, and still counts).
        prev = tracker.tags()
        again = {"retries": int(prev.get(f"{track.T}retries", "0")) + 1,
                 "resumed_from_epoch": 0} if f"{track.T}pid" in prev else {}
        # num_classes: the report's chance level for a run that diverges.
        classes = {"num_classes": data.num_classes} if getattr(data, "num_classes", None) else {}
        tracker.set_tags({"host": platform.node(), "pid": os.getpid(), "torch": torch.__version__,
                          "lightning": lightning.__version__, **ray_exec.node_info(), **again, **classes})
        res = _train(trial, data, cfg, tracker, work)
        tracker.set_tags({"device": res.device})
        f = res.final
        chosen = {k: f[k] for k in ("best_val_epoch", "best_val_epoch_test_error") if k in f}
        tracker.log_metrics({**chosen, "wall_time_s": f["wall_time_s"],
                             "train_time_s": f["train_time_s"], "params": f["params"], "macs": f["macs"],
                             "mean_images_per_sec": f["images_per_sec"]}, res.history[-1]["step"])
        (work / "curve.csv").write_text(history_csv(res.history))
        tracker.log_artifact(work / "curve.csv")
        tracker.finish("FINISHED")
        shutil.rmtree(cfg["ckpt_dir"], ignore_errors=True)   # finished: its checkpoints are no longer needed
    except Diverged as e:
        # A result, not a fault: ended FAILED and not retried (Tune sees a normal return).
        tracker.set_tags({"error": str(e), "diverged": 1, "diverged_step": e.step})
        tracker.finish("FAILED")
        shutil.rmtree(cfg["ckpt_dir"], ignore_errors=True)
    except BaseException as e:
        if not isinstance(e, track.TrackingUnavailable):   # else the store is gone: recording it would wait again
            tracker.set_tags({"error": one_line(e)})
            tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
