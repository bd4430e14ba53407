"""The optimizer of the recipe: SGD with momentum and weight decay on all parameters."""

from __future__ import annotations

import os

import torch
from torch import nn

from rewind.config import TrainConfig


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.SGD:
    """SGD; fused on CUDA (one kernel for all parameters), foreach elsewhere (the same math)."""
    cuda = next(model.parameters()).device.type == "cuda"
    # The learning rate is set by the plan before every step; this value is only a placeholder.
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                           nesterov=t.nesterov, fused=True if cuda else None, foreach=None if cuda else True)


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
