"""nnU-Net's training augmentation, built from ``batchgenerators`` transforms.

Patches are sampled larger than the network patch (:func:`enlarged_patch_size`) so that rotation and scaling
never pull in padding; ``SpatialTransform`` then rotates/scales and centre-crops to the network patch.
Probabilities (DESIGN.md §4): rotation .2, scale .2 (0.7–1.4), noise .1, blur .2, brightness .15, contrast .15,
low resolution .25, gamma .3 (+ inverted gamma .1), mirroring .5 per axis.

Layouts: ``data`` float32 (B, C, *S), ``seg`` float32 (B, 1, *S) with -1 for "outside the image"; after the
pipeline -1 becomes 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                         ContrastAugmentationTransform, GammaTransform)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

ANISO_THRESHOLD = 3.0
SCALE_RANGE = (0.7, 1.4)
#: scale range nnU-Net uses when sizing the enlarged patch
PATCH_SCALE_RANGE = (0.85, 1.25)


@dataclass(frozen=True)
class AugmentationPlan:
    """Rotation ranges (radians, per axis), whether 3D patches are augmented slice-wise, mirror axes."""

    rotation: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    dummy_2d: bool
    mirror_axes: tuple[int, ...]


def augmentation_plan(patch_size: Sequence[int]) -> AugmentationPlan:
    """nnU-Net's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` rules."""
    deg = np.pi / 180
    zero = (0.0, 0.0)
    if len(patch_size) == 2:
        r = 15 * deg if max(patch_size) / min(patch_size) > 1.5 else 180 * deg
        return AugmentationPlan(((-r, r), zero, zero), False, (0, 1))
    dummy_2d = max(patch_size) / patch_size[0] > ANISO_THRESHOLD
    if dummy_2d:
        return AugmentationPlan(((-180 * deg, 180 * deg), zero, zero), True, (0, 1, 2))
    r = (-30 * deg, 30 * deg)
    return AugmentationPlan((r, r, r), False, (0, 1, 2))


def enlarged_patch_size(patch_size: Sequence[int], aug: AugmentationPlan) -> tuple[int, ...]:
    """The patch to sample so that the largest rotation and the smallest scale stay inside real data."""
    angles = [min(max(abs(a) for a in r), np.pi / 2) for r in aug.rotation]
    spatial = np.array(patch_size[-2:] if aug.dummy_2d else patch_size, float)
    shape = spatial.copy()
    if len(spatial) == 3:
        for i in range(3):
            rot = [0.0, 0.0, 0.0]
            rot[i] = angles[i]
            shape = np.maximum(np.abs(rotate_coords_3d(spatial, *rot)), shape)
    else:
        shape = np.maximum(np.abs(rotate_coords_2d(spatial, angles[0])), shape)
    shape = (shape / min(PATCH_SCALE_RANGE)).astype(int)
    if aug.dummy_2d:
        return (int(patch_size[0]), *(int(s) for s in shape))
    return tuple(int(s) for s in shape)


class _To2D(AbstractTransform):
    """(B, C, Z, Y, X) → (B, C·Z, Y, X) so a slice-wise spatial transform can run (nnU-Net's dummy 2D)."""

    def __call__(self, **d):
        for k in ("data", "seg"):
            b, c, z = d[k].shape[:3]
            d[f"_{k}_shape"] = (c, z)
            d[k] = d[k].reshape(b, c * z, *d[k].shape[3:])
        return d


class _To3D(AbstractTransform):
    def __call__(self, **d):
        for k in ("data", "seg"):
            c, z = d.pop(f"_{k}_shape")
            d[k] = d[k].reshape(d[k].shape[0], c, z, *d[k].shape[2:])
        return d


def training_transforms(patch_size: Sequence[int], aug: AugmentationPlan) -> Compose:
    """The nnU-Net v2 training pipeline (batchgenerators version)."""
    spatial_patch = tuple(patch_size[-2:]) if aug.dummy_2d else tuple(patch_size)
    (rx, ry, rz) = aug.rotation
    t: list[AbstractTransform] = []
    if aug.dummy_2d:
        t.append(_To2D())
    t.append(SpatialTransform(
        spatial_patch, patch_center_dist_from_border=None, do_elastic_deform=False, alpha=(0, 0), sigma=(0, 0),
        do_rotation=True, angle_x=rx, angle_y=ry, angle_z=rz, p_rot_per_axis=1, do_scale=True, scale=SCALE_RANGE,
        border_mode_data="constant", border_cval_data=0, order_data=3, border_mode_seg="constant",
        border_cval_seg=-1, order_seg=1, random_crop=False, p_el_per_sample=0, p_scale_per_sample=0.2,
        p_rot_per_sample=0.2, independent_scale_for_each_axis=False))
    if aug.dummy_2d:
        t.append(_To3D())
    ignore_axes = (0,) if aug.dummy_2d else None
    t += [
        GaussianNoiseTransform(p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(p_per_sample=0.15),
        SimulateLowResolutionTransform(zoom_range=(0.5, 1), per_channel=True, p_per_channel=0.5, order_downsample=0,
                                       order_upsample=3, p_per_sample=0.25, ignore_axes=ignore_axes),
        GammaTransform((0.7, 1.5), True, True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), False, True, retain_stats=True, p_per_sample=0.3),
    ]
    if aug.mirror_axes:
        t.append(MirrorTransform(aug.mirror_axes))
    t.append(RemoveLabelTransform(-1, 0))
    return Compose(t)


def validation_transforms() -> Compose:
    """No augmentation: only "outside the image" (-1) becomes background."""
    return Compose([RemoveLabelTransform(-1, 0)])
