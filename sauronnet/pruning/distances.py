"""Sauron's two feature-map distances (DESIGN.md §5).

Layouts: a layer output ``O`` is (B, C, *S) with S = (Z, Y, X) or (Y, X). Both distances compare every channel
with a reference channel after average pooling with kernel/stride 2 on every spatial axis longer than 1.

- :func:`delta_opt` (with gradients, added to the loss): reference = channel 0; each channel of each sample is
  min-max normalised over *all* its spatial axes (range + 1e-8); ``d_c = sqrt(mean_space (r - O_c)^2 + 1e-8)``;
  the value is the mean over batch and channels 1..C-1. ``None`` for C = 1 (nothing to cluster).
- :func:`delta_prune` (no gradients, the pruning score): reference ``k``; raw maps; ``d_c`` as above without
  eps; each sample's vector divided by its max over channels (+1e-15); mean over the batch → (C,) in [0, 1],
  ``d_k = 0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OPT_EPS = 1e-8
RANGE_EPS = 1e-8
PRUNE_EPS = 1e-15


def pool(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Average pooling with kernel = stride = ``size`` on spatial axes longer than 1 (kernel 1 elsewhere)."""
    kernel = [size if s > 1 else 1 for s in x.shape[2:]]
    if x.ndim == 5:
        return F.avg_pool3d(x, kernel, kernel)
    if x.ndim == 4:
        return F.avg_pool2d(x, kernel, kernel)
    raise ValueError(f"expected (B, C, *S) with 2 or 3 spatial axes, got shape {tuple(x.shape)}")


def delta_opt(output: torch.Tensor, pool_size: int = 2) -> torch.Tensor | None:
    """The clustering term of one layer (differentiable); None when the layer has a single channel."""
    if output.shape[1] < 2:
        return None
    spatial = tuple(range(2, output.ndim))
    lo = output.amin(dim=spatial, keepdim=True)
    hi = output.amax(dim=spatial, keepdim=True)
    normed = pool((output - lo) / (hi - lo + RANGE_EPS), pool_size)
    diff = normed[:, :1] - normed[:, 1:]
    d = torch.sqrt(diff.pow(2).mean(dim=spatial) + OPT_EPS)  # (B, C-1)
    return d.mean()


@torch.no_grad()
def delta_prune(output: torch.Tensor, reference: int, pool_size: int = 2) -> torch.Tensor:
    """Per-channel pruning score (C,) in [0, 1] relative to channel ``reference`` (whose score is 0)."""
    spatial = tuple(range(2, output.ndim))
    pooled = pool(output.float(), pool_size)
    d = torch.sqrt((pooled[:, reference:reference + 1] - pooled).pow(2).mean(dim=spatial))  # (B, C)
    d = d / (d.amax(dim=1, keepdim=True) + PRUNE_EPS)
    return d.mean(0)
