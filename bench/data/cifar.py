"""CIFAR-10 and CIFAR-100, "python version": Python 2 pickles of dicts, read with an allow-list unpickler."""

from __future__ import annotations

import io
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.data.base import Dataset, DatasetError, download_first, md5_file, safe_extract


def _numpy_globals() -> dict[tuple[str, str], object]:
    # The array pickles name numpy.core.multiarray (numpy 1, as in the official files) or numpy._core (numpy 2);
    # both resolve to the same function here, looked up directly so no module is imported by name.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _SafeUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs; dicts, lists, bytes and ints need no globals at all."""

    allowed = _numpy_globals()

    def __init__(self, f, path: Path, name: str):
        super().__init__(f, encoding="bytes")  # the files were written by Python 2: str -> bytes
        self.path, self.name = path, name

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.name}: {self.path}: refusing to unpickle {module}.{name} (not a CIFAR type)"
            ) from None

    def persistent_load(self, pid):
        raise DatasetError(f"{self.name}: {self.path}: refusing persistent id in pickle (not a CIFAR type)")


def unpickle(path: Path, name: str) -> dict:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{name}: missing file {path}; run 'bench data fetch {name}'") from None
    except OSError as e:
        raise DatasetError(f"{name}: {path}: cannot read ({e})") from None
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), path, name).load()
    except DatasetError:
        raise
    except Exception as e:  # pickle raises many types on garbage input
        raise DatasetError(f"{name}: {path}: not a valid pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{name}: {path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict, key: bytes, path: Path, name: str):
    if key not in d:
        raise DatasetError(f"{name}: {path}: missing key {key!r}")
    return d[key]


def _names(meta: dict, key: bytes, n: int, path: Path, name: str) -> list[str]:
    names = _get(meta, key, path, name)
    if not isinstance(names, list) or len(names) != n:
        raise DatasetError(f"{name}: {path}: {key!r} should list {n} class names")
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in names]


def _batch(path: Path, label_key: bytes, num_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (N, 3, 32, 32) uint8, labels (N,) int64, validated."""
    d = unpickle(path, name)
    data, labels = _get(d, b"data", path, name), _get(d, label_key, path, name)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{name}: {path}: b'data' must be a uint8 N x 3072 array, got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{name}: {path}: {label_key!r} is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{name}: {path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{name}: {path}: label out of range 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are R, G, B planes of 32x32, row-major


# ---- the two datasets -----------------------------------------------------------------------------------------

# name -> folder in the tarball, train files, test file, meta file, tarball, its MD5
SPECS = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test="test_batch",
        meta="batches.meta",
        tarball="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test="test",
        meta="meta",
        tarball="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
_LABELS = {  # label choice -> (key in batches, key in meta, number of classes)
    "cifar10": {"label": (b"labels", b"label_names", 10)},
    "cifar100": {"fine": (b"fine_labels", b"fine_label_names", 100), "coarse": (b"coarse_labels", b"coarse_label_names", 20)},
}


def find_dir(name: str, root: Path) -> Path:
    """root may be the extracted folder itself or the folder that holds it."""
    spec = SPECS[name]
    for d in (root / spec["folder"], root):
        if (d / spec["meta"]).is_file():
            return d
    raise DatasetError(
        f"{name}: missing file {root / spec['folder'] / spec['meta']}; run 'bench data fetch {name} --root {root}'"
    )


def tarball_status(name: str, folder: Path) -> str:
    """'ok' / 'mismatch' for the tarball kept beside the extracted folder, 'absent' if it is gone."""
    p = folder.parent / SPECS[name]["tarball"]
    if not p.is_file():
        return "absent"
    return "ok" if md5_file(p) == SPECS[name]["md5"] else "mismatch"


def load(name: str, root: Path, label: str = "fine") -> Dataset:
    """CIFAR-10 (label is ignored) or CIFAR-100 with label='fine' (100 classes) or 'coarse' (20)."""
    root = Path(root)
    spec = SPECS[name]
    choices = _LABELS[name]
    key = "label" if name == "cifar10" else label
    if key not in choices:
        raise DatasetError(f"{name}: label must be one of {sorted(choices)}, not {label!r}")
    label_key, names_key, n_classes = choices[key]
    d = find_dir(name, root)
    classes = _names(unpickle(d / spec["meta"], name), names_key, n_classes, d / spec["meta"], name)
    train = [_batch(d / f, label_key, n_classes, name) for f in spec["train"]]
    test_x, test_y = _batch(d / spec["test"], label_key, n_classes, name)
    status = tarball_status(name, d)
    return Dataset(
        name,
        torch.from_numpy(np.concatenate([x for x, _ in train])),
        torch.from_numpy(np.concatenate([y for _, y in train])),
        torch.from_numpy(test_x.copy()),
        torch.from_numpy(test_y),
        classes=classes,
        source=str(d),
        verified=None if status == "absent" else status == "ok",
    )


def info(name: str, root: Path, label: str = "fine") -> dict:
    ds = load(name, root, label=label)
    return {
        "name": name,
        "source": ds.source,
        "splits": {"train": ds.train_x.shape[0], "test": ds.test_x.shape[0]},
        "shape_stored": [3, 32, 32],
        "shape_served": list(ds.train_x.shape[1:]),
        "num_classes": ds.num_classes,
        "classes": ds.classes,
        "mean": list(ds.mean),
        "std": list(ds.std),
        "checksums": {SPECS[name]["tarball"]: {None: "absent", True: "ok", False: "mismatch"}[ds.verified]},
        "verified": ds.verified,
    }


def fetch(name: str, root: Path, url: str | list[str] | None = None) -> Path:
    """Download the official tarball (MD5-checked) into root and extract it; a loadable folder is kept as is."""
    root = Path(root)
    spec = SPECS[name]
    try:
        load(name, root)
        return root
    except DatasetError:
        pass
    archive = root / spec["tarball"]
    if not (archive.is_file() and md5_file(archive) == spec["md5"]):
        download_first([url] if isinstance(url, str) else list(url or [URLS[name]]), archive, spec["md5"], name)
    # Extract beside the target and move the folder in whole, so a failure leaves no half-extracted folder.
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        safe_extract(archive, tmp, name)
        if not (tmp / spec["folder"] / spec["meta"]).is_file():
            raise DatasetError(f"{name}: {archive}: no {spec['folder']}/{spec['meta']} inside")
        target = root / spec["folder"]
        if target.exists():
            shutil.rmtree(target)
        (tmp / spec["folder"]).rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load(name, root)
    return root
