"""Device-resident batches: uint8 images live on the training device; order and augmentation are seeded.

The batch for iteration t is a pure function of (t, order_seed, aug_seed), so a run resumed at
any iteration, or a branch that starts at iteration k, sees exactly the batches an
uninterrupted run would have seen.

- order: a permutation per epoch drawn from (order_seed, epoch);
- augmentation: each example's crop offset and flip drawn from (aug_seed, epoch) for the
  whole dataset and indexed by example, so it does not depend on the order. 'crop+flip' is a
  random crop of the image zero-padded by 4 and a horizontal flip with probability 1/2;
  'crop' the same crop (the same offsets) without flip; 'none' the images as they are.

How a dataset is fed (its normalisation and default augmentation) belongs to the dataset: build
loaders with `DeviceLoader.from_dataset` and normalisers with `Normalizer.from_dataset`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from rewind import seeds, steps
from rewind.data.sources import AUGMENTATIONS

if TYPE_CHECKING:
    from rewind.data.sources import Dataset

PAD = 4


class Normalizer:
    """uint8 [B, C, H, W] -> float32 (x / 255 - mean) / std per channel, channels-last."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str):
        if len(mean) != len(std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} have different channel counts")
        self.mean, self.std = tuple(mean), tuple(std)
        std_t = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    @classmethod
    def from_dataset(cls, data: Dataset, device: torch.device | str) -> Normalizer:
        return cls(data.mean, data.std, device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != len(self.mean):  # broadcasting would silently make 1 channel 3
            raise ValueError(f"images with {x.shape[1]} channels, normalisation for {len(self.mean)}")
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
    """Seeded batches of `images` (uint8 [N, C, H, W]) and `labels` on `device`, augmented as
    `augmentation` says (one of AUGMENTATIONS) and normalised with `mean` and `std`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, order_seed: int,
                 aug_seed: int, *, augmentation: str, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu"):
        if augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation {augmentation!r} is not one of {AUGMENTATIONS}")
        if images.shape[1] != len(mean):
            raise ValueError(f"images with {images.shape[1]} channels, normalisation for {len(mean)}")
        self.n, _, self.h, self.w = images.shape
        self.batch_size = batch_size
        self.order_seed, self.aug_seed, self.augmentation = order_seed, aug_seed, augmentation
        self.device = torch.device(device)
        self.images = device_copy(images, self.device, self.augment)
        self.labels = labels.to(self.device)
        self.normalize = Normalizer(mean, std, self.device)
        self._epoch: int | None = None
        self._rows = torch.arange(self.h, device=self.device)
        self._cols = torch.arange(self.w, device=self.device)
        self._chan = torch.arange(images.shape[1], device=self.device)

    @classmethod
    def from_dataset(cls, data: Dataset, batch_size: int, order_seed: int, aug_seed: int, augment: bool,
                     device: torch.device | str) -> DeviceLoader:
        """The training loader of `data`: its normalisation, and its default augmentation if
        `augment` (the config's `augment`), else none."""
        return cls(data.train_x, data.train_y, batch_size, order_seed, aug_seed,
                   augmentation=data.augmentation if augment else "none", mean=data.mean, std=data.std,
                   device=device)

    def derived(self, images: torch.Tensor, labels: torch.Tensor, augment: bool) -> DeviceLoader:
        """A loader of other images (a subset of these, say) with this one's batch size, seeds,
        normalisation and device, and its augmentation if `augment`, else none."""
        return DeviceLoader(images, labels, self.batch_size, self.order_seed, self.aug_seed,
                            augmentation=self.augmentation if augment else "none", mean=self.normalize.mean,
                            std=self.normalize.std, device=self.device)

    @property
    def augment(self) -> bool:
        """Whether the images are cropped (and so held padded)."""
        return self.augmentation != "none"

    def originals(self) -> torch.Tensor:
        """The training images as stored (uint8, unpadded, on the device)."""
        return self.images[:, :, PAD:-PAD, PAD:-PAD] if self.augment else self.images

    @property
    def iterations_per_epoch(self) -> int:
        return steps.iterations_per_epoch(self.n, self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=seeds.generator(self.order_seed, "order", epoch))

    def augmentation_draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets [N, 2] in 0..2*PAD, flips [N] bool) for every example of this epoch; the
        flips are all False unless the augmentation flips."""
        g = seeds.generator(self.aug_seed, "augment", epoch)
        offsets = torch.randint(0, 2 * PAD + 1, (self.n, 2), generator=g)
        if self.augmentation != "crop+flip":
            return offsets, torch.zeros(self.n, dtype=torch.bool)
        return offsets, torch.randint(0, 2, (self.n,), generator=g).bool()

    def _plan(self, epoch: int) -> None:
        if self._epoch != epoch:
            self._perm = self.order(epoch).to(self.device)
            if self.augment:
                offsets, flips = self.augmentation_draws(epoch)
                self._offsets, self._flips = offsets.to(self.device), flips.to(self.device)
            self._epoch = epoch

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, i = divmod(iteration, self.iterations_per_epoch)
        self._plan(epoch)
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]

    def raw_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uint8 images after crop and flip, labels, example indices) for this iteration."""
        idx = self.indices(iteration)
        x, y = self.gather(idx, iteration // self.iterations_per_epoch)
        return x, y, idx

    def gather(self, idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images after this epoch's crop and flip, labels) of the examples `idx` (on the device)."""
        if not self.augment:
            return self.images[idx], self.labels[idx]
        self._plan(epoch)
        oy, ox = self._offsets[idx, 0], self._offsets[idx, 1]
        rows = oy[:, None] + self._rows
        cols = ox[:, None] + torch.where(self._flips[idx, None], self.w - 1 - self._cols, self._cols)
        x = self.images[idx[:, None, None, None], self._chan[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]
        return x, self.labels[idx]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.raw_batch(iteration)
        return self.normalize(x), y
