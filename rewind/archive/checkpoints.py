"""Checkpoint files: `itNNNNNNNN.safetensors` (weights, buffers, masks) and `.state.pt` (optimizer, RNG).

Nothing here unpickles arbitrary objects: tensors come from safetensors, state from
torch.load(weights_only=True), and every file's sha256 is checked against the manifest first.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from rewind.archive.atomic import write_bytes
from rewind.errors import UserError

_NAME = re.compile(r"^it(\d{8})\.safetensors$")


def tensor_name(step: int) -> str:
    return f"it{step:08d}.safetensors"


def state_name(step: int) -> str:
    return f"it{step:08d}.state.pt"


def step_of(name: str) -> int | None:
    m = _NAME.match(Path(name).name)
    return int(m[1]) if m else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                   metadata={k: str(v) for k, v in metadata.items()})
    write_bytes(path, blob)
    return sha256(blob)


def write_state(path: Path, state: dict[str, Any]) -> str:
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    write_bytes(path, blob)
    return sha256(blob)


def _verified(path: Path, expected: str | None) -> bytes:
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if expected is not None and sha256(blob) != expected:
        raise UserError(
            f"checkpoint {path} is corrupt (its sha256 does not match the manifest); delete it and its "
            ".state.pt to fall back to the checkpoint before it, or restore it from a backup"
        )
    return blob


def read_tensors(path: Path, expected: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    blob = _verified(path, expected)
    try:
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8:8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError) as e:
        raise UserError(f"checkpoint {path} is unreadable ({e}); delete it or restore it from a backup") from None
    return tensors, metadata


def read_state(path: Path, expected: str | None) -> dict[str, Any]:
    blob = _verified(path, expected)
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad pickles; all mean the same to a user
        raise UserError(f"checkpoint state {path} is unreadable ({type(e).__name__}); delete it or restore it") from None
