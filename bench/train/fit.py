"""One trial = one model, one Lightning Trainer, data resident on the trial's device.

Importable without Ray and MLflow: the scheduling and tracking layers pass in sinks (callables that receive
one metrics record per epoch), so this file can be benchmarked on any box with torch and lightning.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as L
import numpy as np
import torch

from bench import BenchError
from bench.data.trial_data import build_loaders
from bench.spec import Protocol
from bench.timeline import ENV as TIMELINE, mark
from bench.trials import Trial
from bench.train.module import Classifier, Diverged, EpochReporter, FitNetStudent, Sink
from bench.train.schedule import total_steps as _total_steps
from bench.train.speed import apply_precision, precision_used, setup as speed_setup


@dataclass
class TrialResult:
    final: dict[str, float]
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    device: str = "cpu"
    # Data-parallel runs only: this rank's view (rank, world_size, steps, shard indices, train images seen).
    rank: dict[str, Any] | None = None
    speed: dict[str, str] = field(default_factory=dict)   # speed.* run tags (bench/train/speed.py)


@dataclass
class Distributed:
    """One rank of a data-parallel trial. The caller brings the distributed runtime (Ray Train); nothing here
    imports it. trainer_kwargs go over ours (strategy, plugins, ...; "callbacks" are appended to ours);
    prepare is applied to the Trainer before fit (e.g. Ray Train's prepare_trainer)."""
    rank: int
    world: int
    device: torch.device
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[L.Trainer], L.Trainer] | None = None


@dataclass
class Checkpointing:
    """Per-epoch trial checkpoints. Each epoch end writes `dir/trial.ckpt` (atomically) and calls
    on_saved(path, record); resume_from restarts a fit exactly where such a checkpoint left it."""
    dir: Path
    on_saved: Callable[[Path, dict], None] | None = None
    resume_from: Path | None = None

    @property
    def path(self) -> Path:
        return self.dir / "trial.ckpt"


def _rng_state() -> dict[str, Any]:
    # Plain tensors and ints only: checkpoints load with torch.load(weights_only=True).
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochCheckpoint(L.Callback):
    """Saves the whole fit at each epoch end: model, optimizer, lr schedule and loops (Lightning's checkpoint),
    the epoch history (EpochReporter's state), the RNG states and the train loader's epoch. Placed after the
    EpochReporter, so the saved history holds the epoch just ended."""

    def __init__(self, ckpt: Checkpointing, loader):
        self.ckpt, self.loader = ckpt, loader
        self._last = -1
        ckpt.dir.mkdir(parents=True, exist_ok=True)

    def state_dict(self) -> dict:
        return {"rng": _rng_state(), "loader_epoch": self.loader.epoch, "step": self._last}

    def load_state_dict(self, state: dict) -> None:
        _set_rng_state(state["rng"])
        self._last = int(state.get("step", -1))
        self.loader.set_epoch(int(state["loader_epoch"]))

    def on_train_epoch_end(self, trainer, pl_module):
        reporter = next(c for c in trainer.callbacks if isinstance(c, EpochReporter))
        if self._last == trainer.global_step:   # the replayed epoch end of a resume: saved already
            return
        self._last = trainer.global_step
        tmp = self.ckpt.dir / "trial.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.ckpt.path)   # a kill mid-write leaves the previous checkpoint whole
        if self.ckpt.on_saved is not None:
            self.ckpt.on_saved(self.ckpt.path, reporter.history[-1])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(want_gpu: bool) -> torch.device:
    if want_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu{' ' + model if model else ''} ({torch.get_num_threads()} threads of {os.cpu_count()})"


class SumAcrossRanks(L.Callback):
    """Data-parallel: every rank holds the epoch sums of its own shard; add them up before the module and the
    EpochReporter read them (callbacks run before module hooks), so each epoch record is the global one and
    identical on every rank. Evaluation runs with rank 0's BN buffers everywhere (DDP lets each rank update
    its own after the last broadcast), so the sharded evaluation scores exactly the weights rank 0 saves."""

    def __init__(self, n_evals: int):
        self.n_evals = n_evals
        self.local_images = 0   # train images this rank saw, and all ranks together (after the reduction)
        self.global_images = 0

    def on_train_epoch_end(self, trainer, pl_module):
        acc = pl_module._train_acc
        if acc is None:
            return
        self.local_images += int(acc[-1].item())
        acc = trainer.strategy.reduce(acc, reduce_op="sum")
        self.global_images += int(acc[-1].item())
        pl_module._train_acc = acc

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.sanity_checking or not torch.distributed.is_initialized():
            return
        with torch.no_grad():
            for b in pl_module.buffers():
                torch.distributed.broadcast(b, src=0)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        for i in range(self.n_evals):
            # A rank with an empty eval shard still joins the collective, with zeros.
            acc = pl_module._eval_acc.get(i)
            if acc is None:
                acc = torch.zeros(4, dtype=torch.float64, device=pl_module.device)
            pl_module._eval_acc[i] = trainer.strategy.reduce(acc, reduce_op="sum")


