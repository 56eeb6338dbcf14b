"""Sauron's two feature-map distances (DESIGN.md §5).

Layouts: a layer output ``O`` is (B, C, *S) with S = (Z, Y, X) or (Y, X). Both distances compare every channel
with a reference channel after average pooling with kernel/stride 2 on every spatial axis longer than 1. Both
are computed in float32 whatever the autocast dtype of ``O`` (fp16's range cannot hold the 1e-8 epsilons).

- :func:`delta_opt` (with gradients, added to the loss): reference = channel 0; each channel of each sample is
  min-max normalised over *all* its spatial axes (range + 1e-8); ``d_c = sqrt(mean_space (r - O_c)^2 + 1e-8)``;
  the value is the mean over batch and channels 1..C-1. ``None`` for C = 1 (nothing to cluster).
- :func:`delta_prune` (no gradients, the pruning score): reference ``k``; the maps as seen through
  :data:`SCORE_MAPS` (see there); ``d_c`` as above without eps; each sample's vector divided by its max over
  channels (+1e-15); mean over the batch → (C,) in [0, 1], ``d_k = 0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OPT_EPS = 1e-8
RANGE_EPS = 1e-8
STD_EPS = 1e-8
PRUNE_EPS = 1e-15

#: How δ_prune sees each channel of each sample before pooling.
#:
#: - ``raw``: the block output as it is (the reference code's rule). The reference network's InstanceNorm has no
#:   affine parameters, so there a raw map is already a standardised one; ours (nnU-Net's blocks) multiply by a
#:   per-channel γ and add β, and an exact scaled copy of the reference channel can score 1.0.
#: - ``zscore``: each map standardised over its spatial axes (mean 0, std 1): what the reference's raw maps
#:   were, invariant to every channel's positive scale and offset.
#: - ``minmax``: each map min-max normalised over its spatial axes: the same view as the clustering term
#:   δ_opt, so the clusters δ_opt builds are the ones δ_prune measures; also invariant to scale and offset.
SCORE_MAPS = ("raw", "zscore", "minmax")


def pool(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Average pooling with kernel = stride = ``size`` on spatial axes longer than 1 (kernel 1 elsewhere)."""
    kernel = [size if s > 1 else 1 for s in x.shape[2:]]
    if x.ndim == 5:
        return F.avg_pool3d(x, kernel, kernel)
    if x.ndim == 4:
        return F.avg_pool2d(x, kernel, kernel)
    raise ValueError(f"expected (B, C, *S) with 2 or 3 spatial axes, got shape {tuple(x.shape)}")


def _minmax_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (sample, channel) map's minimum and range + eps over all spatial axes, shaped (B, C, 1, ...)."""
    spatial = tuple(range(2, x.ndim))
    lo = x.amin(dim=spatial, keepdim=True)
    return lo, x.amax(dim=spatial, keepdim=True) - lo + RANGE_EPS


def normalise_maps(x: torch.Tensor, how: str) -> torch.Tensor:
    """Each (sample, channel) map of ``x`` (B, C, *S) normalised over all spatial axes, in float32 (float64 stays
    float64)."""
    x = x if x.dtype == torch.float64 else x.float()
    spatial = tuple(range(2, x.ndim))
    if how == "raw":
        return x
    if how == "minmax":
        lo, scale = _minmax_bounds(x)
        return (x - lo) / scale
    if how == "zscore":
        mean = x.mean(dim=spatial, keepdim=True)
        std = x.std(dim=spatial, keepdim=True, unbiased=False)
        return (x - mean) / (std + STD_EPS)
    raise ValueError(f"unknown score maps {how!r}; choose one of {', '.join(SCORE_MAPS)}")


def delta_opt(output: torch.Tensor, pool_size: int = 2) -> torch.Tensor | None:
    """The clustering term of one layer (differentiable, float32); None when the layer has a single channel."""
    if output.shape[1] < 2:
        return None
    spatial = tuple(range(2, output.ndim))
    x = output if output.dtype == torch.float64 else output.float()
    lo, scale = _minmax_bounds(x)
    # min-max normalisation is affine per map, so it commutes with average pooling: normalising the pooled maps
    # is the same function, without two full-resolution passes (and their backward) per layer and step
    normed = (pool(x, pool_size) - lo) / scale
    diff = normed[:, :1] - normed[:, 1:]
    d = torch.sqrt(diff.pow(2).mean(dim=spatial) + OPT_EPS)  # (B, C-1)
    return d.mean()


@torch.no_grad()
def delta_prune(output: torch.Tensor, reference: int, pool_size: int = 2, maps: str = "raw") -> torch.Tensor:
    """Per-channel pruning score (C,) in [0, 1] relative to channel ``reference`` (whose score is 0).

    Args:
        output: a layer's output (B, C, *S), any float dtype.
        reference: the reference channel k.
        pool_size: pooling kernel of the distance.
        maps: how each map is seen before pooling, one of :data:`SCORE_MAPS`.
    """
    spatial = tuple(range(2, output.ndim))
    pooled = pool(normalise_maps(output, maps), pool_size)
    d = torch.sqrt((pooled[:, reference:reference + 1] - pooled).pow(2).mean(dim=spatial))  # (B, C)
    d = d / (d.amax(dim=1, keepdim=True) + PRUNE_EPS)
    return d.mean(0)
