"""A stage: one training folder of an archive (the trunk, its pre-training, an IMP level).

It holds `checkpoints/`, `metrics.csv` and TensorBoard events. Its checkpoints are listed,
with their sha256, in the manifest of the run that owns it; the manifest is the truth about
which checkpoints exist, so a file written just before a kill -9 but never recorded is
simply written again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rewind.archive import checkpoints as ck
from rewind.archive.manifest import Manifest
from rewind.archive.metrics import MetricsLog
from rewind.archive.tables import read_frame
from rewind.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

METRICS = "metrics.csv"


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    state: dict[str, Any] | None
    path: Path | None = None  # the weights file it was read from

    def into(self, model: torch.nn.Module) -> None:
        """Load the weights and buffers into `model` (every one it has, of its shapes), or refuse
        naming the file."""
        keys = model.state_dict().keys()
        try:
            model.load_state_dict({k: v for k, v in self.tensors.items() if k in keys})
        except RuntimeError as e:
            first = str(e).splitlines()[1 if len(str(e).splitlines()) > 1 else 0].strip()
            raise UserError(f"checkpoint {self.path} does not fit the model ({first[:160]}); "
                            f"{ck.recovery(self.path)}") from None

    def optimizer_into(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the optimizer state saved with it into `optimizer`, or refuse naming the file."""
        path = self.path.with_name(ck.state_name(self.step))
        try:
            optimizer.load_state_dict(self.state["optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise UserError(f"checkpoint state {path} does not fit the optimizer ({' '.join(str(e).split())[:160]}); "
                            f"{ck.recovery(path)}") from None

    @property
    def metrics_rows(self) -> int | None:
        """The rows metrics.csv held up to this step when it was saved (None: saved without the count)."""
        rows = self.metadata.get("metrics_rows", "")
        return int(rows) if rows.isdigit() else None


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

    def missing(self) -> list[Path]:
        """Weights files the manifest records for this stage that are not on disk (deleted since)."""
        keys = [k for k in self.manifest.files
                if k.startswith(f"{self.rel}/checkpoints/") and ck.step_of(k) is not None]
        return [self.manifest.root / k for k in sorted(keys) if not (self.manifest.root / k).exists()]

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
            if self._key(ck.tensor_name(step)) in self.manifest.files:
                raise UserError(f"checkpoint {self.checkpoint_dir / ck.tensor_name(step)} is missing (the manifest "
                                "records it, so it was deleted); restore it from a backup")
            held = ", ".join(map(str, self.steps())) or "none"
            raise UserError(f"{self.dir} holds no checkpoint at iteration {step}; it holds iterations: {held}")
        name = ck.tensor_name(step)
        tensors, metadata = ck.read_tensors(self.checkpoint_dir / name, self.manifest.files[self._key(name)])
        state = None
        if metadata.get("step", str(step)) != str(step):
            raise UserError(f"checkpoint {self.checkpoint_dir / name} holds iteration {metadata.get('step')!r}, not "
                            f"{step}; {ck.recovery(self.checkpoint_dir / name)}")
        if with_state:
            sname = ck.state_name(step)
            if not self.has(step, with_state=True):
                raise UserError(f"{self.checkpoint_dir / sname} (optimizer state at iteration {step}) is missing; "
                                f"restore it, or delete {self.checkpoint_dir / name} to fall back to the checkpoint "
                                "before it")
            state = ck.read_state(self.checkpoint_dir / sname, self.manifest.files[self._key(sname)])
        return Checkpoint(step, tensors, metadata, state, self.checkpoint_dir / name)

    def recovery(self) -> str:
        """How to recover from a damaged file of this stage: train the stage again (a trunk's, or one not
        complete, from its start), or the whole run (a complete branch, which is only read back)."""
        if self.rel.startswith("trunk") or self.manifest.data.get("status") != "complete":
            return (f"restore it from a backup, or delete {self.checkpoint_dir} and run the command that made it "
                    f"again to train {self.rel} from its start")
        return (f"restore it from a backup, or move {self.manifest.root} away and run the command that made it "
                "again to train that run anew")

    def metrics_key(self) -> str:
        return f"{self.rel}/{METRICS}"

    def metrics(self) -> "pd.DataFrame":
        """metrics.csv as a table, read only when whole: checked against the sha256 the manifest
        recorded when the run completed (`Run.complete`), else for its shape."""
        recorded = self.manifest.files.get(self.metrics_key()) if self.manifest.data["status"] == "complete" else None
        return read_frame(self.dir / METRICS, recorded, self.recovery(), ("split", "step"))

    def metrics_log(self, resume: Checkpoint | None, tensorboard: bool = True) -> MetricsLog:
        """The metrics.csv writer of a stage resumed from `resume` (None: started afresh), its rows
        checked against the count that checkpoint was saved with."""
        return MetricsLog(self.dir, None if resume is None else resume.step, tensorboard,
                          None if resume is None else resume.metrics_rows, self.recovery())

    def forget_metrics(self) -> None:
        """metrics.csv is about to change (a complete run's stage trained again from a checkpoint before
        its end): the sha256 recorded at completion no longer holds until the run completes again."""
        self.manifest.forget(self.metrics_key())
