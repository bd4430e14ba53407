"""The device a run trains on, from its `--device` setting (auto, cpu, cuda)."""

from __future__ import annotations

import torch

from rewind.errors import UserError


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when torch sees it, else the CPU; cuda where there is none: one line, exit 2."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)
