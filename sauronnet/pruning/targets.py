"""Per-layer widths that meet a forward-FLOP target, for the baselines compared at matched compression.

Li et al. (L1) and He et al. (FPGM) prune the same fraction of every layer; the uniform-width baseline scales
every width by the same factor. Both are :func:`uniform_widths` of one ratio, and :func:`match_flops` finds
the ratio whose network's forward FLOPs (``sauronnet.networks.complexity``, counted on the meta device, so
no arithmetic runs) lie nearest the target.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from sauronnet.networks.complexity import measure
from sauronnet.networks.unet import build_network, default_widths
from sauronnet.plans import NetworkPlan


def uniform_widths(planned: Mapping[str, int], ratio: float) -> dict[str, int]:
    """Every layer with ``ratio`` of its channels removed (rounded, at least one kept)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must lie in [0, 1), got {ratio}")
    return {k: max(1, round(w * (1 - ratio))) for k, w in planned.items()}


def forward_flops(plan: NetworkPlan, in_channels: int, num_classes: int, widths: Mapping[str, int] | None,
                  patch_size: Sequence[int]) -> int:
    """FLOPs of one batch-1 inference forward pass of the network at ``widths``."""
    with torch.device("meta"):
        net = build_network(plan, in_channels, num_classes, widths, deep_supervision=False)
    return measure(net, patch_size).flops


def match_flops(plan: NetworkPlan, in_channels: int, num_classes: int, patch_size: Sequence[int],
                target_flops: float, planned: Mapping[str, int] | None = None) -> tuple[dict[str, int], int]:
    """Widths with one pruning ratio for every layer (up to one channel) whose forward FLOPs lie nearest
    ``target_flops``; returns (widths, their FLOPs).

    The ratio is found by bisection with rounded widths. A network's first layers run at full resolution, so one
    of their few channels can be worth a tenth of the FLOPs; the rounded widths are therefore also refined:
    from every layer's ideal width rounded down, layers gain back one channel each, largest remainder first, as
    long as the total stays within the target. The nearer of the two results is returned.

    Args:
        planned: the widths the ratio applies to (default: the plan's full widths).
    """
    planned = dict(planned or default_widths(plan))
    counted: dict[tuple[int, ...], int] = {}

    def flops(w: Mapping[str, int]) -> int:  # the bisection meets the same rounded widths again and again
        key = tuple(w[k] for k in planned)
        if key not in counted:
            counted[key] = forward_flops(plan, in_channels, num_classes, w, patch_size)
        return counted[key]

    lo, hi = 0.0, 1.0 - 1e-9  # FLOPs fall as the ratio rises
    best = (planned, flops(planned))
    for _ in range(40):
        mid = (lo + hi) / 2
        widths = uniform_widths(planned, mid)
        f = flops(widths)
        if abs(f - target_flops) < abs(best[1] - target_flops):
            best = (widths, f)
        if f > target_flops:
            lo = mid
        else:
            hi = mid
    ideal = {k: w * (1 - (lo + hi) / 2) for k, w in planned.items()}
    widths = {k: max(1, min(planned[k], math.floor(v))) for k, v in ideal.items()}
    f = flops(widths)
    for k in sorted(ideal, key=lambda k: ideal[k] - math.floor(ideal[k]), reverse=True):
        if widths[k] < planned[k]:
            trial = {**widths, k: widths[k] + 1}
            ft = flops(trial)
            if ft <= target_flops:
                widths, f = trial, ft
    if abs(f - target_flops) < abs(best[1] - target_flops):
        best = (widths, f)
    return best
