"""A trial's view of a dataset: its seeded subset and validation split, its rank's shard, and the train and
evaluation loaders on the trial's device. Datasets are told apart by `kind` ("memory" or "stream")."""

from __future__ import annotations

import torch

from bench.data.base import DatasetError
from bench.data.loader import DeviceLoader, normalize


def shard_indices(n: int, rank: int, world: int, seed: int) -> torch.Tensor:
    """Rank `rank`'s slice of a seeded permutation of range(n): disjoint across ranks, n // world each (the
    remainder is dropped) so every rank takes the same number of steps."""
    # Offset the seed: subset_train and split draw their permutations from the trial seed itself.
    g = torch.Generator().manual_seed(seed + 0x5A4D)
    per = n // world
    return torch.randperm(n, generator=g)[rank * per:(rank + 1) * per].sort().values


def _shard_batch(batch: int, n: int, rank: int, world: int, seed: int):
    """(indices, per-rank batch, loader seed) of a rank; batch is the global batch."""
    if batch % world:
        raise DatasetError(f"batch_size {batch} (the global batch) is not divisible by {world} workers")
    idx = shard_indices(n, rank, world, seed)
    if len(idx) == 0:
        raise DatasetError(f"{n} training images cannot be shared by {world} workers")
    return idx, batch // world, seed * world + rank  # distinct shuffle and augmentation draws per rank


def build_loaders(data, proto, seed: int, device: torch.device, shard: tuple[int, int] | None = None):
    """Train loader plus named eval loaders ("test", and "val" with a validation split), seeded by the trial.

    shard=(rank, world): this rank trains on its shard_indices() of the train split with batch_size / world and
    evaluates every world-th test/val image; the caller sums across ranks.
    Returns (data, train, evals, train indices or None)."""
    if data.kind == "stream":
        return _stream_loaders(data, proto, seed, device, shard)
    if proto.train_subset is not None:
        if proto.train_subset > len(data.train_y):
            raise DatasetError(f"train_subset {proto.train_subset} exceeds the {len(data.train_y)} training images")
        data = data.subset_train(proto.train_subset, seed=seed)
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if proto.val_split:
        data, val = data.split(proto.val_split, seed=seed)
        evals["val"] = val
    tx, ty = data.test_x, data.test_y
    if proto.test_subset is not None and proto.test_subset < len(ty):
        tx, ty = tx[:proto.test_subset], ty[:proto.test_subset]
    evals = {"test": (tx, ty), **evals}
    # Normalisation stats of the whole (subset) train split, so every rank normalises alike.
    common = dict(mean=data.mean, std=data.std, device=device)
    a = proto.augment
    train_x, train_y, batch, loader_seed, idx = data.train_x, data.train_y, proto.batch_size, seed, None
    if shard is not None and shard[1] > 1:
        rank, world = shard
        idx, batch, loader_seed = _shard_batch(proto.batch_size, len(data.train_y), rank, world, seed)
        train_x, train_y = data.train_x[idx], data.train_y[idx]
        evals = {k: (x[rank::world], y[rank::world]) for k, (x, y) in evals.items()}
    train = DeviceLoader(train_x, train_y, batch_size=batch, train=True, crop_pad=a.crop_pad, flip=a.flip,
                         drop_last=len(train_y) >= batch, seed=loader_seed, **common)
    eval_loaders = {k: DeviceLoader(x, y, batch_size=max(batch, 500), train=False, **common)
                    for k, (x, y) in evals.items()}
    return data, train, eval_loaders, idx


class OnDevice:
    """A stream of uint8 batches (ImageNet: decoded and augmented by CPU threads, too big to keep in memory),
    moved to the device and normalised there like the in-memory loaders."""

    def __init__(self, stream, mean, std, device: torch.device):
        self.stream, self.device = stream, device
        self.mean = torch.tensor(mean, device=device)
        self.std = torch.tensor(std, device=device)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        for x, y in self.stream:
            x = x.to(self.device, non_blocking=True)
            yield normalize(x, self.mean, self.std), y.to(self.device, non_blocking=True)


def _stream_loaders(data, proto, seed: int, device: torch.device, shard: tuple[int, int] | None):
    from bench.data.imagenet import ImageStream

    files, labels = list(data.train_files), list(data.train_labels)
    if proto.train_subset is not None and proto.train_subset < len(files):
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:proto.train_subset]
        files, labels = [files[i] for i in pick], [labels[i] for i in pick]
    tf, tl = list(data.test_files), list(data.test_labels)
    if proto.test_subset is not None:
        tf, tl = tf[:proto.test_subset], tl[:proto.test_subset]
    batch, loader_seed, idx = proto.batch_size, seed, None
    if shard is not None and shard[1] > 1:
        rank, world = shard
        idx, batch, loader_seed = _shard_batch(proto.batch_size, len(files), rank, world, seed)
        files, labels = [files[i] for i in idx], [labels[i] for i in idx]
        tf, tl = tf[rank::world], tl[rank::world]
    train = ImageStream(files, labels, batch_size=batch, train=True, size=data.image_size, seed=loader_seed,
                        drop_last=len(files) >= batch)
    test = ImageStream(tf, tl, batch_size=max(batch, 100), train=False, size=data.image_size)
    return (data, OnDevice(train, data.mean, data.std, device),
            {"test": OnDevice(test, data.mean, data.std, device)}, idx)
