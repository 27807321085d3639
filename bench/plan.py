"""`bench plan`: what a suite will cost before anything runs.

Counts trials and resource requests, then estimates compute from throughput that is either measured here and
now (a few training steps per distinct model: the probe) or recorded (the H100 anchors in
shared/reference/anchors.md, interpolated by FLOPs). Every estimate says which of the two it comes from.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import torch

from bench.spec import load_suite
from bench.trials import make_plan
from bench.train.schedule import total_steps

# Training-set and test-set sizes, for step counts without reading the files.
SPLITS = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "fashion-mnist": (60000, 10000),
          "fashion-mnist-28": (60000, 10000),
          "imagenet": (1281167, 50000), "synthetic": (512, 256)}
IMAGE = {"imagenet": (3, 224), "fashion-mnist": (1, 32), "fashion-mnist-28": (1, 28)}

# Recorded: one H100 80GB, torch 2.11, data on the GPU, tf32 eager, batch 128 (anchors.md, 2026-11-27).
# model -> training images/s
ANCHORS = {"resnet20": 18554.0, "resnet110": 4721.0, "preresnet164_e": 3157.0}
ANCHOR_SOURCE = "recorded H100 anchors (anchors.md: tf32 eager, data on GPU), interpolated by FLOPs"


def _macs(name: str, size: int) -> float:
    """Multiply-adds per image of the family's default net at `size` (conv cost scales with the pixel count)."""
    from bench import models

    d = models.describe(name)
    return d["flops"] * (size / d["input_size"]) ** 2


def _trial_macs(name: str, kwargs: dict, channels: int, size: int, num_classes: int) -> float:
    """Multiply-adds per image of the net a cell really runs: its kwargs (width, a proxy's depth) and the data's
    shape, counted on the meta device (the describe row is the default-size net)."""
    from bench.models.flops import count_flops, create_meta

    m = create_meta(name, num_classes=num_classes, in_channels=channels, image_size=size, **kwargs)
    return float(count_flops(m, size, channels))


def _anchor_fit() -> tuple[float, float]:
    """img/s = a * macs^b through the anchors (log-log least squares): small nets are launch-bound, so b > -1."""
    x = np.log([_macs(m, 32) for m in ANCHORS])
    y = np.log(list(ANCHORS.values()))
    b, a = np.polyfit(x, y, 1)
    return float(np.exp(a)), float(b)


def recorded_rate(macs: float) -> float:
    a, b = _anchor_fit()
    return a * macs ** b


def probe_rate(model_name: str, kwargs: dict, channels: int, size: int, num_classes: int,
               batch: int = 16, steps: int = 2) -> float:
    """Training images/s on this machine: one warm-up step, then `steps` timed steps."""
    from bench import models

    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    m = models.create(model_name, num_classes=num_classes, in_channels=channels, image_size=size, **kwargs).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, channels, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch,), device=dev)
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def _fmt_h(hours: float) -> str:
    return f"{hours * 60:.2g} min" if hours < 1 else f"{hours:,.1f} h"


def plan(suite_ref: str, profile: str = "paper", dataset: str | None = None, seeds: int | None = None,
         probe: bool = True) -> str:
    from bench import models

    suite = load_suite(suite_ref)
    pl = make_plan(suite, profile, dataset, seeds, model_options=lambda m: set(models.model_options(m)))
    trials = pl.trials
    ds = pl.dataset
    n_train, n_test = SPLITS.get(ds, (50000, 10000))
    channels, size = IMAGE.get(ds, (3, 32))
    num_classes = {"cifar100": 100, "imagenet": 1000}.get(ds, 10)
    per_cell: dict[str, dict] = defaultdict(lambda: {"trials": 0, "images": 0.0})
    gpu_req = cpu_req = 0.0
    for t in trials:
        p = t.protocol
        n = min(p.train_subset or n_train, n_train) - p.val_split
        spe = max(1, n // p.batch_size)
        steps = total_steps(p, spe)
        evals = math.ceil(steps / spe / p.eval_every)
        # Evaluation costs about a third of a training step per image (forward only).
        images = steps * p.batch_size + evals * (min(p.test_subset or n_test, n_test) + p.val_split) / 3
        c = per_cell[t.cell]
        c.update(model=t.model, kwargs=t.model_kwargs if t.search is None else {}, steps=steps, epochs=steps / spe)
        c["trials"] += 1
        c["images"] += images
        cpu, gpu = t.resources.total()
        gpu_req += gpu
        cpu_req += cpu

    r0 = trials[0].resources
    lines = [f"suite {suite.name} — {suite.title}",
             f"{pl.summary()} (paper: {suite.paper.dataset})",
             f"requests per trial: {r0.workers} worker(s) x ({r0.cpus:g} CPU, {r0.gpus:g} GPU);"
             f" in total {cpu_req:g} CPU-trials, {gpu_req:g} GPU-trials (GPU-trial = one trial holding one GPU)", ""]
    dev = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"this machine's CPU ({torch.get_num_threads()} threads)"
    head = f"{'cell':<22} {'model':<20} {'trials':>6} {'steps':>8} {'epochs':>7} {'MFLOPs':>8} {'GPU (rec.)':>12}"
    head += f" {'probe img/s':>11} {'h here':>9}" if probe else ""
    lines.append(head)
    tot_gpu = tot_here = 0.0
    extrapolated = False
    probes: dict[tuple, float] = {}
    anchor_macs = [_macs(m, 32) for m in ANCHORS]
    for cid, c in per_cell.items():
        macs = _trial_macs(c["model"], c["kwargs"], channels, size, num_classes)
        extrapolated |= not min(anchor_macs) / 2 <= macs <= max(anchor_macs) * 2
        # GPU-hours count the work of one trial alone on a GPU; sharing a GPU changes wall time, not this.
        exact = c["model"] in ANCHORS and size == 32 and not c["kwargs"]
        rate = ANCHORS[c["model"]] if exact else recorded_rate(macs)
        gpu_h = c["images"] / rate / 3600
        tot_gpu += gpu_h
        row = (f"{cid:<22} {c['model']:<20} {c['trials']:>6} {c['steps']:>8,} {c['epochs']:>7.1f} {macs / 1e6:>8,.0f}"
               f" {_fmt_h(gpu_h):>12}")
        if probe:
            key = (c["model"], repr(sorted(c["kwargs"].items())))
            if key not in probes:
                probes[key] = probe_rate(c["model"], c["kwargs"], channels, size, num_classes, batch=16 if size <= 64 else 4)
            here_h = c["images"] / probes[key] / 3600
            tot_here += here_h
            row += f" {probes[key]:>11,.0f} {_fmt_h(here_h):>9}"
        lines.append(row)
    lines.append("")
    lines.append(f"estimate, GPU: {tot_gpu:,.2f} GPU-hours from {ANCHOR_SOURCE}"
                 + ("; some models lie outside the anchors' FLOP range (extrapolated, low confidence)"
                    if extrapolated else ""))
    if probe:
        lines.append(f"estimate, here: {_fmt_h(tot_here)} of single-trial compute on {dev}, from a probe measured now "
                     f"(a few training steps per model, batch 16, ±30%); divide by the trials that run at once")
    return "\n".join(lines)
