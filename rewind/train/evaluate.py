"""Test-set evaluation in large batches, with no host sync until the totals are read."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rewind.data.loader import Normalizer
from rewind.train.optim import new_graph_step

# Evaluation batch per device type: large, so a CPU's threads synchronise once per big layer
# rather than per small one, and a GPU is filled; one size that divides the test set keeps one
# compiled graph.
EVAL_BATCH = {"cpu": 1000, "cuda": 2500}


def eval_batch_size(device: torch.device | str) -> int:
    return EVAL_BATCH.get(torch.device(device).type, 1000)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_cpu_memory_reused = False


def reuse_cpu_memory() -> None:
    """Keep freed CPU memory in the process for the next tensor (glibc only; once per process).

    glibc serves every allocation over 32 MB (a ResNet-20 layer's output at 1000 images is 65 MB)
    with a fresh mmap and unmaps it when freed, so each layer of each batch page-faults its memory
    in again: measured on a 2-core CPU, about 40% of an evaluation's CPU time went to those faults.
    With no mmap and a high trim threshold the heap keeps that memory and hands it out again;
    the process's memory then stays at its peak. Nothing computed changes.
    """
    global _cpu_memory_reused
    if _cpu_memory_reused:
        return
    _cpu_memory_reused = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: its allocator decides
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer,
             batch_size: int | None = None, compile: str = "off") -> dict[str, float]:
    """Mean cross-entropy and accuracy (in [0, 1]) of `model` on uint8 `images`, in eval mode.
    `batch_size`: default `eval_batch_size(device)`; `compile`: how `model` was compiled (`optim.compiled`).

    Under inference mode (no autograd bookkeeping at all), except with CUDA graphs, which keep
    no_grad as before: how their trees behave under inference mode is not tried on a GPU yet."""
    batch_size = batch_size or eval_batch_size(images.device)
    if images.device.type == "cpu":
        reuse_cpu_memory()
    with torch.no_grad() if compile == "graphs" else torch.inference_mode():
        return _evaluate(model, images, labels, normalize, batch_size, compile)


def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer,
              batch_size: int, compile: str) -> dict[str, float]:
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(labels), batch_size):
        x, y = normalize(images[i:i + batch_size]), labels[i:i + batch_size]
        new_graph_step(compile)  # the last batch's logits are consumed: CUDA graphs may reuse their memory
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = len(labels)
    return {"loss": loss.item() / n, "acc": correct.item() / n}


def evaluate_state(state: Any, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """`evaluate` of a TrainState's model as training runs it: through its compiled forward when
    it has one (evaluation is then captured too, as its own graph)."""
    if state.forward is not None:
        return evaluate(state.forward, images, labels, state.loader.normalize, compile=state.compile)
    return evaluate(state.model, images, labels, state.loader.normalize)
