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

import math

import torch

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


def _kernel(shape: torch.Size, size: int) -> list[int]:
    return [size if s > 1 else 1 for s in shape[2:]]


def _float(dtype: torch.dtype) -> torch.dtype:
    """The dtype the distances are computed in: float32, float64 stays float64 (fp16/bf16 cannot hold the eps)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pool(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Average pooling with kernel = stride = ``size`` on spatial axes longer than 1 (kernel 1 elsewhere; a
    remainder is dropped, as ``avg_pool`` does), in float32 (float64 stays float64) whatever ``x``'s dtype.

    Computed as sums of strided slices, one axis at a time: ``avg_pool3d`` on a channels-last float32 tensor
    (the layout of the training step's block outputs) was 8× slower than on a contiguous one, and it has no
    bfloat16 kernel, which cost a full-size float32 copy of every block output.
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, *S) with 2 or 3 spatial axes, got shape {tuple(x.shape)}")
    kernel = _kernel(x.shape, size)
    out = x
    for axis, k in enumerate(kernel, start=2):
        if k == 1:
            continue
        windows = out.narrow(axis, 0, out.shape[axis] - out.shape[axis] % k).unflatten(axis, (-1, k))
        summed = windows.select(axis + 1, 0).to(_float(x.dtype), copy=out is x)
        for i in range(1, k):
            summed += windows.select(axis + 1, i)
        out = summed
    return out.to(_float(x.dtype)) / math.prod(kernel)


def normalise_maps(x: torch.Tensor, how: str) -> torch.Tensor:
    """Each (sample, channel) map of ``x`` (B, C, *S) normalised over all spatial axes, in float32 (float64 stays
    float64)."""
    x = x.to(_float(x.dtype))
    spatial = tuple(range(2, x.ndim))
    if how == "raw":
        return x
    if how == "minmax":
        lo = x.amin(dim=spatial, keepdim=True)
        return (x - lo) / (x.amax(dim=spatial, keepdim=True) - lo + RANGE_EPS)
    if how == "zscore":
        mean = x.mean(dim=spatial, keepdim=True)
        std = x.std(dim=spatial, keepdim=True, unbiased=False)
        return (x - mean) / (std + STD_EPS)
    raise ValueError(f"unknown score maps {how!r}; choose one of {', '.join(SCORE_MAPS)}")


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S): every map of ``x`` (B, C, *S) flattened; a view of a contiguous or channels-last ``x``."""
    last = x.movedim(1, -1)
    return last.flatten(1, -2).transpose(1, 2) if last.is_contiguous() else x.flatten(2)


class _NormalisedPool(torch.autograd.Function):
    """Every (sample, channel) map min-max normalised over all its spatial axes, then average-pooled: the maps
    δ_opt compares, in float32 (float64 stays float64), with a hand-written backward.

    Min-max normalisation is affine per map, so it commutes with pooling: normalising the pooled maps is the same
    function. Autograd's own backward of it (a float32 copy, amin, amax, avg_pool3d) cost full-resolution float32
    copies of every block output and its gradient, masks of the extremes, and an addition to the network's own
    gradient in another memory format: as much as the rest of the training step. This backward writes one
    gradient in ``x``'s dtype and memory format, and adds each map's minimum's and maximum's share at the
    position ``torch.min``/``torch.max`` pick (at tied extremes a subgradient, as ``min(dim)`` gives).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pool_size: int) -> torch.Tensor:
        dtype = _float(x.dtype)
        flat = _flat(x)
        lo, lo_at = flat.min(dim=2)
        hi, hi_at = flat.max(dim=2)
        shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
        low = lo.to(dtype).reshape(shape)
        scale = hi.to(dtype).reshape(shape) - low + RANGE_EPS
        normed = (pool(x, pool_size) - low) / scale
        ctx.pool_size, ctx.shape, ctx.dtype = pool_size, x.shape, x.dtype
        ctx.channels_last = x.movedim(1, -1).is_contiguous() and not x.is_contiguous()
        ctx.save_for_backward(lo_at, hi_at, scale, normed)
        return normed

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lo_at, hi_at, scale, normed = ctx.saved_tensors
        spatial = tuple(range(2, normed.ndim))
        g = grad / scale
        d_lo = ((normed - 1) * g).sum(dim=spatial)  # ∂normed/∂lo = (normed - 1) / scale
        d_hi = -(normed * g).sum(dim=spatial)  # ∂normed/∂hi = -normed / scale
        layout = torch.contiguous_format if not ctx.channels_last else \
            torch.channels_last_3d if len(ctx.shape) == 5 else torch.channels_last
        out = torch.empty(ctx.shape, dtype=ctx.dtype, device=grad.device, memory_format=layout)
        kernel = _kernel(ctx.shape, ctx.pool_size)
        # the pooling's share: each pooled value's gradient spread evenly over its window (0 on a remainder)
        if any(s % k for s, k in zip(ctx.shape[2:], kernel)):
            out.zero_()
        covered = out[(slice(None), slice(None)) + tuple(slice(0, s - s % k) for s, k in zip(ctx.shape[2:], kernel))]
        for axis in reversed(range(len(kernel))):
            covered = covered.unflatten(2 + axis, (-1, kernel[axis]))
        per_voxel = g / math.prod(kernel)
        covered.copy_(per_voxel.reshape(*g.shape[:2], *[n for s in g.shape[2:] for n in (s, 1)]))
        # the extremes' share, at their positions (indexing ``out`` itself: a scatter into its flattened view
        # would copy a channels-last tensor twice)
        batch, channel = torch.meshgrid(torch.arange(ctx.shape[0], device=out.device),
                                        torch.arange(ctx.shape[1], device=out.device), indexing="ij")
        for at, d in ((lo_at, d_lo), (hi_at, d_hi)):
            out.index_put_((batch, channel, *torch.unravel_index(at, ctx.shape[2:])), d.to(out.dtype),
                           accumulate=True)
        return out, None


def delta_opt(output: torch.Tensor, pool_size: int = 2) -> torch.Tensor | None:
    """The clustering term of one layer (differentiable, float32); None when the layer has a single channel."""
    if output.shape[1] < 2:
        return None
    spatial = tuple(range(2, output.ndim))
    normed = _NormalisedPool.apply(output, pool_size)
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
