"""On-device batches in the airbench style: uint8 data moved to the device once, shuffling, crop, flip and
normalisation done as batched tensor ops there. No worker processes, no per-image Python."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def norm_affine(mean, std, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, C, 1, 1) float32, such that x_u8 * scale + shift == (x_u8 / 255 - mean) / std."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    return 1 / (255 * std), -mean / std


def normalize(x_u8: torch.Tensor, mean_t: torch.Tensor, std_t: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, C, H, W) uint8 -> dtype, (x / 255 - mean) / std; mean_t/std_t are per-channel, in [0, 1] scale."""
    scale, shift = norm_affine(mean_t, std_t, x_u8.device)
    return _apply(x_u8, scale, shift, dtype)


def _apply(x_u8, scale, shift, dtype):
    # float32 arithmetic, then one cast: low-precision dtypes only round the result. In-place mul_/add_ run
    # about 2.5x faster than addcmul on CPU (broadcast addcmul is not vectorised there).
    return x_u8.float().mul_(scale).add_(shift).to(dtype)


def _epoch_seed(seed: int, epoch: int) -> int:
    # Well-mixed 63-bit seed per (seed, epoch), so set_epoch(e) reproduces epoch e without replaying earlier ones.
    hi, lo = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


class DeviceLoader:
    """Iterates (x, y) batches of a whole split held on `device`: x (B, C, H, W) `dtype` normalised, y (B,) int64.

    train=True applies the augmentation: per-image random crop of the zero-padded image (crop_pad pixels each
    side, 0 disables) and random horizontal flip. train=False serves the images unchanged.
    """

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], device: str | torch.device = "cpu", train: bool = False, crop_pad: int = 4,
                 flip: bool = True, shuffle: bool | None = None, drop_last: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, pad_last: bool = False):
        if x_u8.dtype != torch.uint8 or x_u8.dim() != 4:
            raise ValueError(f"DeviceLoader wants uint8 (N, C, H, W) images, got {x_u8.dtype} {tuple(x_u8.shape)}")
        if y.shape != (x_u8.shape[0],):
            raise ValueError(f"DeviceLoader: {y.shape[0]} labels for {x_u8.shape[0]} images")
        if batch_size < 1 or crop_pad < 0:
            raise ValueError("DeviceLoader: batch_size must be >= 1 and crop_pad >= 0")
        self.device = torch.device(device)
        self.batch_size, self.drop_last, self.seed, self.epoch = batch_size, drop_last, seed, 0
        self.dtype, self.channels_last = dtype, channels_last
        # pad_last (static shapes for CUDA graphs): an unshuffled, unaugmented loader pads its last batch to
        # batch_size with zero images labelled -100, which cross_entropy and the eval counts ignore.
        self.pad_last = pad_last
        self.train = train
        self.crop_pad = crop_pad if train else 0
        self.flip = flip and train
        self.shuffle = train if shuffle is None else shuffle
        self.n, c, self.h, self.w = x_u8.shape
        p = self.crop_pad
        # Stored pre-padded once (zeros = black borders, as padding before normalisation gives).
        self.x = (F.pad(x_u8, (p, p, p, p)) if p else x_u8).to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.scale, self.shift = norm_affine(mean, std, self.device)
        if self.crop_pad or self.flip:
            hp, wp = self.h + 2 * p, self.w + 2 * p
            ar = lambda n: torch.arange(n, device=self.device)  # noqa: E731
            self._rows = self.x.view(-1, wp)  # (N * C * Hp, Wp): one padded image row per line
            self._row_off = (ar(c) * hp).view(1, c, 1) + ar(self.h).view(1, 1, self.h)  # (1, C, H)
            self._cols = torch.stack([ar(self.w), self.w - 1 - ar(self.w)])  # (2, W): plain, flipped
            self._img_rows = c * hp

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The next iteration serves epoch `epoch` (shuffle and augmentation draws depend only on seed, epoch)."""
        self.epoch = epoch

    def _finish(self, x_u8: torch.Tensor) -> torch.Tensor:
        x = _apply(x_u8, self.scale, self.shift, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator(device=self.device).manual_seed(_epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        n, bs = self.n, self.batch_size
        order = torch.randperm(n, generator=g, device=self.device) if self.shuffle else None
        aug = self.crop_pad or self.flip
        if aug:
            # Per-image draws for the whole epoch at once: crop offsets (oy, ox) and a flip bit.
            span = 2 * self.crop_pad + 1
            idx = order if order is not None else torch.arange(n, device=self.device)
            oy = torch.randint(span, (n,), generator=g, device=self.device)
            ox = torch.randint(span, (n,), generator=g, device=self.device)
            flips = (torch.rand(n, generator=g, device=self.device) < 0.5).long() if self.flip \
                else torch.zeros(n, dtype=torch.long, device=self.device)
            first_row = idx * self._img_rows + oy  # (N,) row of self._rows where each crop window starts
        c, h, w = self.x.shape[1], self.h, self.w
        stop = n - n % bs if self.drop_last else n
        for i in range(0, stop, bs):
            j = min(i + bs, n)
            if aug:
                # Two cheap steps instead of one per-pixel index: pick the H window rows of every channel
                # (B, C, H, Wp), then gather the W columns, shifted by ox and reversed where flipped.
                rows = (first_row[i:j].view(-1, 1, 1) + self._row_off).view(-1)
                x = self._rows.index_select(0, rows).view(j - i, c, h, -1)
                cols = (ox[i:j].view(-1, 1) + self._cols[flips[i:j]]).view(-1, 1, 1, w).expand(-1, c, h, w)
                yield self._finish(torch.gather(x, 3, cols)), self.y[idx[i:j]]
            elif order is not None:
                sel = order[i:j]
                yield self._finish(self.x.index_select(0, sel)), self.y[sel]
            elif self.pad_last and j - i < bs:
                x, y, k = self.x[i:j], self.y[i:j], bs - (j - i)
                yield (self._finish(torch.cat([x, x.new_zeros((k, *x.shape[1:]))])),
                       torch.cat([y, y.new_full((k,), -100)]))
            else:
                yield self._finish(self.x[i:j]), self.y[i:j]
