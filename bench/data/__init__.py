"""bench.data: datasets read from their official file formats, and the on-device loader.

    ds = load("cifar10")                      # Dataset: uint8 (N, C, H, W) tensors, labels, classes, mean/std
    train = ds.loader("train", batch_size=128, device="cuda")   # crop + flip on the device
    for x, y in train: ...                    # x normalised float (B, C, H, W), y int64 (B,)

Every problem a user can cause raises DatasetError with a one-line message naming the file."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.data import cifar, idx, imagenet, synthetic
from bench.data.base import DataRootError, Dataset, DatasetError, channel_stats
from bench.data.imagenet import ImageNet, ImageStream
from bench.data.loader import DeviceLoader, normalize

__all__ = ["DATASETS", "DataRootError", "Dataset", "DatasetError", "DeviceLoader", "ImageNet", "ImageStream", "channel_stats",
           "default_root", "fetch", "info", "load", "normalize"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to read, describe and fetch one dataset. load/info take (root, **options); fetch takes (root, url)."""

    name: str
    load: Callable
    info: Callable
    fetch: Callable | None  # None: nothing to fetch
    uses_root: bool = True


def _no_root(fn):
    return lambda root, **kw: fn(**kw)


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec("fashion-mnist", idx.load, idx.info, idx.fetch),
    "fashion-mnist-28": DatasetSpec("fashion-mnist-28", lambda root: idx.load(root, pad=False),
                                    lambda root: idx.info(root, pad=False), idx.fetch),
    "cifar10": DatasetSpec("cifar10", lambda root: cifar.load("cifar10", root),
                           lambda root: cifar.info("cifar10", root), lambda root, url=None: cifar.fetch("cifar10", root, url)),
    "cifar100": DatasetSpec("cifar100", lambda root, label="fine": cifar.load("cifar100", root, label),
                            lambda root, label="fine": cifar.info("cifar100", root, label),
                            lambda root, url=None: cifar.fetch("cifar100", root, url)),
    "synthetic": DatasetSpec("synthetic", _no_root(synthetic.load), _no_root(synthetic.info), None, uses_root=False),
    "imagenet": DatasetSpec("imagenet", imagenet.load, imagenet.info, imagenet.fetch),
}

# Keyword options each dataset accepts (checked up front so a typo is a DatasetError, not a TypeError).
_OPTIONS = {
    "fashion-mnist": set(),
    "fashion-mnist-28": set(),
    "cifar10": set(),
    "cifar100": {"label"},
    "synthetic": set(inspect.signature(synthetic.load).parameters),
    "imagenet": {"size"},
}

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_root(name: str) -> Path:
    """$BENCH_DATA_DIR/<name> if set; Debian's system copy for fashion-mnist if installed; else ~/.cache/bench/<name>."""
    _spec(name)
    if name == "fashion-mnist-28":
        name = "fashion-mnist"  # one copy of the files serves both
    if os.environ.get("BENCH_DATA_DIR"):
        return Path(os.environ["BENCH_DATA_DIR"]) / name
    if name == "fashion-mnist" and SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    return Path.home() / ".cache" / "bench" / name


def _options(name: str, kw: dict) -> dict:
    kw = {k: v for k, v in kw.items() if v is not None}  # None means "the dataset's default"
    unknown = set(kw) - _OPTIONS[name]
    if unknown:
        raise DatasetError(f"{name}: unknown option(s) {', '.join(sorted(unknown))}; "
                           f"accepted: {', '.join(sorted(_OPTIONS[name])) or 'none'}")
    return kw


def _root(name: str, root) -> Path | None:
    return Path(root).expanduser() if root is not None else default_root(name)


def _read(spec: DatasetSpec, fn: Callable, root, kw: dict):
    """fn(root, **options); a given root that does not exist is the caller's bad input (DataRootError, exit 2)."""
    options = _options(spec.name, kw)
    path = _root(spec.name, root)
    try:
        return fn(path, **options)
    except DatasetError as e:
        if root is not None and spec.uses_root and not path.exists():
            raise DataRootError(f"{e} ({path} does not exist)") from None
        raise


def load(name: str, root: str | Path | None = None, **kw) -> Dataset | ImageNet:
    """The named dataset, read from root (default: default_root(name)). ImageNet returns a streaming ImageNet."""
    spec = _spec(name)
    return _read(spec, spec.load, root, kw)


def info(name: str, root: str | Path | None = None, **kw) -> dict:
    """Facts read from the files: name, source, splits {train, test}, shape_stored, shape_served, num_classes,
    classes, mean, std, checksums {file: ok|mismatch|missing|absent}, verified (True/False, None if unknown)."""
    spec = _spec(name)
    return _read(spec, spec.info, root, kw)


def fetch(name: str, root: str | Path | None = None, url: str | list[str] | None = None) -> Path:
    """Make the dataset available under root (MD5-verified downloads, safe extraction) and return root."""
    spec = _spec(name)
    root = _root(name, root)
    if spec.fetch is None:
        return root
    return spec.fetch(root) if url is None else spec.fetch(root, url=url)
