"""A small, deterministic, learnable stand-in dataset for smoke tests and CI (no files needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.data.base import Dataset, pad_to_32


def load(n_train: int = 512, n_test: int = 256, num_classes: int = 10, channels: int = 3, size: int = 32,
         seed: int = 0, noise: float = 0.35) -> Dataset:
    """Each class is a smooth random colour pattern; images are that pattern, jittered in contrast and
    brightness, plus pixel noise. Low-frequency patterns survive crop/flip augmentation, so a tiny net learns
    it well above chance within a few epochs."""
    g = torch.Generator().manual_seed(seed)
    # (K, C, 4, 4) grids upsampled to (K, C, size, size): one smooth prototype per class, values in about [-1, 1]
    protos = F.interpolate(torch.rand(num_classes, channels, 4, 4, generator=g) * 2 - 1, size=(size, size),
                           mode="bilinear", align_corners=False)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes  # balanced classes, then shuffled
        y = y[torch.randperm(n, generator=g)]
        contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
        bright = 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
        x = contrast * protos[y] + bright + noise * torch.randn(n, channels, size, size, generator=g)
        return pad_to_32((x * 100 + 128).clamp(0, 255).round().to(torch.uint8)), y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, classes=[f"class_{i}" for i in range(num_classes)],
                   source=f"synthetic(n_train={n_train}, n_test={n_test}, num_classes={num_classes}, "
                          f"channels={channels}, size={size}, seed={seed})")


def info(**kw) -> dict:
    ds = load(**kw)
    return {
        "name": "synthetic",
        "source": ds.source,
        "splits": {"train": ds.train_x.shape[0], "test": ds.test_x.shape[0]},
        "shape_stored": list(ds.train_x.shape[1:]),
        "shape_served": list(ds.train_x.shape[1:]),
        "num_classes": ds.num_classes,
        "classes": ds.classes,
        "mean": list(ds.mean),
        "std": list(ds.std),
        "checksums": {},
        "verified": None,
    }