def build_model(name: str, kwargs: dict[str, Any], data, proto: Protocol):
    from bench import models

    kw = dict(kwargs)
    if proto.dropout is not None:
        kw["dropout"] = proto.dropout
    return models.create(name, num_classes=data.num_classes, in_channels=data.in_channels,
                         image_size=data.image_size, **kw)


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def build_module(trial: Trial, data, steps_per_epoch: int, n_steps: int, eval_names: tuple[str, ...],
                 teacher_state: dict | None) -> Classifier:
    proto = trial.protocol
    model = build_model(trial.model, trial.model_kwargs, data, proto)
    if trial.method != "fitnet":
        return Classifier(model, proto, steps_per_epoch, eval_names, data.num_classes)
    if teacher_state is None:
        raise BenchError(f"trial {trial.cell}: a FitNet student needs its teacher's checkpoint")
    from bench.models.fitnet import HintRegressor

    teacher = build_model(teacher_state["model"], teacher_state["model_kwargs"], data, proto)
    teacher.load_state_dict(teacher_state["state_dict"])
    d = proto.distill
    hint_steps = int(round((d.hint_epochs if d else 0) * steps_per_epoch))
    return FitNetStudent(model, proto, steps_per_epoch, eval_names, data.num_classes, teacher,
                         HintRegressor(model.hint_shape, teacher.hint_shape), hint_steps, n_steps)


def _trainer(trial: Trial, dev: torch.device, n_steps: int, callbacks: list, workdir: Path | None,
             dist: Distributed | None) -> L.Trainer:
    kw: dict[str, Any] = dict(
        accelerator="gpu" if dev.type == "cuda" else "cpu", devices=[dev.index] if dev.type == "cuda" else 1,
        max_steps=n_steps, max_epochs=-1, precision=apply_precision(trial.protocol.precision, dev), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=trial.protocol.eval_every, callbacks=callbacks,
        default_root_dir=str(workdir) if workdir else None)
    if dist is not None:
        extra = dict(dist.trainer_kwargs)
        kw["callbacks"] = callbacks + list(extra.pop("callbacks", []))
        kw.update(extra)
    trainer = L.Trainer(**kw)
    return dist.prepare(trainer) if dist is not None and dist.prepare is not None else trainer


def run_trial(trial: Trial, data, *, sinks: list[Sink] = (), workdir: Path | None = None,
              teacher_state: dict | None = None, save_checkpoint: bool = False,
              dist: Distributed | None = None, ckpt: Checkpointing | None = None,
              speed: str = "auto") -> TrialResult:
    """Train one trial to the end of its protocol and return its final metrics. Threads and device come from
    the trial's resources; `dist` makes this call one rank of a data-parallel trial; `ckpt` checkpoints every
    epoch and, with resume_from, continues a fit exactly (same weights as an uninterrupted run, on CPU)."""
    quiet_lightning()
    torch.set_num_threads(max(1, int(trial.resources.cpus)))
    seed_all(trial.seed)
    dev = dist.device if dist is not None else pick_device(trial.resources.gpus > 0)
    shard = (dist.rank, dist.world) if dist is not None else None
    data, train_loader, eval_loaders, shard_idx = build_loaders(data, trial.protocol, trial.seed, dev, shard)
    n_steps = _total_steps(trial.protocol, len(train_loader))
    module = build_module(trial, data, len(train_loader), n_steps, tuple(eval_loaders), teacher_state)
    spd = speed_setup(speed, dev, n_steps, module, train_loader, eval_loaders, distributed=dist is not None)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    # images/s counts the global batch: all ranks step together.
    reporter = EpochReporter(list(sinks), n_steps, trial.protocol.batch_size, sync)
    reducer = SumAcrossRanks(len(eval_loaders)) if shard_idx is not None else None
    saver = EpochCheckpoint(ckpt, train_loader) if ckpt is not None else None
    marker = _FirstStep() if os.environ.get(TIMELINE) else None
    trainer = _trainer(trial, dev, n_steps, [c for c in (reducer, reporter, saver, marker) if c is not None], workdir,
                       dist)
    mark("train.fit_start")
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=list(eval_loaders.values()),
                ckpt_path=str(ckpt.resume_from) if ckpt is not None and ckpt.resume_from else None)
    wall = time.perf_counter() - t0
    if not reporter.history:
        raise BenchError(f"trial {trial.cell}: training produced no epoch (steps={n_steps})")
    _final_eval(trainer, module, list(eval_loaders.values()), reporter.history[-1], sinks)
    final = _final_metrics(reporter, module.model, wall)
    final["macs"] = float(_macs(trial, data))
    ckpt = _save_weights(trial, module.model, workdir) if save_checkpoint else None
    rank = None
    if shard_idx is not None:
        rank = {"rank": dist.rank, "world_size": dist.world, "steps": trainer.global_step,
                "shard": shard_idx.tolist(), "train_images": reducer.local_images,
                "train_images_all_ranks": reducer.global_images}
    return TrialResult(final=final, history=reporter.history, checkpoint=ckpt, device=device_name(dev), rank=rank,
                       speed={**spd.tags(), "precision.used": precision_used(trial.protocol.precision, dev)})


