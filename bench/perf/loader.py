"""Throughput of DeviceLoader alone: python -m bench.perf.loader [--device cuda] [--threads 1]

50,000 random 3x32x32 uint8 images (CIFAR-10 sized), batch 128. Prints images/s per configuration, median and
best of 5 timed epochs after one warm-up epoch, the device synchronised before each clock read."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.data.loader import DeviceLoader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loader: DeviceLoader, epochs: int) -> tuple[float, float]:
    """(median, best) images/s over `epochs` timed epochs after one warm-up epoch."""
    for _ in loader:
        pass
    rates = []
    for _ in range(epochs):
        _sync(loader.device)
        t0, n = time.perf_counter(), 0
        for x, _y in loader:
            n += x.shape[0]
        _sync(loader.device)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    x = torch.randint(0, 256, (a.n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (a.n,), generator=torch.Generator().manual_seed(1))
    common = dict(batch_size=a.batch_size, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), device=device)
    configs = {
        "test (no shuffle, no aug)": dict(train=False),
        "train shuffle only": dict(train=True, crop_pad=0, flip=False),
        "train flip": dict(train=True, crop_pad=0, flip=True),
        "train crop4 + flip": dict(train=True, crop_pad=4, flip=True),
        "train crop4 + flip, bf16 channels_last": dict(train=True, dtype=torch.bfloat16, channels_last=True),
    }
    print(f"DeviceLoader on {device} ({torch.get_num_threads()} threads), {a.n} images 3x32x32, "
          f"batch {a.batch_size}, {a.epochs} timed epochs, torch {torch.__version__}")
    for name, kw in configs.items():
        median, best = measure(DeviceLoader(x, y, **common, **kw), a.epochs)
        print(f"  {name:40s} median {median:>11,.0f}   best {best:>11,.0f} images/s")


if __name__ == "__main__":
    main()
