"""nnU-Net's network-topology rule (``get_pool_and_conv_props``, nnU-Net v2.8.1), as pure functions.

Pool an axis while its feature map is ≥ 2·min_edge (8) voxels and its spacing is within 2× of the smallest
spacing among the poolable axes; a single poolable axis needs ≥ 3·min_edge (12). Kernels are 1 on an axis until
its (pooled) spacing comes within 2× of the smallest spacing, then 3; the bottleneck gets 3 on every axis.
The patch is then padded up to a multiple of 2^(pools per axis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: nnU-Net's ``UNet_featuremap_min_edge_length``.
MIN_FEATURE_MAP_EDGE = 4


@dataclass(frozen=True)
class Topology:
    """Result of the rule: strides per stage (stage 0 is all ones), kernels per stage, and the padded patch."""

    num_pool_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    shape_must_be_divisible_by: tuple[int, ...]


def pad_shape(shape: Sequence[int], divisor: Sequence[int]) -> tuple[int, ...]:
    """Rounds every axis of ``shape`` up to a multiple of ``divisor``."""
    return tuple(int(math.ceil(s / d) * d) for s, d in zip(shape, divisor))


def pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[int],
                        min_edge: int = MIN_FEATURE_MAP_EDGE) -> Topology:
    """nnU-Net's topology for a target ``spacing`` and an initial ``patch_size`` (array order)."""
    dim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [float(s) for s in patch_size]
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        valid = [i for i in range(dim) if cur_size[i] >= 2 * min_edge]
        if not valid:
            break
        min_valid_spacing = min(cur_spacing[i] for i in valid)
        valid = [i for i in valid if cur_spacing[i] / min_valid_spacing < 2]
        if len(valid) == 1 and cur_size[valid[0]] < 3 * min_edge:
            break
        if not valid:
            break
        for d in range(dim):
            if kernel[d] != 3 and cur_spacing[d] / min(cur_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for v in valid:
            stride[v] = 2
            num_pool[v] += 1
            cur_spacing[v] *= 2
            cur_size[v] = math.ceil(cur_size[v] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dim)
    divisor = tuple(2 ** n for n in num_pool)
    return Topology(tuple(num_pool), tuple(strides), tuple(kernels), pad_shape(patch_size, divisor), divisor)