class _FirstStep(L.Callback):
    """Marks the end of the first training step on the timeline (bench.perf.startup), once."""

    def __init__(self):
        self.done = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.done:
            self.done = True
            mark("train.first_step")


def _final_eval(trainer: L.Trainer, module: Classifier, loaders: list, last: dict, sinks) -> None:
    """The last epoch may have stopped at max_steps before its evaluation: evaluate once more so that the
    final test error always describes the final weights."""
    if "test_error" in last:
        return
    trainer.validate(module, dataloaders=loaders, verbose=False)
    last.update(module.results)
    module.results = {}
    evals = {k: v for k, v in last.items() if k.startswith(("test_", "val_"))}
    for sink in sinks:
        sink(evals, last["step"])


def _final_metrics(reporter: EpochReporter, model: torch.nn.Module, wall: float) -> dict[str, float]:
    final = {k: v for k, v in reporter.history[-1].items() if k != "step"}
    final.update(_best_val_epoch(reporter.history))
    final.update(wall_time_s=wall, train_time_s=reporter.train_time,
                 params=float(sum(p.numel() for p in model.parameters())),
                 images_per_sec=_mean_ips(reporter.history))
    return final


def _macs(trial: Trial, data) -> int:
    """Multiply-adds per image at the data's shape, counted on a meta-device copy (the report's complexity column:
    a proxy cell's FLOPs beside the pair it stands in for)."""
    from bench import models
    from bench.models.flops import count_flops

    m = models.create_meta(trial.model, num_classes=data.num_classes, in_channels=data.in_channels,
                           image_size=data.image_size, **trial.model_kwargs)
    return count_flops(m, data.image_size, data.in_channels)


def _best_val_epoch(history: list[dict]) -> dict[str, float]:
    """Early stopping chosen on the validation split (never on the test set): the epoch of the lowest val_error
    (the first of ties) and the test error measured at that epoch. Empty without a validation split."""
    vals = [h for h in history if h.get("val_error") is not None]
    if not vals:
        return {}
    best = min(vals, key=lambda h: h["val_error"])
    out = {"best_val_epoch": float(best["epoch"])}
    if best.get("test_error") is not None:
        out["best_val_epoch_test_error"] = best["test_error"]
    return out


def _save_weights(trial: Trial, model: torch.nn.Module, workdir: Path | None) -> Path:
    path = Path(workdir or ".") / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": trial.model, "model_kwargs": trial.model_kwargs,
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, path)
    return path


def _mean_ips(history: list[dict]) -> float:
    # The first epoch pays warm-up (allocator, cudnn autotune); report the steady state when there is one.
    vals = [h["images_per_sec"] for h in history]
    return float(np.mean(vals[1:] if len(vals) > 1 else vals))


def history_csv(history: list[dict]) -> str:
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "step", k != "epoch", k))
    lines = [",".join(keys)]
    for h in history:
        lines.append(",".join("" if h.get(k) is None else (f"{h[k]:.6g}" if isinstance(h[k], float) else str(h[k]))
                              for k in keys))
    return "\n".join(lines) + "\n"
