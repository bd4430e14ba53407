"""Optimizers (SGD, Adam, AdamW, RMSprop), the compile settings of the training step, and
optimizer state restored under a mask."""

from __future__ import annotations

import os

import torch
from torch import nn

from rewind.archive.stage import Checkpoint
from rewind.config import TrainConfig, optimizer_settings

_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}


def make_optimizer(model: nn.Module, t: TrainConfig, kind: str | None = None) -> torch.optim.Optimizer:
    """The optimizer `kind` (default: `t.optimizer`) over all parameters, with `t`'s settings.

    Fused on CUDA where torch has a fused kernel (SGD, Adam, AdamW: one kernel for all
    parameters), foreach elsewhere (the same math). The learning rate and weight decay are set
    by the plan before every step; the values given here are placeholders.
    """
    kind = kind or t.optimizer
    cuda = next(model.parameters()).device.type == "cuda"
    kernel = {"fused": True} if cuda and kind != "rmsprop" else {"foreach": True}
    return _CLASSES[kind](model.parameters(), lr=t.lr, weight_decay=t.weight_decay, **optimizer_settings(t, kind),
                          **kernel)


@torch.no_grad()
def load_masked(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint, model: nn.Module,
                masks: dict[str, torch.Tensor]) -> None:
    """Load the optimizer state (momentum, Adam's moments, ...) saved with `checkpoint` and zero it at
    pruned entries, so a rewound optimizer carries nothing into weights that are pruned now."""
    checkpoint.optimizer_into(optimizer)
    for name, p in model.named_parameters():
        if name not in masks:
            continue
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                value.mul_(masks[name].to(value.device, value.dtype))


def compile_setting(setting: str, device: torch.device) -> str:
    """`auto` resolved for `device`: on for CUDA, off elsewhere; other settings as given."""
    if setting == "auto":
        return "on" if device.type == "cuda" else "off"
    return setting


def compiled(model: nn.Module, setting: str):
    """The compiled forward for a resolved setting (on, graphs), or None for off (eager).
    `REWIND_COMPILE_BACKEND` picks the backend (tests use 'eager' to run the same wrapping on CPU
    without code generation)."""
    if setting == "off":
        return None
    # CUDA graphs replay the captured kernels in one launch; inductor skips them on CPU.
    mode = "reduce-overhead" if setting == "graphs" else None
    # Each shape is its own graph: two batch sizes (an epoch's short last batch) in training and
    # evaluation, and every stacked N a sweep's runs pass through as they join. Past the limit
    # torch would silently run eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(model, backend=os.environ.get("REWIND_COMPILE_BACKEND", "inductor"), dynamic=False, mode=mode)


def new_graph_step(setting: str) -> None:
    """With CUDA graphs (`graphs`), tell their trees that a new step begins, so the last step's
    outputs (already consumed) may be overwritten."""
    if setting == "graphs":
        torch.compiler.cudagraph_mark_step_begin()


def autocast_dtype(t: TrainConfig) -> torch.dtype | None:
    """The training forward's autocast dtype for `precision`, or None for plain fp32."""
    return torch.bfloat16 if t.precision == "bf16" else None
