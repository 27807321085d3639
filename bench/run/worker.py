"""The per-trial Ray Tune trainable: fetch the teacher if any, train, stream epochs to MLflow and Tune.

The driver created the trial's MLflow run; this appends to it and ends it. Ray is reached only through ray_exec.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import lightning
import torch

from bench import track
from bench.run import ray_exec
from bench.train.fit import history_csv, run_trial
from bench.trials import Trial

CHECKPOINT_DIR = "checkpoint"


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def _teacher_state(uri: str, teacher_run: str, work: Path) -> dict:
    path = track.download_artifact(uri, teacher_run, f"{CHECKPOINT_DIR}/model.pt", work / "teacher")
    return torch.load(path, map_location="cpu", weights_only=True)


def _train(trial: Trial, data, cfg: dict[str, Any], tracker: track.TrialTracker, work: Path):
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
    sinks = [tracker.log_metrics, lambda rec, step: ray_exec.report({**rec, "step": step, "run_id": run_id})]
    res = run_trial(trial, data, sinks=sinks, workdir=work, teacher_state=teacher_state,
                    save_checkpoint=cfg["save_checkpoint"], speed=cfg.get("speed", "auto"))
    tracker.set_tags(res.speed)   # speed.* (channels_last, compile, optimizer): how, not what; not hashed
    if res.checkpoint is not None:
        tracker.log_artifact(res.checkpoint, CHECKPOINT_DIR)
    return res


def trainable(config: dict[str, Any], data=None) -> None:
    cfg = config["cfg"]
    trial = Trial.from_dict(cfg["trial"])
    tracker = track.TrialTracker(cfg["uri"], cfg["run_id"])
    try:
        tracker.set_tags({"host": platform.node(), "torch": torch.__version__, "lightning": lightning.__version__})
        work = Path(tempfile.mkdtemp(prefix=f"bench-{trial.cell}-"))
        res = _train(trial, data, cfg, tracker, work)
        tracker.set_tags({"device": res.device})
        f = res.final
        tracker.log_metrics({"best_test_error": f["best_test_error"], "wall_time_s": f["wall_time_s"],
                             "train_time_s": f["train_time_s"], "params": f["params"],
                             "mean_images_per_sec": f["images_per_sec"]}, res.history[-1]["step"])
        (work / "curve.csv").write_text(history_csv(res.history))
        tracker.log_artifact(work / "curve.csv")
        tracker.finish("FINISHED")
    except BaseException as e:
        tracker.set_tags({"error": one_line(e)})
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
