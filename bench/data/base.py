"""Shared pieces of the data layer: the error type, the in-memory Dataset, and safe download/extract helpers."""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field, replace
from typing import ClassVar
from pathlib import Path

import torch

from bench import BenchError


class DatasetError(BenchError):
    """Bad, missing or unsafe dataset files; the message names the file and the problem on one line."""


class DataRootError(DatasetError):
    """The dataset directory the user named (--root, --data-root) does not exist: bad input, exit 2."""

    exit_code = 2


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a uint8 (N, C, H, W) tensor, in [0, 1] scale.

    A 256-bin histogram per channel gives exact figures without a float copy of the data.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def pad_to_32(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad (N, C, H, W) images symmetrically up to 32x32 so CIFAR-shaped nets run unchanged."""
    h, w = x.shape[-2:]
    if h >= 32 and w >= 32:
        return x
    ph, pw = max(0, 32 - h), max(0, 32 - w)
    return torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@dataclass
class Dataset:
    """A whole dataset in memory as uint8 images (N, C, H, W) and int64 labels."""

    kind: ClassVar[str] = "memory"   # loaders tell datasets apart by kind, never by attributes
    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    classes: list[str] = field(repr=False)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = ""
    verified: bool | None = None  # official checksums matched; None where none could be checked

    def __post_init__(self):
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DatasetError(f"{self.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DatasetError(f"{self.name}: {split} labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DatasetError(f"{self.name}: train and test image shapes differ")
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_x)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.train_x.shape[0]}, test={self.test_x.shape[0]}, "
                f"shape={tuple(self.train_x.shape[1:])}, classes={self.num_classes}, source={self.source!r}, "
                f"verified={self.verified})")

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _with_train(self, x: torch.Tensor, y: torch.Tensor) -> Dataset:
        # Stats are recomputed so held-out images never leak into the normalisation.
        return replace(self, train_x=x, train_y=y, mean=(), std=())

    def split(self, n_val: int, seed: int = 0) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
        """Hold out a seeded random n_val images of the training set: (reduced dataset, (val_x, val_y))."""
        n = self.train_x.shape[0]
        if not 0 < n_val < n:
            raise DatasetError(f"{self.name}: n_val={n_val} must be between 1 and {n - 1}")
        perm = _seeded_perm(n, seed)
        val, keep = perm[:n_val], perm[n_val:].sort().values
        return self._with_train(self.train_x[keep], self.train_y[keep]), (self.train_x[val], self.train_y[val])

    def subset_train(self, n: int, seed: int = 0) -> Dataset:
        """A seeded random n-image training subset (e.g. 40K of CIFAR-10's 50K); the test set is unchanged."""
        total = self.train_x.shape[0]
        if not 0 < n <= total:
            raise DatasetError(f"{self.name}: subset of {n} images asked, training set has {total}")
        keep = _seeded_perm(total, seed)[:n].sort().values
        return self._with_train(self.train_x[keep], self.train_y[keep])

    def loader(self, split: str = "train", **kw):
        """A DeviceLoader over 'train' or 'test' with this dataset's mean/std; train augments by default."""
        from bench.data.loader import DeviceLoader

        if split not in ("train", "test"):
            raise DatasetError(f"{self.name}: split must be 'train' or 'test', not {split!r}")
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        kw.setdefault("train", split == "train")
        return DeviceLoader(x, y, mean=self.mean, std=self.std, **kw)


# ---- files: checksums, downloads, archives ------------------------------------------------------------------------


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, name: str, timeout: float = 60.0) -> Path:
    """Fetch url to dest, renamed into place only once its MD5 matches; nothing is left behind on failure."""
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise DatasetError(f"{name}: {url}: MD5 mismatch (got {h.hexdigest()}, expected {md5})")
        os.replace(tmp, dest)
        return dest
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        raise DatasetError(f"{name}: {url}: download to {dest} failed: {e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def download_first(urls: list[str], dest: Path, md5: str, name: str) -> Path:
    """Try mirrors in order; report every failure if none works."""
    errors = []
    for url in urls:
        try:
            return download(url, dest, md5, name)
        except DatasetError as e:
            errors.append(str(e))
    raise DatasetError(" | ".join(errors) if errors else f"{name}: no URL to fetch {dest.name} from")


def safe_extract(archive: Path, dest: Path, name: str) -> None:
    """Extract a tar archive, refusing absolute paths, '..', links, devices and anything not a file or directory.

    Every member is checked before anything is written, and files are written by us, not by tarfile's extract.
    """
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() or ".." in parts:
                    raise DatasetError(f"{name}: {archive}: unsafe member path {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{name}: {archive}: refusing link/device member {m.name!r}")
            for m in members:
                target = dest.joinpath(*Path(m.name).parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                with open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{name}: {archive}: cannot extract: {e}") from None
