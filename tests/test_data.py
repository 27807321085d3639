"""bench.data: official-format readers on fixtures, safety of pickles/tarballs/downloads, and the device loader."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.data as data
from bench import BenchError
from bench.data import DatasetError, DeviceLoader, cifar, default_root, idx, imagenet, load, normalize
from bench.data.base import channel_stats, md5_file, safe_extract
import fixtures_data as fx  # tests/ is on sys.path under pytest (no __init__.py there)

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def md5(p: Path) -> str:
    return hashlib.md5(Path(p).read_bytes()).hexdigest()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).rglob("*") if p.name.startswith(".") or p.suffix == ".part")


# ---- registry and Dataset ----------------------------------------------------------------------------------------


def test_dataset_error_is_bench_error_and_unknown_name_lists_known():
    assert issubclass(DatasetError, BenchError)
    with pytest.raises(DatasetError, match="unknown dataset .cifar11.; known: fashion-mnist, fashion-mnist-28, cifar10, cifar100, synthetic, imagenet"):
        load("cifar11")
    with pytest.raises(DatasetError, match="unknown option"):
        load("synthetic", n_trian=5)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert data.default_root("cifar10") == tmp_path / "cifar10"
    monkeypatch.delenv("BENCH_DATA_DIR")
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "absent")
    assert data.default_root("fashion-mnist") == Path.home() / ".cache/bench/fashion-mnist"
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path)
    assert data.default_root("fashion-mnist") == tmp_path


def test_channel_stats_exact():
    x = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert np.allclose(mean, f.mean((0, 2, 3)).numpy()) and np.allclose(std, f.std((0, 2, 3), unbiased=False).numpy())


def test_split_and_subset_are_seeded_and_disjoint():
    ds = load("synthetic", n_train=100, n_test=10)
    tr, (vx, vy) = ds.split(20, seed=3)
    assert tr.train_x.shape[0] == 80 and vx.shape[0] == 20 and tr.test_x.shape[0] == 10
    rows = lambda t: {bytes(r.numpy()) for r in t.flatten(1)}  # noqa: E731
    assert not rows(tr.train_x) & rows(vx) and rows(tr.train_x) | rows(vx) == rows(ds.train_x)
    assert torch.equal(ds.split(20, seed=3)[1][0], vx) and not torch.equal(ds.split(20, seed=4)[1][0], vx)
    assert tr.mean != ds.mean  # recomputed without the held-out images
    sub = ds.subset_train(40, seed=1)
    assert sub.train_x.shape[0] == 40 and torch.equal(sub.train_y, ds.subset_train(40, seed=1).train_y)
    with pytest.raises(DatasetError):
        ds.subset_train(101)


def test_synthetic_deterministic_and_learnable():
    a, b = load("synthetic"), load("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, load("synthetic", seed=1).train_x)
    assert a.train_x.shape == (512, 3, 32, 32) and a.test_x.shape == (256, 3, 32, 32) and a.num_classes == 10
    g = load("synthetic", channels=1, size=28, num_classes=4)
    assert g.train_x.shape[1:] == (1, 32, 32) and g.num_classes == 4
    # a tiny net with augmentation gets far above chance (10%) in a few epochs
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2, padding=2), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    train = a.loader("train", batch_size=64)
    for _ in range(3):
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    with torch.no_grad():
        acc = sum((net(x).argmax(1) == y).sum().item() for x, y in a.loader("test", batch_size=256)) / 256
    assert acc > 0.6, acc


# ---- IDX / Fashion-MNIST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_fixture_loads_padded(tmp_path, compress):
    files = fx.write_idx(tmp_path, n_train=30, n_test=10, compress=compress)
    ds = load("fashion-mnist", tmp_path)
    assert ds.train_x.shape == (30, 1, 32, 32) and ds.test_x.shape == (10, 1, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [i % 10 for i in range(30)] and ds.num_classes == 10 and ds.classes[9] == "Ankle boot"
    raw = idx.read_idx(files["train-images-idx3-ubyte.gz"], idx.IMAGES_MAGIC)
    assert torch.equal(ds.train_x[:, 0, 2:30, 2:30], torch.from_numpy(raw.copy()))
    border = ds.train_x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0
    assert (ds.in_channels, ds.image_size) == (1, 32) and ds.verified is False  # fixture bytes are not official


def test_fashion_mnist_28_is_the_same_pixels_unpadded(tmp_path, monkeypatch):
    fx.write_idx(tmp_path, n_train=30, n_test=10)
    padded, native = load("fashion-mnist", tmp_path), load("fashion-mnist-28", tmp_path)
    assert native.name == "fashion-mnist-28" and native.train_x.shape == (30, 1, 28, 28)
    assert (native.in_channels, native.image_size) == (1, 28)
    assert torch.equal(padded.train_x[:, :, 2:30, 2:30], native.train_x)
    assert torch.equal(padded.test_y, native.test_y)
    # One copy of the files serves both names.
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert default_root("fashion-mnist-28") == default_root("fashion-mnist") == tmp_path / "fashion-mnist"


def _rewrite(path: Path, fn):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(fn(raw)))


@pytest.mark.parametrize("fn, message", [
    (lambda r: b"\x00\x00\x00\x00" + r[4:], r"train-images-idx3-ubyte.gz: bad magic 0x00000000, expected 0x00000803"),
    (lambda r: r[:-5], r"train-images-idx3-ubyte.gz: truncated: .* bytes, expected"),
    (lambda r: r + b"\x00", r"train-images-idx3-ubyte.gz: oversized"),
    (lambda r: r[:10], r"truncated header"),
])
def test_corrupt_idx(tmp_path, fn, message):
    files = fx.write_idx(tmp_path, n_train=10, n_test=5)
    _rewrite(files["train-images-idx3-ubyte.gz"], fn)
    with pytest.raises(DatasetError, match="^fashion-mnist: .*" + message):
        load("fashion-mnist", tmp_path)


def test_idx_consistency_and_missing(tmp_path):
    files = fx.write_idx(tmp_path, n_train=10, n_test=5)
    p = files["train-labels-idx1-ubyte.gz"]
    p.write_bytes(gzip.compress(fx.idx_bytes(np.full(10, 10, np.uint8))))
    with pytest.raises(DatasetError, match="label 10 out of range"):
        load("fashion-mnist", tmp_path)
    p.write_bytes(gzip.compress(fx.idx_bytes(np.zeros(9, np.uint8))))
    with pytest.raises(DatasetError, match="10 images but .* 9 labels"):
        load("fashion-mnist", tmp_path)
    p.write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(DatasetError, match="corrupt gzip"):
        load("fashion-mnist", tmp_path)
    p.unlink()
    with pytest.raises(DatasetError, match=r"missing file .*train-labels-idx1-ubyte.gz; run 'bench data fetch fashion-mnist"):
        load("fashion-mnist", tmp_path)


@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_info():
    i = data.info("fashion-mnist", REAL_FMNIST)
    assert i["splits"] == {"train": 60000, "test": 10000} and i["num_classes"] == 10
    assert i["shape_stored"] == [1, 28, 28] and i["shape_served"] == [1, 32, 32]
    assert i["verified"] is True and set(i["checksums"].values()) == {"ok"}
    assert abs(i["mean"][0] - 0.2860 * 784 / 1024) < 1e-3  # the known 28x28 mean, diluted by the zero border
    assert data.fetch("fashion-mnist", REAL_FMNIST, url="file:///nonexistent/") == REAL_FMNIST  # verified: no download


# ---- CIFAR -------------------------------------------------------------------------------------------------------


def test_cifar10_fixture(tmp_path):
    folder = fx.write_cifar10(tmp_path, n_per_batch=12, n_test=8)
    ds = load("cifar10", tmp_path)
    assert ds.train_x.shape == (60, 3, 32, 32) and ds.test_x.shape == (8, 3, 32, 32)
    assert ds.classes == fx.CIFAR10_CLASSES and ds.source == str(folder)
    assert ds.train_y[:12].tolist() == [k % 10 for k in range(12)] and ds.test_y[0] == 5
    # row-major RGB planes: byte 1024 + 32*r + c is green at (r, c)
    raw = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="bytes")[b"data"]  # our own trusted fixture
    assert ds.train_x[12, 1, 5, 7] == raw[0, 1024 + 5 * 32 + 7] and torch.equal(ds.train_x[12].flatten(), torch.from_numpy(raw[0]))
    assert torch.equal(load("cifar10", folder).train_x, ds.train_x)  # root may be the folder itself
    assert ds.verified is None and data.info("cifar10", tmp_path)["checksums"] == {"cifar-10-python.tar.gz": "absent"}


def test_cifar100_fixture(tmp_path):
    fx.write_cifar100(tmp_path, n_train=50, n_test=20)
    fine = load("cifar100", tmp_path)
    coarse = load("cifar100", tmp_path, label="coarse")
    assert fine.train_x.shape == (50, 3, 32, 32) and fine.num_classes == 100 and coarse.num_classes == 20
    assert torch.equal(coarse.train_y, fine.train_y // 5) and coarse.classes[3] == "coarse_3"
    with pytest.raises(DatasetError, match="label must be one of"):
        load("cifar100", tmp_path, label="medium")


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
def test_poisoned_pickle_refused_not_executed(tmp_path, target):
    folder = fx.write_cifar10(tmp_path, n_per_batch=4)
    marker = tmp_path / "pwned"
    fx.write_poisoned_pickle(folder / "data_batch_3", marker, target)
    with pytest.raises(DatasetError, match=f"^cifar10: {folder / 'data_batch_3'}: refusing to unpickle {target} "):
        load("cifar10", tmp_path)
    assert not marker.exists()


def test_poisoned_fixture_is_live(tmp_path):
    # Proves the refusal above is meaningful: a plain unpickler really would run the command.
    marker = tmp_path / "pwned"
    pickle.loads(fx.write_poisoned_pickle(tmp_path / "p", marker).read_bytes(), encoding="bytes")
    assert marker.exists()


def test_bad_cifar_files(tmp_path):
    folder = fx.write_cifar10(tmp_path, n_per_batch=4)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="test_batch: not a valid pickle"):
        load("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(fx.py2_pickle({"labels": [0], "data": np.zeros((1, 3071), np.uint8)}))
    with pytest.raises(DatasetError, match="must be a uint8 N x 3072 array"):
        load("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(fx.py2_pickle({"labels": [0, 10], "data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetError, match="label out of range"):
        load("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(fx.py2_pickle({"labels": [0], "data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetError, match="1 labels for 2 images"):
        load("cifar10", tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError, match="missing file .*test_batch"):
        load("cifar10", tmp_path)
    with pytest.raises(DatasetError, match=r"missing file .*batches.meta; run 'bench data fetch cifar10"):
        load("cifar10", tmp_path / "nowhere")


# ---- downloads and archives ------------------------------------------------------------------------------------


def test_fetch_cifar_file_url(tmp_path, monkeypatch):
    tarball = fx.make_cifar_tarball(tmp_path / "src" / "cifar-10-python.tar.gz", n_per_batch=4)
    monkeypatch.setitem(cifar.SPECS["cifar10"], "md5", md5(tarball))
    root = tmp_path / "root"
    assert data.fetch("cifar10", root, url=tarball.as_uri()) == root
    ds = load("cifar10", root)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.verified is True and not leftovers(root)
    assert data.fetch("cifar10", root, url="file:///nonexistent") == root  # already there: no download


def test_fetch_cifar_tampered_md5(tmp_path):
    tarball = fx.make_cifar_tarball(tmp_path / "src" / "cifar-10-python.tar.gz", n_per_batch=4)
    root = tmp_path / "root"  # official MD5 left in place: the fixture cannot match it
    with pytest.raises(DatasetError, match=r"MD5 mismatch \(got [0-9a-f]{32}, expected c58f30108f718f92721af3b95e74349a\)"):
        data.fetch("cifar10", root, url=tarball.as_uri())
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_tar_members_refused(tmp_path, monkeypatch, kind):
    evil = fx.make_evil_tarball(tmp_path / "src" / "cifar-10-python.tar.gz", kind)
    with pytest.raises(DatasetError, match="unsafe member path|refusing link/device member"):
        safe_extract(evil, tmp_path / "out", "cifar10")
    assert not (tmp_path / "out").exists()  # checked before anything is written
    monkeypatch.setitem(cifar.SPECS["cifar10"], "md5", md5(evil))
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz: (unsafe|refusing)"):
        data.fetch("cifar10", root, url=evil.as_uri())
    assert not (root / "cifar-10-batches-py").exists() and not [p for p in root.iterdir() if p.name.startswith(".")]
    assert not (tmp_path / "evil.txt").exists()


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_fashion_mnist_over_http(tmp_path, monkeypatch, http_dir):
    www, base = http_dir
    files = fx.write_idx(www, n_train=20, n_test=10)
    table = {n: (md5(p), hashlib.md5(gzip.decompress(p.read_bytes())).hexdigest()) for n, p in files.items()}
    monkeypatch.setattr(idx, "FILES", table)
    root = tmp_path / "root"
    data.fetch("fashion-mnist", root, url=[base + "missing/", base])  # first mirror 404s, second works
    ds = load("fashion-mnist", root)
    assert ds.train_x.shape == (20, 1, 32, 32) and ds.verified is True and not leftovers(root)
    # one damaged file is fetched again; the others are kept
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    before = (root / "train-images-idx3-ubyte.gz").stat().st_mtime_ns
    data.fetch("fashion-mnist", root, url=base)
    assert md5(root / "t10k-labels-idx1-ubyte.gz") == table["t10k-labels-idx1-ubyte.gz"][0]
    assert (root / "train-images-idx3-ubyte.gz").stat().st_mtime_ns == before
    # a wrong file on the server is rejected and leaves nothing behind
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: MD5 mismatch"):
        data.fetch("fashion-mnist", root, url=base)
    assert not (root / "t10k-labels-idx1-ubyte.gz").exists() and not leftovers(root)


def test_fashion_mnist_official_table():
    assert {n: m[0] for n, m in idx.FILES.items()} == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }


def test_imagenet_fetch_refused(tmp_path):
    with pytest.raises(DatasetError, match="imagenet: cannot be downloaded"):
        data.fetch("imagenet", tmp_path)


# ---- ImageNet folders ------------------------------------------------------------------------------------------


def test_imagenet_folder(tmp_path):
    fx.write_image_folder(tmp_path, n_train=3, n_val=2)
    i = data.info("imagenet", tmp_path)
    assert i["splits"] == {"train": 6, "test": 4} and i["classes"] == ["n01440764", "n01443537"]
    ds = load("imagenet", tmp_path)
    train = ds.loader("train", batch_size=4, seed=1, workers=2)
    batches = list(train)
    assert len(train) == 2 and [b[0].shape for b in batches] == [(4, 3, 224, 224), (2, 3, 224, 224)]
    assert batches[0][0].dtype == torch.uint8 and sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    train.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, train))  # deterministic whatever the threads do
    x, y = next(iter(ds.loader("test", batch_size=4)))
    assert y.tolist() == [0, 0, 1, 1]
    # flat-colour images: the centre crop is that colour (up to JPEG error); class 0 is red, class 1 is not
    assert (x[:2, 0].float().mean() - 200).abs() < 3 and (x[2:, 0].float().mean() - 30).abs() < 3
    xn = normalize(x, torch.tensor(ds.mean), torch.tensor(ds.std))
    assert xn.dtype == torch.float32 and xn.shape == (4, 3, 224, 224)
    with pytest.raises(DatasetError, match="missing folder"):
        load("imagenet", tmp_path / "nowhere")


def test_imagenet_crop_geometry():
    rng = np.random.default_rng(0)
    for w, h in [(500, 375), (40, 30), (1000, 20)]:
        for _ in range(50):
            x, y, cw, ch = imagenet._random_resized_crop(w, h, rng)
            assert 0 <= x and x + cw <= w and 0 <= y and y + ch <= h and cw > 0 and ch > 0


# ---- DeviceLoader ----------------------------------------------------------------------------------------------


def _xy(n=10, c=3, h=8, w=8):
    x = torch.arange(n * c * h * w).reshape(n, c, h, w) % 251
    return x.to(torch.uint8), torch.arange(n) % 3


def test_loader_eval_normalises_in_order():
    x, y = _xy()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    ld = DeviceLoader(x, y, batch_size=4, mean=mean, std=std)
    out = list(ld)
    assert [b[0].shape[0] for b in out] == [4, 4, 2] and len(ld) == 3
    xs, ys = torch.cat([b[0] for b in out]), torch.cat([b[1] for b in out])
    expect = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert xs.dtype == torch.float32 and torch.allclose(xs.double(), expect, atol=1e-5) and torch.equal(ys, y)
    assert torch.allclose(normalize(x, torch.tensor(mean), torch.tensor(std)).double(), expect, atol=1e-5)


def test_loader_stats_make_unit_data():
    ds = load("synthetic", n_train=256, n_test=8)
    xs = torch.cat([b for b, _ in ds.loader("train", batch_size=100, train=False)])
    assert xs.mean((0, 2, 3)).abs().max() < 1e-4 and (xs.std((0, 2, 3)) - 1).abs().max() < 1e-2


def test_loader_len_and_drop_last():
    x, y = _xy(n=10)
    assert len(DeviceLoader(x, y, batch_size=4, mean=(0,) * 3, std=(1,) * 3, drop_last=True)) == 2
    ld = DeviceLoader(x, y, batch_size=4, mean=(0,) * 3, std=(1,) * 3, train=True, drop_last=True)
    assert [b[0].shape[0] for b in ld] == [4, 4]


def _batches(**kw):
    x, y = _xy(n=37)
    ld = DeviceLoader(x, y, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, **kw)
    return ld, [list(ld) for _ in range(2)]


def test_loader_seeded_determinism_and_epochs():
    ld, (e0, e1) = _batches(seed=7)
    _, (f0, f1) = _batches(seed=7)
    _, (g0, _) = _batches(seed=8)
    same = lambda a, b: all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))  # noqa: E731
    assert same(e0, f0) and same(e1, f1) and not same(e0, e1) and not same(e0, g0)
    ld.set_epoch(1)
    assert same(list(ld), e1)
    assert e0[0][0].shape == (8, 3, 8, 8) and e0[-1][0].shape == (5, 3, 8, 8) and e0[0][1].dtype == torch.int64


def test_loader_shuffles_labels_with_images():
    x, y = _xy(n=40)
    y = torch.arange(40)
    x = y.view(40, 1, 1, 1).expand(40, 3, 4, 4).to(torch.uint8).contiguous()  # image i is filled with i
    for kw in (dict(crop_pad=0, flip=False), dict(crop_pad=0, flip=True)):
        ld = DeviceLoader(x, y, batch_size=16, mean=(0,) * 3, std=(1 / 255,) * 3, train=True, **kw)
        xs, ys = map(torch.cat, zip(*ld))
        assert not torch.equal(ys, y) and sorted(ys.tolist()) == list(range(40))
        assert torch.equal(xs[:, :, 0, 0].round().long(), ys.view(-1, 1).expand(40, 3))


def test_loader_crop_shifts_content():
    # one known image with distinct pixel values, repeated: every output must be a shifted window of it
    h = w = 8
    img = (torch.arange(3 * h * w).reshape(1, 3, h, w) + 1).to(torch.uint8)
    x, y = img.repeat(64, 1, 1, 1), torch.zeros(64, dtype=torch.int64)
    ld = DeviceLoader(x, y, batch_size=64, mean=(0,) * 3, std=(1 / 255,) * 3, train=True, crop_pad=2, flip=False)
    out = next(iter(ld)).__getitem__(0).round().to(torch.uint8)
    padded = torch.nn.functional.pad(img[0], (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)}
    seen = set()
    for o in out:
        match = [k for k, win in windows.items() if torch.equal(o, win)]
        assert len(match) == 1
        seen.add(match[0])
    # many different offsets, every shift on each axis, the fully zero-filled borders (0 and 4) included
    assert len(seen) > 10 and {k[0] for k in seen} == set(range(5)) and {k[1] for k in seen} == set(range(5))
    assert any(k != (2, 2) for k in seen)


def test_loader_flip_and_no_aug_when_not_training():
    img = (torch.arange(3 * 6 * 6).reshape(1, 3, 6, 6) + 1).to(torch.uint8)
    x, y = img.repeat(32, 1, 1, 1), torch.zeros(32, dtype=torch.int64)
    kw = dict(batch_size=32, mean=(0,) * 3, std=(1 / 255,) * 3)
    out = next(iter(DeviceLoader(x, y, train=True, crop_pad=0, flip=True, **kw)))[0].round().to(torch.uint8)
    flipped = [torch.equal(o, img[0].flip(-1)) for o in out]
    assert all(f or torch.equal(o, img[0]) for f, o in zip(flipped, out)) and 4 < sum(flipped) < 28
    ev = next(iter(DeviceLoader(x, y, train=False, crop_pad=4, flip=True, **kw)))[0].round().to(torch.uint8)
    assert torch.equal(ev, x)


def test_loader_dtype_and_layout():
    x, y = _xy(n=8, h=32, w=32)
    ld = DeviceLoader(x, y, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, dtype=torch.bfloat16,
                      channels_last=True)
    xb, _ = next(iter(ld))
    assert xb.dtype == torch.bfloat16 and xb.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError):
        DeviceLoader(x.float(), y, batch_size=2, mean=(0,), std=(1,))


def test_shards_are_disjoint_balanced_and_seeded():
    from bench.data.trial_data import shard_indices

    for n, world in ((10, 2), (1000, 8), (7, 3)):
        parts = [shard_indices(n, r, world, seed=3) for r in range(world)]
        assert {len(p) for p in parts} == {n // world}
        assert len(set(torch.cat(parts).tolist())) == n // world * world
        assert all(torch.equal(p, shard_indices(n, r, world, seed=3)) for r, p in enumerate(parts))
    assert not torch.equal(shard_indices(100, 0, 2, seed=0), shard_indices(100, 0, 2, seed=1))
