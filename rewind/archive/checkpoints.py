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


def recovery(path: Path) -> str:
    """How to recover from a damaged checkpoint file: restore it, or delete the files of its step that
    exist (a run not yet complete then trains again from the checkpoint before it)."""
    step = step_of(path.name.replace(".state.pt", ".safetensors"))
    present = [path] if step is None else [p for p in (path.with_name(tensor_name(step)),
                                                       path.with_name(state_name(step))) if p.exists()]
    names = " and ".join(str(p) for p in present or [path])
    return (f"restore {'them' if len(present) > 1 else 'it'} from a backup, or delete {names}: a run not yet "
            "complete then trains again from the checkpoint before it")


def _verified(path: Path, expected: str | None, what: str = "checkpoint", advice: str | None = None) -> bytes:
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None
    if expected is not None and sha256(blob) != expected:
        raise UserError(f"{what} {path} is corrupt (its sha256 does not match the manifest); "
                        f"{advice or recovery(path)}")
    return blob


def read_tensors(path: Path, expected: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    blob = _verified(path, expected)
    try:
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, AttributeError) as e:
        raise UserError(f"checkpoint {path} is unreadable ({_one_line(e)}); {recovery(path)}") from None
    return tensors, metadata


def read_state(path: Path, expected: str | None) -> dict[str, Any]:
    """Optimizer, RNG and log state, checked to have the structure the trainer saves."""
    blob = _verified(path, expected)
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad pickles; all mean the same to a user
        raise UserError(f"checkpoint state {path} is unreadable ({type(e).__name__}); {recovery(path)}") from None
    if problem := _state_problem(state):
        raise UserError(f"checkpoint state {path} is damaged ({problem}); {recovery(path)}")
    return state


def _state_problem(state: Any) -> str | None:
    """What makes `state` no state the trainer saves, or None."""
    def numbers(d: Any, names: tuple[str, ...]) -> bool:
        return isinstance(d, dict) and all(isinstance(d.get(n), (int, float)) and not isinstance(d.get(n), bool)
                                           for n in names)

    def rng_tensor(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1

    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not the optimizer and RNG state"
    opt = state.get("optimizer")
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) for g in opt["param_groups"])):
        return "it has no optimizer state"
    rng = state.get("rng")
    if not (isinstance(rng, dict) and rng_tensor(rng.get("torch"))
            and ("cuda" not in rng or (isinstance(rng["cuda"], list) and all(map(rng_tensor, rng["cuda"]))))):
        return "it has no random-number-generator state"
    if "train_log" in state and not numbers(state["train_log"], ("loss", "correct", "count")):
        return "its training-log sums are damaged"
    if "fit" in state and not numbers(state["fit"], ("correct", "count")):
        return "its stopping-by-fit sums are damaged"
    return None


def read_masks(path: Path, expected: str | None, advice: str) -> dict[str, torch.Tensor]:
    """An IMP mask file: one bool tensor per prunable weight, checked against its sha256 when recorded."""
    blob = _verified(path, expected, "mask", advice)
    try:
        masks = st_load(blob)
    except (SafetensorError, ValueError) as e:
        raise UserError(f"mask {path} is unreadable ({_one_line(e)}); {advice}") from None
    if not masks or any(t.dtype != torch.bool for t in masks.values()):
        raise UserError(f"mask {path} is damaged (it does not hold one bool tensor per pruned weight); {advice}")
    return masks


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
