"""Model registry: one dict of builder functions, one entry point (`create`), cached descriptions."""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import threading
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

from bench import BenchError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, dict] = {}


class UnknownModelError(BenchError):
    """No model is registered under that name."""


class ModelConfigError(BenchError, ValueError):
    """A model was asked for with kwargs it does not take, or with invalid values."""


def register_model(
    family: str,
    input_size: int = 32,
    paper_params: float | None = None,
    paper_flops: float | None = None,
    paper_ref: str | None = None,
):
    """Store the decorated builder under its own name; the builder is returned unchanged."""
    if input_size not in (32, 224):
        raise ValueError(f"input_size must be 32 or 224, got {input_size}")

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _INFO[name] = dict(
            family=family,
            input_size=input_size,
            paper_params=None if paper_params is None else int(round(paper_params)),
            paper_flops=None if paper_flops is None else int(round(paper_flops)),
            paper_ref=paper_ref,
        )
        return fn

    return wrap


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n in _MODELS if family is None or _INFO[n]["family"] == family)


def families() -> list[str]:
    return sorted({i["family"] for i in _INFO.values()})


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name in _MODELS:
        return _MODELS[name]
    close = difflib.get_close_matches(name, list(_MODELS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (bench models lists all)")


def model_options(name: str) -> dict[str, object]:
    """The kwargs a model takes beyond num_classes/in_channels, with their defaults."""
    sig = inspect.signature(_lookup(name))
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if k not in ("num_classes", "in_channels")
    }


def create(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model. None-valued kwargs mean "model default" and are dropped.

    `image_size` is accepted for every model but only passed to builders that take it (the
    fully-connected nets, which flatten the image); conv nets are size-agnostic.
    """
    fn = _lookup(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    options = model_options(name)
    if "image_size" not in options:
        kwargs.pop("image_size", None)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        allowed = ", ".join(sorted(options)) or "none"
        raise ModelConfigError(
            f"model {name!r} does not take {', '.join(unknown)} (it takes: {allowed})"
        )
    if int(num_classes) < 1 or int(in_channels) < 1:
        raise ModelConfigError(
            f"model {name!r}: num_classes and in_channels must be >= 1, "
            f"got {num_classes} and {in_channels}"
        )
    return fn(num_classes=int(num_classes), in_channels=int(in_channels), **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_aten = torch.ops.aten
_BATCH_NORMS = {_aten.native_batch_norm.default, _aten._native_batch_norm_legit_no_training.default}
_SAME_SHAPE = {_aten.relu.default, _aten.sigmoid.default, _aten.tanh.default}
_BROADCAST = {_aten.add.Tensor, _aten.sub.Tensor, _aten.mul.Tensor}


class _MetaShortcuts(TorchDispatchMode):
    """Answer meta ops that FlopCounterMode does not count without running their meta kernels.

    On the meta device BatchNorm and pointwise ops (ReLU, add) run Python decompositions costing
    0.3-1 ms each: seconds for a 1000-layer net. Their output shape is that of the input (or the
    broadcast), so answer it directly; in-place ops (the init's normal_/fill_ while building)
    return their target. Entered inside FlopCounterMode, so counted ops (convolution, mm, addmm)
    still reach the counter. Only meta tensors are touched, and nothing global is patched.
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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: only the total is needed, and the
    tracker's module hooks cost more than the counting itself on 1000-layer nets."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


_INITS = (
    "uniform_", "normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_", "kaiming_normal_",
    "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_",
)
_no_init = threading.local()


def _skippable(fn):
    @functools.wraps(fn)
    def init(tensor, *args, **kwargs):
        return tensor if getattr(_no_init, "on", False) else fn(tensor, *args, **kwargs)

    init._bench_skippable = True
    return init


@contextlib.contextmanager
def _skip_init():
    """Skip weight init while building a net that is only counted (init dominates building).

    nn.init's functions are wrapped to check a thread-local flag, so a model being built in
    another thread at the same time still gets its init.
    """
    for n in _INITS:
        fn = getattr(nn.init, n)
        if not getattr(fn, "_bench_skippable", False):
            setattr(nn.init, n, _skippable(fn))
    _no_init.on = True
    try:
        yield
    finally:
        _no_init.on = False


def count_flops(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-adds for one image, measured with FlopCounterMode (which counts 2 FLOPs per MAC)."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    try:
        with torch.no_grad(), counter:
            if device.type == "meta":
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.forward = _identity  # no multiply-adds, same shape: a third fewer ops
                with _MetaShortcuts():
                    model(x)
            else:
                model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def describe(name: str) -> dict:
    """Params and multiply-adds at the family's input size, with the paper's numbers beside them."""
    return dict(_describe(name))


@functools.lru_cache(maxsize=None)
def _describe(name: str) -> dict:
    """Counted on the meta device: no arithmetic runs, so even ResNet-1202 or ResNeXt-101
    64x4d takes well under a second.
    """
    _lookup(name)
    info = _INFO[name]
    size = info["input_size"]
    num_classes = 1000 if size == 224 else 10
    with _skip_init():
        # built on CPU with uninitialised storage that is never touched, then moved: cheaper
        # than building under torch.device("meta"), whose per-call hook dominates deep nets
        model = create(name, num_classes=num_classes, in_channels=3).to("meta")
    flops = count_flops(model, size)
    return dict(
        name=name,
        family=info["family"],
        input_size=size,
        params=count_params(model),
        flops=flops,
        paper_params=info["paper_params"],
        paper_flops=info["paper_flops"],
        paper_ref=info["paper_ref"],
    )


def describe_all(family: str | None = None) -> list[dict]:
    return [dict(describe(n)) for n in list_models(family)]
