"""Writers for dataset fixtures in the exact official file formats (tiny sizes), for tests anywhere in bench.

CIFAR files are written as Python 2 cPickle (protocol 2) wrote them: str as BINSTRING, numpy arrays through
numpy.core.multiarray._reconstruct. Python 3's pickle cannot produce that (it routes bytes through
_codecs.encode), so the opcodes are emitted here directly."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = [f"fine_{i}" for i in range(100)]
CIFAR100_COARSE = [f"coarse_{i}" for i in range(20)]


# ---- Python 2 style pickles ---------------------------------------------------------------------------------------


class _Py2Pickler:
    """Protocol-2 opcodes for dict, list, int, str/bytes (as Python 2 str), None and 2-D uint8 numpy arrays."""

    def __init__(self):
        self.out = io.BytesIO()
        self.memo = 0

    def w(self, b: bytes):
        self.out.write(b)

    def put(self):  # cPickle memoises most objects; harmless for readers, kept for fidelity
        self.memo += 1
        self.w(b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo))

    def int_(self, v: int):
        if 0 <= v < 256:
            self.w(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.w(b"M" + struct.pack("<H", v))
        else:
            self.w(b"J" + struct.pack("<i", v))

    def str_(self, s: bytes | str):
        s = s.encode() if isinstance(s, str) else s
        self.w((b"U" + bytes([len(s)])) if len(s) < 256 else (b"T" + struct.pack("<I", len(s))))
        self.w(s)
        self.put()

    def glob(self, module: str, name: str):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
        self.put()

    def array(self, a: np.ndarray):
        assert a.dtype == np.uint8 and a.ndim == 2
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.w(b"K\x00\x85")
        self.put()
        self.str_(b"b")
        self.w(b"\x87")
        self.put()
        self.w(b"R")
        self.put()
        self.w(b"(K\x01")  # state: (version, shape, dtype, fortran, raw bytes)
        self.int_(a.shape[0])
        self.int_(a.shape[1])
        self.w(b"\x86")
        self.put()
        self.glob("numpy", "dtype")
        self.str_(b"u1")
        self.w(b"K\x00K\x01\x87")
        self.put()
        self.w(b"R")
        self.put()
        self.w(b"(K\x03")
        self.str_(b"|")
        self.w(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t")
        self.put()
        self.w(b"b\x89")
        self.str_(np.ascontiguousarray(a).tobytes())
        self.w(b"t")
        self.put()
        self.w(b"b")

    def obj(self, o):
        if o is None:
            self.w(b"N")
        elif isinstance(o, bool):
            self.w(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            self.int_(o)
        elif isinstance(o, (str, bytes)):
            self.str_(o)
        elif isinstance(o, np.ndarray):
            self.array(o)
        elif isinstance(o, list):
            self.w(b"]")
            self.put()
            for i in range(0, len(o), 1000):  # cPickle batches appends by 1000
                self.w(b"(")
                for v in o[i : i + 1000]:
                    self.obj(v)
                self.w(b"e")
        elif isinstance(o, dict):
            self.w(b"}")
            self.put()
            if o:
                self.w(b"(")
                for k, v in o.items():
                    self.obj(k)
                    self.obj(v)
                self.w(b"u")
        else:
            raise TypeError(type(o))


def py2_pickle(obj) -> bytes:
    p = _Py2Pickler()
    p.w(b"\x80\x02")
    p.obj(obj)
    p.w(b".")
    return p.out.getvalue()


# ---- CIFAR -------------------------------------------------------------------------------------------------------


def cifar_images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root, n_per_batch: int = 20, n_test: int | None = None, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta, readme.html}; returns that folder.

    Labels cycle 0..9 from a per-batch offset, so the expected labels are easy to recompute."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    n_test = n_per_batch if n_test is None else n_test
    for i, (fname, n, label) in enumerate(
        [(f"data_batch_{b}", n_per_batch, f"training batch {b} of 5") for b in range(1, 6)]
        + [("test_batch", n_test, "testing batch 1 of 1")]
    ):
        batch = {
            "batch_label": label,
            "labels": [(i + k) % 10 for k in range(n)],
            "data": cifar_images(n, rng),
            "filenames": [f"img_{i}_{k}.png" for k in range(n)],
        }
        (d / fname).write_bytes(py2_pickle(batch))
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    (d / "batches.meta").write_bytes(py2_pickle(meta))
    (d / "readme.html").write_text("<meta HTTP-EQUIV='REFRESH' content='0; url=http://www.cs.toronto.edu/~kriz/cifar.html'>\n")
    return d


def write_cifar100(root, n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """root/cifar-100-python/{train, test, meta}; fine label k has coarse label k // 5."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for fname, n, label in (("train", n_train, "training batch 1 of 1"), ("test", n_test, "testing batch 1 of 1")):
        fine = [k % 100 for k in range(n)]
        batch = {
            "filenames": [f"img_{k}.png" for k in range(n)],
            "batch_label": label,
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": cifar_images(n, rng),
        }
        (d / fname).write_bytes(py2_pickle(batch))
    (d / "meta").write_bytes(py2_pickle({"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}))
    return d


def make_cifar_tarball(path, name: str = "cifar10", **kw) -> Path:
    """A cifar-10-python.tar.gz (or cifar-100-python.tar.gz) lookalike at `path`, built from the fixtures above."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_cifar10(tmp, **kw) if name == "cifar10" else write_cifar100(tmp, **kw)
        with tarfile.open(path, "w:gz") as tf:
            tf.add(folder, arcname=folder.name)
    return path


def make_evil_tarball(path, kind: str) -> Path:
    """A tarball with one unsafe member: 'traversal' (../), 'absolute' (/...), 'symlink', 'hardlink' or 'device'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"hi"))
        bad = tarfile.TarInfo({"traversal": "cifar-10-batches-py/../../evil.txt", "absolute": "/tmp/evil.txt"}.get(
            kind, "cifar-10-batches-py/evil"))
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
        else:
            bad.size = 4
        tf.addfile(bad, io.BytesIO(b"evil") if bad.isfile() else None)
    return path


def write_poisoned_pickle(path, marker, target: str = "os.system") -> Path:
    """A CIFAR-looking batch whose b'data' unpickles by calling `target`, which would create the file `marker`.

    target: 'os.system' / 'posix.system' (shell command), 'builtins.eval' / 'builtins.exec' (Python code), or
    'subprocess.Popen' / 'subprocess.check_call' (argv list)."""
    module, name = target.rsplit(".", 1)
    if module in ("os", "posix"):
        arg = b"U" + bytes([len(cmd := f"touch {marker}".encode())]) + cmd
    elif module == "builtins":
        arg = b"U" + bytes([len(code := f"open({str(marker)!r}, 'w').close()".encode())]) + code
    else:
        argv = [b"touch", str(marker).encode()]
        arg = b"](" + b"".join(b"U" + bytes([len(a)]) + a for a in argv) + b"e"
    payload = (b"\x80\x02}(U\x06labels]K\x00aU\x04data"
               + b"c" + module.encode() + b"\n" + name.encode() + b"\n" + arg + b"\x85R" + b"u.")
    Path(path).write_bytes(payload)
    return Path(path)


# ---- IDX (Fashion-MNIST) ---------------------------------------------------------------------------------------


def idx_bytes(a: np.ndarray) -> bytes:
    """An unsigned-byte IDX payload: magic 0x0000 08 <ndim>, big-endian dims, then the data."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return struct.pack(">I", 0x0800 | a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()


def write_idx(root, n_train: int = 60, n_test: int = 20, seed: int = 0, compress: bool = True) -> dict[str, Path]:
    """The four Fashion-MNIST files (gzipped unless compress=False); labels cycle 0..9. Returns {file: path}."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, n in (("train", n_train), ("t10k", n_test)):
        for what, a in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                        ("labels-idx1", np.arange(n, dtype=np.uint8) % 10)):
            name = f"{kind}-{what}-ubyte"
            data = idx_bytes(a)
            p = root / (name + ".gz" if compress else name)
            p.write_bytes(gzip.compress(data, mtime=0) if compress else data)
            out[name + ".gz"] = p
    return out


# ---- ImageNet-style folders ------------------------------------------------------------------------------------


def write_image_folder(root, classes=("n01440764", "n01443537"), n_train: int = 3, n_val: int = 2,
                       sizes=((40, 30), (64, 80), (300, 200))) -> Path:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG; class k's images are filled with a distinct colour."""
    from PIL import Image

    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        for k, wnid in enumerate(classes):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = (200 if k == 0 else 30, 40 * i % 256, 100 + 50 * k)
                Image.new("RGB", sizes[i % len(sizes)], colour).save(d / f"{wnid}_{i}.JPEG", quality=95)
    return root
