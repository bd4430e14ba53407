"""Named, independent random streams derived from a seed and a tag.

Every random choice in rewind (init, data order, augmentation, subsets, labels) draws
from its own generator keyed by (seed, tag, ...) so that changing one stream never
shifts another, and a resumed run redraws exactly what an uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive(*parts: object) -> int:
    """A 63-bit seed that depends on every part and on nothing else (stable across runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator for the stream named by `parts`; CPU so that CPU and GPU runs draw alike."""
    import torch  # here: `derive` serves settings checks that load no torch

    return torch.Generator().manual_seed(derive(*parts))
