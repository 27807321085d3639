"""Learning-rate schedules, in iterations as the ResNet papers state them (32k/48k/64k, 400-it warm-up)."""

from __future__ import annotations

import math

from bench.spec import Protocol


def total_steps(proto: Protocol, steps_per_epoch: int) -> int:
    if proto.iterations is not None:
        return proto.iterations
    return max(1, math.ceil(proto.epochs * steps_per_epoch))


def milestone_steps(proto: Protocol, steps_per_epoch: int) -> list[int]:
    s = proto.schedule
    n = total_steps(proto, steps_per_epoch)
    scale = {"iterations": 1, "epochs": steps_per_epoch, "fraction": n}[s.unit]
    return [int(round(m * scale)) for m in s.milestones]


def lr_at(step: int, proto: Protocol, steps_per_epoch: int) -> float:
    """The lr used for optimizer step number `step` (0-based)."""
    s, base = proto.schedule, proto.optimizer.lr
    if s.warmup is not None and step < s.warmup.iterations:
        return s.warmup.lr
    if s.kind == "constant":
        return base
    if s.kind == "exponential":
        return base * s.gamma ** (step // steps_per_epoch)
    if s.kind == "cosine":
        n = total_steps(proto, steps_per_epoch)
        return 0.5 * base * (1 + math.cos(math.pi * min(step, n) / n))
    passed = sum(step >= m for m in milestone_steps(proto, steps_per_epoch))
    return base * s.gamma ** passed
