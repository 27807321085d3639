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
from bench.data import Dataset
from bench.data.loader import DeviceLoader, normalize
from bench.spec import Protocol
from bench.train.module import Classifier, EpochReporter, FitNetStudent, Sink
from bench.train.schedule import total_steps as _total_steps


@dataclass
class TrialResult:
    final: dict[str, float]
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    device: str = "cpu"
    # Data-parallel runs only: this rank's view (rank, world_size, steps, shard indices, train images seen).
    rank: dict[str, Any] | None = None


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


def shard_indices(n: int, rank: int, world: int, seed: int) -> torch.Tensor:
    """Rank `rank`'s slice of a seeded permutation of range(n): disjoint across ranks, n // world each (the
    remainder is dropped) so every rank takes the same number of steps."""
    # Offset the seed: subset_train and split draw their permutations from the trial seed itself.
    g = torch.Generator().manual_seed(seed + 0x5A4D)
    per = n // world
    return torch.randperm(n, generator=g)[rank * per:(rank + 1) * per].sort().values


def build_loaders(data: Dataset, proto: Protocol, seed: int, device: torch.device,
                  shard: tuple[int, int] | None = None):
    """Train loader plus named eval loaders. Subsets and the validation split are seeded by the trial seed.

    shard=(rank, world): this rank trains on its shard_indices() of the train split with batch_size / world
    (batch_size is the global batch) and evaluates every world-th test/val image; the caller sums across ranks.
    Returns (data, train, evals, train indices or None)."""
    if hasattr(data, "train_files"):
        return _stream_loaders(data, proto, seed, device, shard)
    if proto.train_subset is not None:
        if proto.train_subset > len(data.train_y):
            raise BenchError(f"train_subset {proto.train_subset} exceeds the {len(data.train_y)} training images")
        data = data.subset_train(proto.train_subset, seed=seed)
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if proto.val_split:
        data, val = data.split(proto.val_split, seed=seed)
        evals["val"] = val
    tx, ty = data.test_x, data.test_y
    if proto.test_subset is not None and proto.test_subset < len(ty):
        tx, ty = tx[:proto.test_subset], ty[:proto.test_subset]
    evals = {"test": (tx, ty), **evals}
    # Normalisation stats of the whole (subset) train split, so every rank normalises alike.
    common = dict(mean=data.mean, std=data.std, device=device)
    a = proto.augment
    train_x, train_y, batch, loader_seed, idx = data.train_x, data.train_y, proto.batch_size, seed, None
    if shard is not None and shard[1] > 1:
        rank, world = shard
        if proto.batch_size % world:
            raise BenchError(f"batch_size {proto.batch_size} (the global batch) is not divisible by {world} workers")
        idx = shard_indices(len(data.train_y), rank, world, seed)
        if len(idx) == 0:
            raise BenchError(f"{len(data.train_y)} training images cannot be shared by {world} workers")
        train_x, train_y, batch = data.train_x[idx], data.train_y[idx], proto.batch_size // world
        loader_seed = seed * world + rank  # distinct shuffle and augmentation draws per rank
        evals = {k: (x[rank::world], y[rank::world]) for k, (x, y) in evals.items()}
    train = DeviceLoader(train_x, train_y, batch_size=batch, train=True, crop_pad=a.crop_pad, flip=a.flip,
                         drop_last=len(train_y) >= batch, seed=loader_seed, **common)
    eval_loaders = {k: DeviceLoader(x, y, batch_size=max(batch, 500), train=False, **common)
                    for k, (x, y) in evals.items()}
    return data, train, eval_loaders, idx


class OnDevice:
    """A stream of uint8 batches (ImageNet: decoded and augmented by CPU threads, too big to keep in memory),
    moved to the device and normalised there like the in-memory loaders."""

    def __init__(self, stream, mean, std, device: torch.device):
        self.stream, self.device = stream, device
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        for x, y in self.stream:
            x = x.to(self.device, non_blocking=True)
            yield normalize(x, self.mean, self.std), y.to(self.device, non_blocking=True)


def _stream_loaders(data, proto: Protocol, seed: int, device: torch.device, shard: tuple[int, int] | None):
    from bench.data.imagenet import ImageStream

    files, labels = list(data.train_files), list(data.train_labels)
    if proto.train_subset is not None and proto.train_subset < len(files):
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:proto.train_subset]
        files, labels = [files[i] for i in pick], [labels[i] for i in pick]
    tf, tl = list(data.test_files), list(data.test_labels)
    if proto.test_subset is not None:
        tf, tl = tf[:proto.test_subset], tl[:proto.test_subset]
    batch, loader_seed, idx = proto.batch_size, seed, None
    if shard is not None and shard[1] > 1:
        rank, world = shard
        if batch % world:
            raise BenchError(f"batch_size {batch} (the global batch) is not divisible by {world} workers")
        idx = shard_indices(len(files), rank, world, seed)
        files, labels = [files[i] for i in idx], [labels[i] for i in idx]
        batch, loader_seed = batch // world, seed * world + rank
        tf, tl = tf[rank::world], tl[rank::world]
    train = ImageStream(files, labels, batch_size=batch, train=True, size=data.image_size, seed=loader_seed,
                        drop_last=len(files) >= batch)
    test = ImageStream(tf, tl, batch_size=max(batch, 100), train=False, size=data.image_size)
    return (data, OnDevice(train, data.mean, data.std, device),
            {"test": OnDevice(test, data.mean, data.std, device)}, idx)


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


