"""A stage: one training folder of an archive (the trunk, its pre-training, an IMP level).

It holds `checkpoints/`, `metrics.csv` and TensorBoard events. Its checkpoints are listed,
with their sha256, in the manifest of the run that owns it; the manifest is the truth about
which checkpoints exist, so a file written just before a kill -9 but never recorded is
simply written again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rewind.archive import checkpoints as ck
from rewind.archive.manifest import Manifest
from rewind.errors import UserError


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    state: dict[str, Any] | None


class Stage:
    def __init__(self, manifest: Manifest, rel: str):
        self.manifest = manifest
        self.rel = rel.strip("/")
        self.dir = manifest.root / self.rel

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def _key(self, name: str) -> str:
        return f"{self.rel}/checkpoints/{name}"

    def steps(self) -> list[int]:
        """Steps whose weights are recorded in the manifest and present on disk."""
        out = []
        for key in self.manifest.files:
            if key.startswith(f"{self.rel}/checkpoints/") and (step := ck.step_of(key)) is not None:
                if (self.manifest.root / key).exists():
                    out.append(step)
        return sorted(out)

    def has(self, step: int, with_state: bool = False) -> bool:
        keys = [ck.tensor_name(step)] + ([ck.state_name(step)] if with_state else [])
        return all(self._key(k) in self.manifest.files and (self.checkpoint_dir / k).exists() for k in keys)

    def save(self, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any],
             state: dict[str, Any] | None = None) -> None:
        """Write the files, then record them: a kill between the two leaves an unrecorded, ignored file."""
        shas = {ck.tensor_name(step): ck.write_tensors(self.checkpoint_dir / ck.tensor_name(step), tensors,
                                                        {"step": step, **metadata})}
        if state is not None:
            shas[ck.state_name(step)] = ck.write_state(self.checkpoint_dir / ck.state_name(step), state)
        for name, sha in shas.items():
            self.manifest.files[self._key(name)] = sha
        self.manifest.save()

    def load(self, step: int, with_state: bool = False) -> Checkpoint:
        if not self.has(step):
            held = ", ".join(map(str, self.steps())) or "none"
            raise UserError(f"{self.dir} holds no checkpoint at iteration {step}; it holds iterations: {held}")
        name = ck.tensor_name(step)
        tensors, metadata = ck.read_tensors(self.checkpoint_dir / name, self.manifest.files[self._key(name)])
        state = None
        if with_state:
            sname = ck.state_name(step)
            if not self.has(step, with_state=True):
                raise UserError(f"{self.checkpoint_dir / sname} (optimizer state at iteration {step}) is missing; "
                                "restore it, or delete the checkpoint to fall back to the one before it")
            state = ck.read_state(self.checkpoint_dir / sname, self.manifest.files[self._key(sname)])
        return Checkpoint(step, tensors, metadata, state)
