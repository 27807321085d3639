"""The per-trial Ray Tune trainable: fetch the teacher if any, train, stream epochs to MLflow and Tune."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import lightning
import torch

from bench import track
from bench.run import ray_exec
from bench.run.trials import Trial, apply_search
from bench.train.fit import history_csv, run_trial

CHECKPOINT_DIR = "checkpoint"


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def _search_run(config: dict[str, Any]) -> tuple[dict, str | None]:
    """A search sample becomes its own trial (own hash, own MLflow run), created here: the driver cannot know
    Tune's samples in advance. A sample that already FINISHED (same seeded draw on a re-run) is not redone."""
    from bench import models

    cfg = config["cfg"]
    base = Trial.from_dict(cfg["trial"])
    t = apply_search(base, config["search"], set(models.model_options(base.model)))
    done = track.finished_trials(cfg["uri"], cfg["exp"])
    if t.config_hash in done:
        return t.to_dict(), None
    rid = track.create_trial_run(cfg["uri"], cfg["exp"], cfg["parent"], t,
                                 extra_tags={"search_base": base.config_hash})
    return t.to_dict(), rid


def trainable(config: dict[str, Any], data=None) -> None:
    cfg = config["cfg"]
    trial, uri, run_id = cfg["trial"], cfg["uri"], cfg.get("run_id")
    if "search" in config:
        trial, run_id = _search_run(config)
        if run_id is None:
            ray_exec.report({"skipped": 1, "progress": 1.0})
            return
    tracker = track.TrialTracker(uri, run_id)
    try:
        tracker.set_tags({"host": platform.node(), "torch": torch.__version__, "lightning": lightning.__version__})
        work = Path(tempfile.mkdtemp(prefix=f"bench-{trial['cell']}-"))
        teacher_state = None
        if cfg.get("teacher_run"):
            path = track.download_artifact(uri, cfg["teacher_run"], f"{CHECKPOINT_DIR}/model.pt", work / "teacher")
            teacher_state = torch.load(path, map_location="cpu", weights_only=True)
            tracker.set_tags({"teacher_run": cfg["teacher_run"]})

        def to_mlflow(rec: dict, step: int) -> None:
            tracker.log_metrics(rec, step)

        def to_tune(rec: dict, step: int) -> None:
            ray_exec.report({**rec, "step": step, "run_id": run_id})

        if trial["resources"].get("workers", 1) > 1:
            # Data-parallel: Ray Train workers train; rank 0 streams the epochs to MLflow and (via Train) to Tune.
            from bench.run.ddp import run_data_parallel

            res = run_data_parallel(trial, data, uri=uri, run_id=run_id, teacher_state=teacher_state,
                                    save_checkpoint=cfg.get("save_checkpoint", False), checkpoint_dir=CHECKPOINT_DIR)
            tracker.set_tags({"world_size": res.world_size, "ranks": res.summary()})
        else:
            res = run_trial(trial, data, sinks=[to_mlflow, to_tune], threads=trial["resources"].get("cpus", 1),
                            want_gpu=trial["resources"].get("gpus", 0) > 0, workdir=work,
                            teacher_state=teacher_state, save_checkpoint=cfg.get("save_checkpoint", False))
        tracker.set_tags({"device": res.device})
        last_step = res.history[-1]["step"]
        f = res.final
        tracker.log_metrics({"best_test_error": f["best_test_error"], "wall_time_s": f["wall_time_s"],
                             "train_time_s": f["train_time_s"], "params": f["params"],
                             "mean_images_per_sec": f["images_per_sec"]}, last_step)
        (work / "curve.csv").write_text(history_csv(res.history))
        tracker.log_artifact(work / "curve.csv")
        if res.checkpoint is not None:
            tracker.log_artifact(res.checkpoint, CHECKPOINT_DIR)
        tracker.finish("FINISHED")
    except BaseException as e:
        tracker.set_tags({"error": one_line(e)})
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
