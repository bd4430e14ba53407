"""Device-resident batches: uint8 images live on the training device; order and augmentation are seeded.

The batch for iteration t is a pure function of (t, order_seed, aug_seed), so a run resumed at
any iteration, or a branch that starts at iteration k, sees exactly the batches an
uninterrupted run would have seen.

- order: a permutation per epoch drawn from (order_seed, epoch);
- augmentation: each example's crop offset and flip drawn from (aug_seed, epoch) for the
  whole dataset and indexed by example, so it does not depend on the order.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from rewind import seeds, steps

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PAD = 4


class Normalizer:
    """uint8 [B, C, H, W] -> float32, normalised with the recipe's mean and std, channels-last."""

    def __init__(self, device: torch.device | str):
        std = torch.tensor(STD, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mul_(self.scale).add_(self.shift)
        return x.contiguous(memory_format=torch.channels_last)


# (id of the source images, device, padded) -> the device copy, shared by every loader and Setup
# of those images (replicas, branches and arms of one dataset), and dropped when the source is.
_device_copies: dict[tuple[int, str, bool], torch.Tensor] = {}


def device_copy(images: torch.Tensor, device: torch.device, pad: bool = False) -> torch.Tensor:
    """`images` on `device`, padded once for the whole dataset if `pad`: a crop is then a plain
    gather, with no per-batch padding. Read only: loaders never write into it."""
    key = (id(images), str(device), pad)
    if key not in _device_copies:
        copy = images.to(device)
        copy = F.pad(copy, (PAD, PAD, PAD, PAD)) if pad else copy
        if copy is images:  # already there as is: nothing to share, nothing to keep alive
            return copy
        _device_copies[key] = copy
        weakref.finalize(images, _device_copies.pop, key, None)
    return _device_copies[key]


class DeviceLoader:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, order_seed: int,
                 aug_seed: int, augment: bool = True, device: torch.device | str = "cpu"):
        self.n, _, self.h, self.w = images.shape
        self.batch_size = batch_size
        self.order_seed, self.aug_seed, self.augment = order_seed, aug_seed, augment
        self.device = torch.device(device)
        self.images = device_copy(images, self.device, augment)
        self.labels = labels.to(self.device)
        self.normalize = Normalizer(self.device)
        self._epoch: int | None = None
        self._rows = torch.arange(self.h, device=self.device)
        self._cols = torch.arange(self.w, device=self.device)
        self._chan = torch.arange(images.shape[1], device=self.device)

    def originals(self) -> torch.Tensor:
        """The training images as stored (uint8, unpadded, on the device)."""
        return self.images[:, :, PAD:-PAD, PAD:-PAD] if self.augment else self.images

    @property
    def iterations_per_epoch(self) -> int:
        return steps.iterations_per_epoch(self.n, self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=seeds.generator(self.order_seed, "order", epoch))

    def augmentation(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets [N, 2] in 0..2*PAD, flips [N] bool) for every example of this epoch."""
        g = seeds.generator(self.aug_seed, "augment", epoch)
        offsets = torch.randint(0, 2 * PAD + 1, (self.n, 2), generator=g)
        flips = torch.randint(0, 2, (self.n,), generator=g).bool()
        return offsets, flips

    def _plan(self, epoch: int) -> None:
        if self._epoch != epoch:
            self._perm = self.order(epoch).to(self.device)
            if self.augment:
                offsets, flips = self.augmentation(epoch)
                self._offsets, self._flips = offsets.to(self.device), flips.to(self.device)
            self._epoch = epoch

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, i = divmod(iteration, self.iterations_per_epoch)
        self._plan(epoch)
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]

    def raw_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uint8 images after crop and flip, labels, example indices) for this iteration."""
        idx = self.indices(iteration)
        if not self.augment:
            return self.images[idx], self.labels[idx], idx
        oy, ox = self._offsets[idx, 0], self._offsets[idx, 1]
        rows = oy[:, None] + self._rows
        cols = ox[:, None] + torch.where(self._flips[idx, None], self.w - 1 - self._cols, self._cols)
        x = self.images[idx[:, None, None, None], self._chan[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]
        return x, self.labels[idx], idx

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.raw_batch(iteration)
        return self.normalize(x), y
