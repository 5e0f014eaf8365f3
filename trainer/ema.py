"""The exponential moving average (EMA) of the denoiser's weights (``train.ema_decay``): what
validation scores and denoise uses when it is on."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

EMA_WARMUP = 10  # the EMA decay ramps as (1 + t) / (EMA_WARMUP + t) up to train.ema_decay


def ema_copy(model: nn.Module, state: dict[str, Any] | None = None) -> nn.Module:
    """A frozen copy of ``model`` in eval mode, loaded with ``state`` when given (resume)."""
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    if state is not None:
        ema.load_state_dict(state)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """``ema ← ema + (1 - d) (w - ema)`` with ``d = min(decay, (1 + step) / (10 + step))``: the
    usual warm-up of the decay, so that early averages are not dominated by the init. Buffers
    are copied as they are."""
    d = min(float(decay), (1 + step) / (EMA_WARMUP + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - d)
    for ema_b, b in zip(ema.buffers(), model.buffers()):
        ema_b.copy_(b)
