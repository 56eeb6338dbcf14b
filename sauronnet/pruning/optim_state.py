"""Keeping optimizer state consistent with pruned parameters.

Every state tensor shaped like the parameter before the cut (SGD ``momentum_buffer``, Adam ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``) is cut the same way; scalars such as ``step`` are left alone. Works for any
optimizer that keys its state by parameter object.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sauronnet.pruning.surgery import Slice


@torch.no_grad()
def slice_optimizer_state(optimizer: torch.optim.Optimizer, slices: Sequence[Slice]) -> None:
    """Applies each :class:`Slice` to the optimizer state of its parameter (in order)."""
    for s in slices:
        state = optimizer.state.get(s.param)
        if not state:
            continue
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and tuple(value.shape) == s.old_shape:
                state[key] = value.index_select(s.dim, s.index.to(value.device)).contiguous()
