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

from sauronnet.networks.topology import IMAGE, layers, prunable
from sauronnet.plans import NetworkPlan


def _stage_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial size of each encoder stage's output (integer division, as nnU-Net's estimate does)."""
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // st for s, st in zip(size, stride)]
        sizes.append(size)
    return sizes


def _sizes_of(net: NetworkPlan, patch_size: Sequence[int]) -> list[int]:
    return [int(np.prod(size, dtype=np.int64)) for size in _stage_sizes(patch_size, net.strides)]


def _counted(layer, n_dec: int, deep_supervision: bool) -> bool:
    """Heads count only where the network computes them (every decoder stage with deep supervision)."""
    return layer.kind != "head" or deep_supervision or int(layer.name[4:]) == n_dec - 1


def feature_map_elements(net: NetworkPlan, patch_size: Sequence[int], num_classes: int,
                         deep_supervision: bool = False) -> int:
    """Sum of the sizes of all conv/transposed-conv/head outputs for one sample (nnU-Net's VRAM proxy)."""
    vox = _sizes_of(net, patch_size)
    return int(sum((layer.planned or num_classes) * vox[layer.stage] for layer in layers(net)
                   if _counted(layer, net.n_stages - 1, deep_supervision)))


def forward_flops(net: NetworkPlan, patch_size: Sequence[int], in_channels: int, num_classes: int,
                  batch_size: int = 1, deep_supervision: bool = True,
                  widths: Sequence[int] | None = None) -> int:
    """Forward FLOPs of the PlainConvUNet for one batch.

    Args:
        widths: optional per-layer output widths overriding the plan (a pruned network), in the order of
            :func:`sauronnet.networks.topology.prunable` (encoder convs stage by stage, then for each decoder
            stage: transposed conv, its convs). None means the plan's widths.
    """
    vox = _sizes_of(net, patch_size)
    planned = prunable(net)
    given = list(widths) if widths is not None else [layer.planned for layer in planned]
    width = {layer.name: w for layer, w in zip(planned, given)}
    flops = 0
    for layer in layers(net):
        if not _counted(layer, net.n_stages - 1, deep_supervision):
            continue
        c_in = sum(in_channels if src == IMAGE else width[src] for src in layer.inputs)
        c_out = num_classes if layer.kind == "head" else width[layer.name]
        # a transposed conv's kernel (= stride) slides over its low-resolution input
        positions = vox[layer.stage + 1] if layer.kind == "up" else vox[layer.stage]
        flops += 2 * c_in * c_out * int(np.prod(layer.kernel)) * positions
    return int(flops) * batch_size
