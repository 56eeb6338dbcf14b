"""Cost estimates of a planned U-Net, without building it (pure numpy; the planner must not import torch).

- :func:`feature_map_elements`: nnU-Net's memory proxy (``PlainConvUNet.compute_conv_feature_map_size`` of
  dynamic_network_architectures 0.4.x, deep supervision off), compared by the planner against its reference
  560e6 (3D) / 85e6 (2D) per 8 GB.
- :func:`forward_flops`: FLOPs of one forward pass counted like ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and transposed convolutions only, 1 MAC = 2 FLOP, no bias).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sauronnet.plans import NetworkPlan


def _stage_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial size of each encoder stage's output (integer division, as nnU-Net's estimate does)."""
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // st for s, st in zip(size, stride)]
        sizes.append(size)
    return sizes


def feature_map_elements(net: NetworkPlan, patch_size: Sequence[int], num_classes: int,
                         deep_supervision: bool = False) -> int:
    """Sum of the sizes of all conv/transposed-conv/head outputs for one sample (nnU-Net's VRAM proxy)."""
    f = net.features_per_stage
    sizes = _stage_sizes(patch_size, net.strides)
    total = 0
    for s, size in enumerate(sizes):
        total += net.n_conv_per_stage_encoder[s] * f[s] * int(np.prod(size, dtype=np.int64))
    n_dec = net.n_stages - 1
    for d in range(n_dec):
        target = n_dec - 1 - d  # decoder stage d produces encoder stage `target`'s resolution and width
        vox = int(np.prod(sizes[target], dtype=np.int64))
        total += net.n_conv_per_stage_decoder[d] * f[target] * vox  # conv blocks
        total += f[target] * vox  # transposed conv
        if deep_supervision or d == n_dec - 1:
            total += num_classes * vox
    return int(total)


def forward_flops(net: NetworkPlan, patch_size: Sequence[int], in_channels: int, num_classes: int,
                  batch_size: int = 1, deep_supervision: bool = True,
                  widths: Sequence[int] | None = None) -> int:
    """Forward FLOPs of the PlainConvUNet for one batch.

    Args:
        widths: optional per-conv output widths overriding the plan (a pruned network), in the order
            encoder convs stage by stage, then for each decoder stage: transposed conv, its convs.
            None means the plan's widths.
    """
    f = net.features_per_stage
    sizes = _stage_sizes(patch_size, net.strides)
    it = iter(widths) if widths is not None else None

    def width(default: int) -> int:
        return next(it) if it is not None else default

    flops, c_in = 0, in_channels
    enc_out = []
    for s in range(net.n_stages):
        vox = int(np.prod(sizes[s], dtype=np.int64))
        k = int(np.prod(net.kernel_sizes[s]))
        for _ in range(net.n_conv_per_stage_encoder[s]):
            c_out = width(f[s])
            flops += 2 * c_in * c_out * k * vox
            c_in = c_out
        enc_out.append(c_in)
    n_dec = net.n_stages - 1
    for d in range(n_dec):
        target = n_dec - 1 - d
        low_vox = int(np.prod(sizes[target + 1], dtype=np.int64))
        vox = int(np.prod(sizes[target], dtype=np.int64))
        up = width(f[target])
        flops += 2 * c_in * up * int(np.prod(net.strides[target + 1])) * low_vox
        c_in = up + enc_out[target]
        k = int(np.prod(net.kernel_sizes[target]))
        for _ in range(net.n_conv_per_stage_decoder[d]):
            c_out = width(f[target])
            flops += 2 * c_in * c_out * k * vox
            c_in = c_out
        if deep_supervision or d == n_dec - 1:
            flops += 2 * c_in * num_classes * vox
    return int(flops) * batch_size
