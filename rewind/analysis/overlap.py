"""Overlap of two masks (e.g. IMP masks found from different rewind points), whole network and per layer.

- `jaccard` = |A & B| / |A | B| over the kept entries (1 for identical masks, 0 for disjoint
  ones); two masks that keep nothing count as identical (1).
- `hamming` = #{i : A_i != B_i} / N, the fraction of all N positions where the masks disagree.

Per-layer columns are `layer/<module>/jaccard` and `layer/<module>/hamming`, as in
`rewind.train.early`.
"""

from __future__ import annotations

import torch

from rewind.train.early import column, layer_of, to_floats, whole_first
from rewind.errors import UserError
from rewind.prune.masks import Masks


def overlap(a: Masks, b: Masks) -> dict[str, float]:
    if a.keys() != b.keys():
        raise UserError(f"the masks cover different layers: {sorted(set(a) ^ set(b))[:5]}")
    inter, union, differ, count = {}, {}, {}, {}
    for name in a:
        if a[name].shape != b[name].shape:
            raise UserError(f"mask {name} has shape {tuple(a[name].shape)} in one and {tuple(b[name].shape)} in the other")
        x, y = a[name].bool(), b[name].to(a[name].device).bool()
        inter[name], union[name], differ[name], count[name] = (x & y).sum(), (x | y).sum(), (x ^ y).sum(), x.numel()
    out = {"jaccard": _jaccard(sum(inter.values()), sum(union.values())),
           "hamming": sum(differ.values()) / sum(count.values())}
    for name in a:
        out[column("jaccard", layer_of(name))] = _jaccard(inter[name], union[name])
        out[column("hamming", layer_of(name))] = differ[name] / count[name]
    return to_floats(whole_first(out))


def _jaccard(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    return torch.where(union > 0, inter / union.clamp(min=1), 1.0)