def build_model(name: str, kwargs: dict[str, Any], data: Dataset, proto: Protocol):
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


def run_trial(trial: dict[str, Any], data: Dataset, *, sinks: list[Sink] = (), threads: float | None = None,
              want_gpu: bool = False, workdir: Path | None = None, teacher_state: dict | None = None,
              save_checkpoint: bool = False, device: torch.device | None = None,
              shard: tuple[int, int] | None = None, trainer_kwargs: dict[str, Any] | None = None,
              prepare: Callable[[L.Trainer], L.Trainer] | None = None) -> TrialResult:
    """Train one trial (a Trial.to_dict()) to the end of its protocol and return its final metrics.

    Data-parallel hooks (the caller brings the distributed runtime; nothing here imports it):
    device: this rank's device instead of pick_device(want_gpu). shard=(rank, world): train on this rank's
    disjoint shard at batch_size / world, evaluate a 1/world slice, sum the epoch sums across ranks.
    trainer_kwargs: Trainer arguments over ours (strategy, plugins, ...; "callbacks" are appended to ours).
    prepare: applied to the Trainer before fit (e.g. Ray Train's prepare_trainer)."""
    quiet_lightning()
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    proto = Protocol.model_validate(trial["protocol"])
    seed = int(trial["seed"])
    seed_all(seed)
    dev = device if device is not None else pick_device(want_gpu)
    data, train_loader, eval_loaders, shard_idx = build_loaders(data, proto, seed, dev, shard)
    steps_per_epoch = len(train_loader)
    n_steps = _total_steps(proto, steps_per_epoch)
    model = build_model(trial["model"], trial["model_kwargs"], data, proto)
    names = tuple(eval_loaders)
    if trial.get("method", "supervised") == "fitnet":
        if teacher_state is None:
            raise BenchError(f"trial {trial['cell']}: a FitNet student needs its teacher's checkpoint")
        from bench.models.fitnet import HintRegressor

        teacher = build_model(teacher_state["model"], teacher_state["model_kwargs"], data, proto)
        teacher.load_state_dict(teacher_state["state_dict"])
        d = proto.distill
        hint_steps = int(round((d.hint_epochs if d else 0) * steps_per_epoch))
        module = FitNetStudent(model, proto, steps_per_epoch, names, data.num_classes, teacher,
                               HintRegressor(model.hint_shape, teacher.hint_shape), hint_steps, n_steps)
    else:
        module = Classifier(model, proto, steps_per_epoch, names, data.num_classes)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    # images/s counts the global batch: all ranks step together.
    reporter = EpochReporter(list(sinks), n_steps, proto.batch_size, sync)
    reducer = SumAcrossRanks(len(eval_loaders)) if shard_idx is not None else None
    kw: dict[str, Any] = dict(
        accelerator="gpu" if dev.type == "cuda" else "cpu", devices=[dev.index] if dev.type == "cuda" else 1,
        max_steps=n_steps, max_epochs=-1, precision=proto.precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=proto.eval_every, callbacks=[c for c in (reducer, reporter) if c is not None],
        default_root_dir=str(workdir) if workdir else None,
    )
    extra = dict(trainer_kwargs or {})
    kw["callbacks"] += list(extra.pop("callbacks", []))
    kw.update(extra)
    trainer = L.Trainer(**kw)
    if prepare is not None:
        trainer = prepare(trainer)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=list(eval_loaders.values()))
    wall = time.perf_counter() - t0
    if not reporter.history:
        raise BenchError(f"trial {trial['cell']}: training produced no epoch (steps={n_steps})")
    # The last epoch may have stopped at max_steps before its evaluation: evaluate once more so that the
    # final test error always describes the final weights.
    last = reporter.history[-1]
    if "test_error" not in last:
        trainer.validate(module, dataloaders=list(eval_loaders.values()), verbose=False)
        last.update(module.results)
        module.results = {}
        evals = {k: v for k, v in last.items() if k.startswith(("test_", "val_"))}
        for sink in sinks:
            sink(evals, last["step"])
    final = {k: v for k, v in last.items() if k != "step"}
    tests = [h["test_error"] for h in reporter.history if "test_error" in h]
    final.update(best_test_error=min(tests), wall_time_s=wall, train_time_s=reporter.train_time,
                 params=float(sum(p.numel() for p in model.parameters())),
                 images_per_sec=_mean_ips(reporter.history))
    ckpt = None
    if save_checkpoint:
        ckpt = Path(workdir or ".") / "model.pt"
        torch.save({"model": trial["model"], "model_kwargs": trial["model_kwargs"],
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, ckpt)
    rank = None
    if shard_idx is not None:
        rank = {"rank": shard[0], "world_size": shard[1], "steps": trainer.global_step,
                "shard": shard_idx.tolist(), "train_images": reducer.local_images,
                "train_images_all_ranks": reducer.global_images}
    return TrialResult(final=final, history=reporter.history, checkpoint=ckpt, device=device_name(dev), rank=rank)


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
