"""Model names without torch: what `resnet20`, `resnet18`, `vgg16`, `wrn16-8`, `lenet300-100`,
`mlp100-100` and `allcnn` name, and which settings each takes. Settings are checked against these
(`rewind.config`) before anything loads torch; `rewind.models` builds the networks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rewind.errors import UserError

NAMES = "resnet<6n+2> (resnet20, resnet56, ...), resnet18, vgg11, vgg13, vgg16, vgg19, wrn<6n+4>-<k> (wrn16-8), " \
        "lenet<h1>-<h2>... (lenet300-100), mlp<h1>-<h2>... (mlp100-100), allcnn"
VGG_DEPTHS = (11, 13, 16, 19)


@dataclass(frozen=True)
class Name:
    """What a model name says: its family, the numbers in it (depth; depth and k; hidden sizes), its
    default width (0: it takes no --width) and whether it takes --blocks."""

    name: str
    family: str  # resnet (CIFAR, 6n+2), resnet18, vgg, wrn, lenet, mlp or allcnn
    numbers: tuple[int, ...]
    default_width: int
    takes_blocks: bool


def parse(name: str) -> Name:
    """The Name of `name`; UserError naming the valid names otherwise."""
    if m := re.fullmatch(r"resnet(\d+)", name):
        depth = int(m[1])
        if depth == 18:
            return Name(name, "resnet18", (18,), 64, True)
        if depth >= 8 and (depth - 2) % 6 == 0:
            return Name(name, "resnet", (depth,), 16, False)
    if (m := re.fullmatch(r"vgg(\d+)", name)) and int(m[1]) in VGG_DEPTHS:
        return Name(name, "vgg", (int(m[1]),), 64, False)
    if (m := re.fullmatch(r"wrn(\d+)-(\d+)", name)) and int(m[1]) >= 10 and (int(m[1]) - 4) % 6 == 0 and int(m[2]) >= 1:
        return Name(name, "wrn", (int(m[1]), int(m[2])), 0, False)
    if (m := re.fullmatch(r"(lenet|mlp)(\d+(?:-\d+)*)", name)) and all(int(h) > 0 for h in m[2].split("-")):
        return Name(name, m[1], tuple(int(h) for h in m[2].split("-")), 0, False)
    if name == "allcnn":
        return Name(name, "allcnn", (), 96, False)
    raise UserError(f"unknown model {name!r}; models: {NAMES}")


def check(name: str, width: int | None = 0, blocks: int = 0) -> Name:
    """The Name of `name` after checking that `width` and `blocks` (0 or None = the model's default) apply to it."""
    n = parse(name)
    width = width or 0
    if width < 0 or blocks < 0:
        raise UserError(f"width and blocks must be positive (or 0 for the model's default); got {width}, {blocks}")
    if width and not n.default_width:
        raise UserError(f"{name} takes no --width (its size is in its name); drop --width")
    if blocks and not n.takes_blocks:
        raise UserError(f"--blocks applies to resnet18 only (blocks per stage); {name}'s depth is in its name")
    return n


def resolved_width(name: str, width: int = 0) -> int:
    """`width` as the model builds it: the model's default for 0 (0 for models that take none)."""
    return width or parse(name).default_width
