"""Parameter and multiply-add counts, and the cached `describe` rows built from them.

Nothing here changes global state or the caller's model once a call returns: `nn.init` is
patched only while a describe builds its own throwaway instance, and `count_flops` restores
every module's train/eval flag.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

from ._registry import create, list_models, model_info

_aten = torch.ops.aten
_BATCH_NORMS = {_aten.native_batch_norm.default, _aten._native_batch_norm_legit_no_training.default}
_SAME_SHAPE = {_aten.relu.default, _aten.sigmoid.default, _aten.tanh.default}
_BROADCAST = {_aten.add.Tensor, _aten.sub.Tensor, _aten.mul.Tensor}
_INITS = (
    "uniform_", "normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_", "kaiming_normal_",
    "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_",
)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _MetaShortcuts(TorchDispatchMode):
    """Answer meta ops that FlopCounterMode does not count without running their meta kernels.

    On the meta device BatchNorm and pointwise ops (ReLU, add) run Python decompositions costing
    0.3-1 ms each: seconds for a 1000-layer net. Their output shape is that of the input (or the
    broadcast), so answer it directly; in-place ops return their target. Entered inside
    FlopCounterMode, so counted ops (convolution, mm, addmm) still reach the counter. Only meta
    tensors are touched.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if tensors and all(t.is_meta for t in tensors):
            x = tensors[0]
            if func._schema.is_mutable and args[0] is x and len(func._schema.returns) == 1:
                return x
            if func in _BATCH_NORMS:
                with _disable_current_modes():
                    return x.new_empty(x.shape), x.new_empty((0,)), x.new_empty((0,))
            if func in _SAME_SHAPE or (func in _BROADCAST and all(t.dtype == x.dtype for t in tensors)):
                with _disable_current_modes():
                    return x.new_empty(torch.broadcast_shapes(*(t.shape for t in tensors)))
        return func(*args, **kwargs)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: only the total is needed, and the
    tracker's module hooks cost more than the counting itself on 1000-layer nets."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-adds for one image, measured with FlopCounterMode (which counts 2 FLOPs per MAC).

    Runs in eval mode (so BN running stats are not updated) and puts each module's flag back.
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    try:
        with torch.no_grad(), counter:
            with _MetaShortcuts() if device.type == "meta" else contextlib.nullcontext():
                model(x)
    finally:
        for m, training in modes:
            m.training = training
    return counter.get_total_flops() // 2


# While a describe builds its throwaway instance, nn.init's functions are wrapped to check a
# thread-local flag (another thread building a real model keeps its init); the first entry
# wraps them and the last exit puts the originals back.
_no_init = threading.local()
_init_lock = threading.Lock()
_init_users = 0
_init_saved: dict[str, object] = {}


def _skippable(fn):
    @functools.wraps(fn)
    def init(tensor, *args, **kwargs):
        return tensor if getattr(_no_init, "on", False) else fn(tensor, *args, **kwargs)

    return init


@contextlib.contextmanager
def _skip_init():
    """Skip weight init in this thread while building a net that is only counted."""
    global _init_users
    with _init_lock:
        if _init_users == 0:
            for n in _INITS:
                _init_saved[n] = getattr(nn.init, n)
                setattr(nn.init, n, _skippable(_init_saved[n]))
        _init_users += 1
    was_on = getattr(_no_init, "on", False)
    _no_init.on = True
    try:
        yield
    finally:
        _no_init.on = was_on
        with _init_lock:
            _init_users -= 1
            if _init_users == 0:
                for n, fn in _init_saved.items():
                    setattr(nn.init, n, fn)
                _init_saved.clear()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def describe(name: str) -> dict:
    """Params and multiply-adds at the family's input size, with the paper's numbers beside them."""
    return dict(_describe(name))


@functools.lru_cache(maxsize=None)
def _describe(name: str) -> dict:
    """Counted on the meta device: no arithmetic runs, so even ResNet-1202 or ResNeXt-101
    64x4d takes well under a second.
    """
    info = model_info(name)
    size = info["input_size"]
    num_classes = 1000 if size == 224 else 10
    with _skip_init():
        # built on CPU with uninitialised storage that is never touched, then moved: cheaper
        # than building under torch.device("meta"), whose per-call hook dominates deep nets
        model = create(name, num_classes=num_classes, in_channels=3).to("meta")
    # our own instance, so BN can be skipped outright: no multiply-adds, same shape, a third fewer ops
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _identity
    return dict(
        name=name,
        family=info["family"],
        input_size=size,
        params=count_params(model),
        flops=count_flops(model, size),
        paper_params=info["paper_params"],
        paper_flops=info["paper_flops"],
        paper_ref=info["paper_ref"],
    )


def create_meta(name: str, **kwargs) -> nn.Module:
    """The net's structure on the meta device, initialisation skipped: for checks and counting, never values.
    (An init on meta is not free: nn.init.normal_ there runs a decomposition that imports torch._dynamo, about
    3 s of every driver's start-up here.)"""
    with _skip_init(), torch.device("meta"):
        return create(name, **kwargs)


def describe_all(family: str | None = None) -> list[dict]:
    return [describe(n) for n in list_models(family)]
