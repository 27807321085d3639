"""IDX files (the MNIST format) and the Fashion-MNIST dataset stored in them."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

from bench.data.base import Dataset, DatasetError, download_first, pad_to_32

LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims


def read_bytes(path: Path, name: str = "idx") -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic (whatever its extension)."""
    try:
        raw = Path(path).read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise DatasetError(f"{name}: {path}: missing file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{name}: {path}: corrupt gzip data ({e})") from None


def parse_idx(raw: bytes, magic: int, path: Path, name: str = "idx") -> np.ndarray:
    """A ubyte IDX payload as an array; the magic must equal `magic` and the size must match the dims exactly."""
    if len(raw) < 4:
        raise DatasetError(f"{name}: {path}: too short for an IDX header ({len(raw)} bytes)")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DatasetError(f"{name}: {path}: bad magic 0x{got:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: {path}: truncated header ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "oversized"
        raise DatasetError(f"{name}: {path}: {what}: {len(raw)} bytes, expected {expected} for dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, magic: int, name: str = "idx") -> np.ndarray:
    return parse_idx(read_bytes(path, name), magic, path, name)


# ---- Fashion-MNIST ----------------------------------------------------------------------------------------------

NAME = "fashion-mnist"
NAME_28 = "fashion-mnist-28"  # the same files, served unpadded
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# file -> (MD5 of the official .gz from the dataset README, MD5 of its decompressed content).
# Loading checks the content MD5, so re-compressed copies verify too: Debian's dataset-fashion-mnist strips the
# gzip header's name and time, which changes the .gz MD5. Its deflate payload is byte-identical to the official
# files (restoring the original header reproduces the README MD5s); the content MD5s below were taken from it.
FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}

# Base URLs tried in order: the README's S3 bucket, then the repository's data/fashion folder. Tests override.
URLS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]


def _find(root: Path, gz_name: str) -> Path:
    """The .gz file, or its decompressed twin if only that exists."""
    for p in (root / gz_name, root / gz_name[:-3]):
        if p.is_file():
            return p
    raise DatasetError(f"{NAME}: missing file {root / gz_name}; run 'bench data fetch {NAME} --root {root}'")


def _read(root: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """({'train'|'test': (images (N, 28, 28), labels (N,))}, {file: 'ok'|'mismatch'}), checked for consistency."""
    data, sums = {}, {}
    for split, kind in (("train", "train"), ("test", "t10k")):
        arrays = []
        for what, magic in (("images-idx3", IMAGES_MAGIC), ("labels-idx1", LABELS_MAGIC)):
            gz_name = f"{kind}-{what}-ubyte.gz"
            path = _find(root, gz_name)
            raw = read_bytes(path, NAME)
            arrays.append((path, parse_idx(raw, magic, path, NAME)))
            sums[gz_name] = "ok" if hashlib.md5(raw).hexdigest() == FILES[gz_name][1] else "mismatch"
        (ip, x), (lp, y) = arrays
        if x.shape[0] != y.shape[0]:
            raise DatasetError(f"{NAME}: {ip}: {x.shape[0]} images but {lp} has {y.shape[0]} labels")
        if y.size and y.max() >= len(CLASSES):
            raise DatasetError(f"{NAME}: {lp}: label {int(y.max())} out of range for {len(CLASSES)} classes")
        data[split] = (x, y)
    return data, sums


def _dataset(root: Path, data: dict, sums: dict, pad: bool = True) -> Dataset:
    def to_torch(x, y):  # (N, 28, 28) -> (N, 1, 32, 32), or (N, 1, 28, 28) unpadded
        x = torch.from_numpy(x.copy()).unsqueeze(1)
        return (pad_to_32(x) if pad else x), torch.from_numpy(y.astype(np.int64))

    return Dataset(NAME if pad else NAME_28, *to_torch(*data["train"]), *to_torch(*data["test"]),
                   classes=list(CLASSES), source=str(root), verified=all(v == "ok" for v in sums.values()))


def load(root: Path, pad: bool = True) -> Dataset:
    """Fashion-MNIST served as (N, 1, 32, 32): the 28x28 images zero-padded by 2 on each side (CIFAR's shape).
    pad=False serves the native 28x28 (NAME_28): the same pixels, 23% fewer positions for a conv net to visit."""
    root = Path(root)
    return _dataset(root, *_read(root), pad=pad)


def info(root: Path, pad: bool = True) -> dict:
    root = Path(root)
    data, sums = _read(root)
    ds = _dataset(root, data, sums, pad=pad)
    return {
        "name": ds.name,
        "source": str(root),
        "splits": {"train": ds.train_x.shape[0], "test": ds.test_x.shape[0]},
        "shape_stored": [1, *data["train"][0].shape[1:]],
        "shape_served": list(ds.train_x.shape[1:]),
        "num_classes": ds.num_classes,
        "classes": ds.classes,
        "mean": list(ds.mean),
        "std": list(ds.std),
        "checksums": sums,
        "verified": ds.verified,
    }


def _content_ok(path: Path, gz_name: str) -> bool:
    try:
        return hashlib.md5(read_bytes(path, NAME)).hexdigest() == FILES[gz_name][1]
    except DatasetError:
        return False


def fetch(root: Path, url: str | list[str] | None = None) -> Path:
    """Download whichever of the four files is missing or fails its MD5; verified files already there are kept."""
    root = Path(root)
    bases = [url] if isinstance(url, str) else list(url or URLS)
    for gz_name, (gz_md5, _) in FILES.items():
        present = [p for p in (root / gz_name, root / gz_name[:-3]) if p.is_file()]
        if present and _content_ok(present[0], gz_name):
            continue
        download_first([b.rstrip("/") + "/" + gz_name for b in bases], root / gz_name, gz_md5, NAME)
    return root
