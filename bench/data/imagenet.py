"""ImageNet as class folders (root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG), streamed: too big for memory.

JPEGs are decoded with PIL in a small thread pool (PIL releases the GIL while decoding) and served as uint8
(B, 3, 224, 224) batches; normalisation happens on the device with bench.data.loader.normalize."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.data.base import DatasetError

NAME = "imagenet"
EXTS = {".jpeg", ".jpg", ".png"}
# The customary ImageNet train-set statistics; recomputing them would mean decoding 1.28M JPEGs.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def scan(root: Path, split: str, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of root/split; classes default to the sorted folder names found there."""
    d = Path(root) / split
    if not d.is_dir():
        raise DatasetError(f"{NAME}: missing folder {d}; ImageNet is not downloadable: get it from image-net.org, "
                           f"sort val into class folders and pass --root")
    found = sorted(p.name for p in d.iterdir() if p.is_dir())
    classes = found if classes is None else classes
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in found:
        if c not in index:
            raise DatasetError(f"{NAME}: {d / c}: class folder not present in train")
        for f in sorted((d / c).iterdir()):
            if f.suffix.lower() in EXTS:
                files.append(f)
                labels.append(index[c])
    if not files:
        raise DatasetError(f"{NAME}: {d}: no images found")
    return files, labels, classes


def _random_resized_crop(w: int, h: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(left, top, width, height) of a crop with random area fraction and log-uniform aspect ratio."""
    area = w * h
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    # rare fallback (extreme aspect ratios): the whole image, trimmed to the nearest allowed ratio, centred
    r = min(max(w / h, ratio[0]), ratio[1])
    cw, ch = (w, round(w / r)) if w / h < r else (round(h * r), h)
    cw, ch = min(cw, w), min(ch, h)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def decode(path: Path, train: bool, rng: np.random.Generator, size: int = 224, resize: int = 256) -> np.ndarray:
    """One image -> (size, size, 3) uint8: random-resized-crop + flip for train, resize + centre crop for test."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{NAME}: {path}: cannot decode image ({e})") from None
    w, h = im.size
    if train:
        x, y, cw, ch = _random_resized_crop(w, h, rng)
        im = im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        s = resize / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.BILINEAR)
        x, y = (nw - size) // 2, (nh - size) // 2
        im = im.crop((x, y, x + size, y + size))
    return np.asarray(im)


class ImageStream:
    """Iterable of (x uint8 (B, 3, size, size), y int64 (B,)) over image files, decoded in a thread pool.

    Shuffle order and each image's augmentation draw depend only on (seed, epoch, image index), so results do not
    depend on thread scheduling; set_epoch(e) resumes at epoch e."""

    def __init__(self, files: list[Path], labels: list[int], *, batch_size: int, train: bool = False,
                 size: int = 224, resize: int = 256, seed: int = 0, workers: int = 4,
                 shuffle: bool | None = None, drop_last: bool = False):
        self.files, self.labels = list(files), torch.tensor(labels, dtype=torch.int64)
        self.batch_size, self.train, self.size, self.resize = batch_size, train, size, resize
        self.seed, self.epoch, self.workers, self.drop_last = seed, 0, workers, drop_last
        self.shuffle = train if shuffle is None else shuffle

    def __len__(self) -> int:
        n = len(self.files)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _one(self, i: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, i])
        return decode(self.files[i], self.train, rng, self.size, self.resize)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        n, bs = len(self.files), self.batch_size
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % bs if self.drop_last else n
        batches = [order[i:min(i + bs, n)] for i in range(0, stop, bs)]
        pool = ThreadPoolExecutor(self.workers)
        try:
            submit = lambda b: [pool.submit(self._one, int(i), epoch) for i in b]  # noqa: E731
            pending = [submit(b) for b in batches[:2]]  # decode one batch ahead of the consumer
            for k, idx in enumerate(batches):
                futures = pending.pop(0)
                if k + 2 < len(batches):
                    pending.append(submit(batches[k + 2]))
                x = torch.from_numpy(np.stack([f.result() for f in futures])).permute(0, 3, 1, 2).contiguous()
                yield x, self.labels[torch.from_numpy(idx)]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an abandoned epoch drops its queued decodes


class ImageNet:
    """What load('imagenet') returns: Dataset-like metadata plus streaming loaders for 'train' and 'test' (val)."""

    in_channels = 3
    kind = "stream"   # too big for memory: decoded batch by batch on CPU threads

    def __init__(self, root: Path, size: int = 224):
        self.name, self.source, self.image_size = NAME, str(root), size
        self.train_files, self.train_labels, self.classes = scan(root, "train")
        self.test_files, self.test_labels, _ = scan(root, "val", self.classes)
        self.mean, self.std, self.verified = MEAN, STD, None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loader(self, split: str = "train", **kw) -> ImageStream:
        if split not in ("train", "test"):
            raise DatasetError(f"{NAME}: split must be 'train' or 'test', not {split!r}")
        files, labels = (self.train_files, self.train_labels) if split == "train" else (self.test_files, self.test_labels)
        kw.setdefault("train", split == "train")
        return ImageStream(files, labels, size=self.image_size, **kw)

    def __repr__(self) -> str:
        return f"ImageNet(train={len(self.train_files)}, test={len(self.test_files)}, classes={self.num_classes}, source={self.source!r})"


def load(root: Path, size: int = 224) -> ImageNet:
    return ImageNet(Path(root), size)


def info(root: Path) -> dict:
    ds = ImageNet(Path(root))
    return {
        "name": NAME,
        "source": ds.source,
        "splits": {"train": len(ds.train_files), "test": len(ds.test_files)},
        "shape_stored": "variable (JPEG)",
        "shape_served": [3, ds.image_size, ds.image_size],
        "num_classes": ds.num_classes,
        "classes": ds.classes,
        "mean": list(MEAN),
        "std": list(STD),
        "checksums": {},
        "verified": None,
    }


def fetch(root: Path, url: str | None = None) -> Path:
    raise DatasetError(f"{NAME}: cannot be downloaded automatically (license); get ILSVRC2012 from image-net.org, "
                       f"arrange root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG, and pass --root")
