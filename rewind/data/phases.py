"""Phase transforms: what the trainer feeds the network at iteration t.

A `PhaseSchedule` applies every phase (`rewind.data.phase`: a pre-training mode or a deficit, active
on an iteration window) active at an iteration; with none active its batch is exactly
`loader.batch(t)`. Every random choice is keyed by the phase's seed and a tag of its own, so
batch t stays a pure function of t and the seeds (resumes and branches see the same batches).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from rewind import seeds
from rewind.data.loader import DeviceLoader
from rewind.data.phase import KINDS, Phase, parse, parse_list  # noqa: F401  (parse, parse_list: phases as written)
from rewind.data import sources
from rewind.data.sources import subset_size  # noqa: F401  (re-exported: pre-training sizes its subset)
from rewind.errors import UserError

# Kinds that change the batch; no-weight-decay only changes the optimizer.
_BATCH_KINDS = set(KINDS) - {"no-weight-decay"}


def num_outputs(phases: Sequence[Phase], num_classes: int) -> int:
    """The head size the network needs: rotation prediction is a 4-way task, everything else is not.

    Rotation is meant for a pre-training run of its own; the main run then gets a fresh head.
    """
    return 4 if any(p.kind == "rotation" for p in phases) else num_classes


class PhaseSchedule:
    """Applies every phase active at an iteration; plugs into `TrainState.phases`.

    Order inside one batch, whatever order the phases were listed in:
      source: `subset` and/or `no-augmentation` pick the loader the raw uint8 batch comes from;
      images: noise, vertical-flip, blur, rotation (rotation last: it sees the augmented image);
      labels: random-labels, label-permutation, rotation (rotation labels replace the others).
    Then `loader.normalize`, as for a plain batch. Two phases of one kind may not overlap.

    The auxiliary loaders (no augmentation, subset) are derived from the loader passed to
    `batch`: same data, batch size, seeds, normalisation and device, so a phase needs no extra
    wiring. Every transform works for any channel count and image size (rotation needs square
    images).
    """

    def __init__(self, phases: Sequence[Phase], num_classes: int = 10):
        self.phases = tuple(phases)
        self.num_classes = num_classes
        for i, a in enumerate(self.phases):
            for b in self.phases[i + 1:]:
                if a.kind == b.kind and a.overlaps(b):
                    raise UserError(f"phases {a} and {b} overlap; one {a.kind!r} phase at a time")
        for p in self.phases:
            if p.kind == "stage" and p.params["n"] + 1 > num_classes:
                raise UserError(f"{p.params['n']} stages need {p.params['n'] + 1} class groups (one per stage and "
                                f"the final one), and the data has {num_classes} classes; use at most "
                                f"{num_classes - 1} stages")
        self._bound: DeviceLoader | None = None
        self._cache: dict[tuple, object] = {}

    def active(self, iteration: int) -> list[Phase]:
        return [p for p in self.phases if p.active(iteration)]

    def weight_decay_factor(self, iteration: int) -> float:
        return 0.0 if any(p.kind == "no-weight-decay" for p in self.active(iteration)) else 1.0

    def num_outputs(self) -> int:
        return num_outputs(self.phases, self.num_classes)

    def batch(self, loader: DeviceLoader, iteration: int, position: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised float images, labels) for `iteration`; no host synchronisation.

        Windows are on the run's iterations; `position` (default `iteration`) is the loader's
        iteration, which differs when the run starts inside its schedule (`Plan.position`).
        """
        position = iteration if position is None else position
        on = {p.kind: p for p in self.active(iteration) if p.kind in _BATCH_KINDS}
        if not on:
            return loader.batch(position)
        if self._bound is not loader:  # tables and loaders below belong to one main loader
            self._bound, self._cache = loader, {}
        x, y, idx, epoch = self._source(loader, on, iteration, position)
        if "noise" in on:
            x = self._noise(on["noise"], iteration, x.shape, loader)
        if "vertical-flip" in on:
            x = x.flip(-2)
        if "blur" in on:
            x = blur(x, on["blur"].params["size"])
        # Labels come from seeded tables indexed by example (or by class), never by batch position.
        k, n = self.num_classes, loader.n
        if "random-labels" in on:
            y = self._table(on["random-labels"], lambda g: torch.randint(0, k, (n,), generator=g))[idx]
        if "label-permutation" in on:
            y = self._table(on["label-permutation"], lambda g: torch.randperm(k, generator=g))[y]
        if "rotation" in on:
            y = self._table(on["rotation"], lambda g: torch.randint(0, 4, (n,), generator=g), epoch)[idx]
            x = rotate(x, y)
        return loader.normalize(x), y

    def _source(self, loader: DeviceLoader, on: dict[str, Phase], iteration: int, position: int):
        """(uint8 images, labels, global example indices, epoch of the loader that made them)."""
        if "transition" in on:
            return self._transition(loader, on, iteration, position)
        subset = on.get("subset") or on.get("stage")  # a stage is a subset of its own (`subset_indices`)
        augment = loader.augment and "no-augmentation" not in on
        if subset is None and augment == loader.augment:
            src, t = loader, position
        else:
            src = self._loader(loader, subset, augment)
            # A subset has shorter epochs: count from the phase start so it begins a fresh epoch.
            t = iteration - subset.start if subset is not None else position
        x, y, idx = src.raw_batch(t)
        if subset is not None:
            idx = self.subset_indices(subset, loader)[idx]
        return x, y, idx, t // src.iterations_per_epoch

    def _transition(self, loader: DeviceLoader, on: dict[str, Phase], iteration: int, position: int):
        """Berariu et al.'s smooth transition (their Fig. 3 and A.2): each example of the batch is drawn
        on its own ("not a permutation"), from the full set with probability p = 1 - gamma^(50 n / N)
        (n the phase's step, N its length: `transition_probability`), else from the first phase's
        subset, uniformly and with replacement, so every batch is full (`transition_draw`). Each
        example is cropped and flipped as the loader does it in epoch n // (iterations per epoch)."""
        phase = on["transition"]
        augment = loader.augment and "no-augmentation" not in on
        src = loader if augment == loader.augment else self._loader(loader, None, augment)
        subset = self.subset_indices(Phase("subset", phase.start, phase.end, {"fraction": phase.params["fraction"]},
                                           phase.seed), loader)
        t = iteration - phase.start
        idx, _ = transition_draw(phase, t, loader.batch_size, loader.n, subset)
        epoch = t // loader.iterations_per_epoch
        x, y = src.gather(idx, epoch)
        return x, y, idx, epoch

    def examples(self, loader: DeviceLoader, iteration: int, position: int | None = None) -> torch.Tensor:
        """The training-set indices of the examples in the batch of `iteration`."""
        position = iteration if position is None else position
        on = {p.kind: p for p in self.active(iteration) if p.kind in _BATCH_KINDS}
        if not on:
            return loader.indices(position)
        if self._bound is not loader:
            self._bound, self._cache = loader, {}
        return self._source(loader, on, iteration, position)[2]

    def _loader(self, loader: DeviceLoader, subset: Phase | None, augment: bool) -> DeviceLoader:
        key = ("loader", subset, augment)
        if key not in self._cache:
            images, labels = loader.originals(), loader.labels  # the new loader pads its own
            if subset is not None:
                keep = self.subset_indices(subset, loader)
                images, labels = images[keep], labels[keep]
            self._cache[key] = loader.derived(images, labels, augment)
        return self._cache[key]

    def has_optimizer_resets(self) -> bool:
        return any(p.kind == "stage" and p.params["reset"] for p in self.phases)

    def resets_optimizer(self, iteration: int) -> bool:
        """Whether the optimizer state starts afresh at `iteration`: at each new stage of a `stage`
        schedule (reset=1), and at the end of the last one, where training on all the data begins."""
        return any(p.kind == "stage" and p.params["reset"] and
                   ((p.start == iteration and p.params["index"] > 1) or
                    (p.end == iteration and p.params["index"] == p.params["n"])) for p in self.phases)

    def subset_indices(self, phase: Phase, loader: DeviceLoader) -> torch.Tensor:
        """The sorted example indices of a subset phase (the same seed gives nested subsets), or of a
        stage: the parts of stages 1..index (`stage_parts`)."""
        key = ("subset", phase)
        if key not in self._cache and phase.kind == "stage":
            p = phase.params
            parts = stage_parts(loader.labels.cpu(), self.num_classes, p["n"], p["ratio"], phase.seed)
            self._cache[key] = torch.cat(parts[:p["index"]]).sort().values.to(loader.device)
        if key not in self._cache:
            self._cache[key] = sources.subset_indices(loader.n, phase.params["fraction"], phase.seed).to(loader.device)
        return self._cache[key]

    def _table(self, phase: Phase, draw, epoch: int | None = None) -> torch.Tensor:
        """A seeded lookup table on the loader's device, drawn once (per epoch when one is given)."""
        key = ("table", phase, epoch)
        if key not in self._cache:
            if epoch is not None:  # keep one epoch's table: older ones are never asked for again
                self._cache = {k: v for k, v in self._cache.items() if k[:2] != ("table", phase)}
            parts = (phase.seed, phase.kind) if epoch is None else (phase.seed, phase.kind, epoch)
            self._cache[key] = draw(seeds.generator(*parts)).to(self._bound.device)
        return self._cache[key]

    @staticmethod
    def _noise(phase: Phase, iteration: int, shape: torch.Size, loader: DeviceLoader) -> torch.Tensor:
        """Pixels that `loader.normalize` maps to N(0, 1) noise: Gaussian with the dataset's mean and std.

        Drawn from (seed, iteration) alone, so they carry nothing about the batch they replace;
        on the CPU as every stream is, then copied without blocking the host.
        """
        z = torch.randn(tuple(shape), generator=seeds.generator(phase.seed, "noise", iteration))
        if loader.device.type == "cuda":
            z = z.pin_memory()  # a copy from pageable memory would wait for the GPU to drain
        z = z.to(loader.device, non_blocking=True)
        return (z - loader.normalize.shift) / loader.normalize.scale


