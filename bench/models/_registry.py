"""Model registry: one dict of builder functions and one entry point (`create`)."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

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
    fixed: dict[str, object] | None = None,
):
    """Store the decorated builder under its own name; the builder is returned unchanged.

    `fixed`: arguments the name itself pins (the "_a" of preresnet110_a is unit="a"). The builder
    does not take them, and create() refuses another value rather than build a different
    variant under this name.
    """
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
            fixed=dict(fixed or {}),
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
    for key, pinned in _INFO[name]["fixed"].items():
        asked = kwargs.pop(key, pinned)
        if asked != pinned:
            raise ModelConfigError(
                f"model {name!r} is {key}={pinned!r} by its name; {key}={asked!r} would be another "
                f"variant under this name (create that variant by its own registered name)"
            )
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


def model_info(name: str) -> dict:
    """Family, input size and paper numbers a model was registered with."""
    _lookup(name)
    return dict(_INFO[name])