def transition_probability(gamma: float, step: torch.Tensor | int, steps: int) -> torch.Tensor:
    """p = 1 - gamma^(50 n / N): the probability that an example of the transition's batch `step` = n
    (counted from its start) comes from the full set rather than from the subset, N = `steps` being
    the transition's length, the whole run (Berariu et al. 2021, Fig. 3: "n is the current step and
    N the total number of steps"); p reaches 1 - gamma^50 at the end."""
    n = torch.as_tensor(step, dtype=torch.float64)
    return 1.0 - torch.as_tensor(gamma, dtype=torch.float64) ** (50.0 * n / steps)


def transition_draw(phase: Phase, step: int, size: int, examples: int, subset: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(example indices, from-the-full-set flags) of the `size` examples of the transition's batch
    `step`: each from the full set of `examples` with probability p (`transition_probability`),
    else from `subset` (indices into the full set), each uniformly and with replacement; drawn on
    the CPU from a stream keyed by the seed and the step, then moved to the subset's device."""
    g = seeds.generator(phase.seed, "transition", step)
    u = torch.rand(size, generator=g, dtype=torch.float64)
    take = u < transition_probability(phase.params["gamma"], step, phase.end - phase.start)
    full = torch.randint(0, examples, (size,), generator=g)
    position = torch.randint(0, len(subset), (size,), generator=g)
    device = subset.device
    take, full, position = (v.to(device, non_blocking=True) for v in (take, full, position))
    return torch.where(take, full, subset[position]), take


def stage_split(labels: torch.Tensor, num_classes: int, n: int, ratio: float, seed: int
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(class groups C_1..C_{n+1}, uniform pieces U_1..U_{n+1}) of `stage_parts`: the classes in a
    seeded order cut into n + 1 nearly equal groups; round(ratio * N) examples drawn without regard
    to class, cut into n + 1 nearly equal pieces."""
    g = seeds.generator(seed, "stages", n, float(ratio))
    classes = list(torch.randperm(num_classes, generator=g).tensor_split(n + 1))
    order = torch.randperm(len(labels), generator=g)
    return classes, list(order[:round(ratio * len(labels))].tensor_split(n + 1))


def stage_parts(labels: torch.Tensor, num_classes: int, n: int, ratio: float, seed: int) -> list[torch.Tensor]:
    """The n + 1 disjoint parts that n stages and the final one add to the training data (Berariu et
    al. 2021, A.3): part i is the uniform piece U_i and every example of the classes C_i outside the
    uniform part (`stage_split`). Stage i trains on parts 1..i; their union is the whole training
    set. Each part's indices sorted."""
    classes, uniform = stage_split(labels, num_classes, n, ratio, seed)
    outside = torch.ones(len(labels), dtype=torch.bool)
    outside[torch.cat(uniform)] = False
    return [torch.cat([u, torch.nonzero(outside & torch.isin(labels, c)).flatten()]).sort().values
            for u, c in zip(uniform, classes)]


def blur(x: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Antialiased bilinear downsampling to size x size, then bilinear upsampling back (float, 0..255)."""
    h, w = x.shape[-2:]
    low = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def rotate(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Example i rotated by exactly torch.rot90(x[i], r[i], dims=(-2, -1)); needs square images."""
    if x.shape[-1] != x.shape[-2]:
        raise UserError(f"rotation needs square images, these are {x.shape[-1]}x{x.shape[-2]}")
    views = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    return views[r, torch.arange(len(x), device=x.device)]
