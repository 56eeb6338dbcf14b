"""The ``nnunet`` preset: nnU-Net v2.8.1's default ``ExperimentPlanner`` rules, read from its code.

Fingerprint → target spacing (median; anisotropy rule) → transpose (largest spacing first) → per configuration:
initial patch (aspect ∝ 1/spacing, volume 256³ / 2048², clipped to the median shape) → topology
(:mod:`planners.topology`) → shrink the patch while the feature-map proxy exceeds the 8 GB reference → batch size.
A ``3d_lowres`` configuration is added when the full-resolution patch covers < 25 % of the median image.

Subclasses change the budget (:meth:`NnUNetPlanner.too_large`, :meth:`NnUNetPlanner.batch_size`) or the
settings, never the spacing and topology rules.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from planners.topology import pool_and_conv_props
from sauronnet.dataset import RawDataset
from sauronnet.fingerprint import Fingerprint
from sauronnet.networks.estimates import feature_map_elements, forward_flops
from sauronnet.plans import ConfigurationPlan, NetworkPlan, Plans
from sauronnet.preprocessing.normalize import MASKABLE, scheme_for_channel
from sauronnet.preprocessing.resample import compute_new_shape

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerSettings:
    """Constants of nnU-Net v2.8.1's ExperimentPlanner (``default_experiment_planner.py``)."""

    base_features: int = 32
    max_features_3d: int = 320
    max_features_2d: int = 512
    convs_per_stage: int = 2
    reference_elements_3d: float = 560e6
    reference_elements_2d: float = 85e6
    reference_batch_3d: int = 2
    reference_batch_2d: int = 12
    reference_gb: float = 8.0
    memory_target_gb: float = 8.0
    min_batch_size: int = 2
    max_dataset_covered: float = 0.05
    anisotropy_threshold: float = 3.0
    lowres_creation_threshold: float = 0.25
    lowres_spacing_increase: float = 1.03
    initial_patch_edge_3d: int = 256
    initial_patch_edge_2d: int = 2048


class NnUNetPlanner:
    """Plans ``3d_fullres``, ``2d`` and, when nnU-Net would, ``3d_lowres``."""

    preset = "nnunet"

    def __init__(self, settings: PlannerSettings | None = None):
        self.settings = settings or PlannerSettings()

    # ---- spacing and transpose -------------------------------------------------------------------------------
    def target_spacing(self, fp: Fingerprint) -> np.ndarray:
        """Median spacing; for anisotropic datasets the 10th percentile of the coarse axis (not below the others)."""
        spacings = np.asarray(fp.spacings, float)
        target = np.percentile(spacings, 50, axis=0)
        sizes = np.percentile(np.asarray(fp.shapes_after_crop, float), 50, axis=0)
        worst = int(np.argmax(target))
        others = [i for i in range(len(target)) if i != worst]
        other_spacings = [target[i] for i in others]
        aniso_spacing = target[worst] > self.settings.anisotropy_threshold * max(other_spacings)
        aniso_voxels = sizes[worst] * self.settings.anisotropy_threshold < min(sizes[i] for i in others)
        if aniso_spacing and aniso_voxels:
            t = np.percentile(spacings[:, worst], 10)
            if t < max(other_spacings):
                t = max(max(other_spacings), t) + 1e-5
            target[worst] = t
        return target

    @staticmethod
    def transpose(target_spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(forward, backward) axis orders putting the largest-spacing axis first."""
        worst = int(np.argmax(target_spacing))
        forward = (worst, *[i for i in range(len(target_spacing)) if i != worst])
        backward = tuple(forward.index(i) for i in range(len(forward)))
        return forward, backward

    # ---- budget (what presets change) ------------------------------------------------------------------------
    def features(self, n_stages: int, dim: int) -> tuple[int, ...]:
        cap = self.settings.max_features_2d if dim == 2 else self.settings.max_features_3d
        return tuple(min(cap, self.settings.base_features * 2 ** i) for i in range(n_stages))

    def _reference(self, dim: int) -> tuple[float, int]:
        s = self.settings
        ref = (s.reference_elements_2d if dim == 2 else s.reference_elements_3d) * (s.memory_target_gb / s.reference_gb)
        return ref, (s.reference_batch_2d if dim == 2 else s.reference_batch_3d)

    def too_large(self, net: NetworkPlan, patch: Sequence[int], n_in: int, n_classes: int) -> bool:
        """nnU-Net's memory proxy at the minimum batch size exceeds the reference."""
        ref, ref_bs = self._reference(net.dim)
        estimate = feature_map_elements(net, patch, n_classes)
        return estimate / ref_bs * 2 > ref

    def batch_size(self, net: NetworkPlan, patch: Sequence[int], n_in: int, n_classes: int,
                   n_voxels_dataset: float) -> int:
        """Use the memory headroom for a larger batch, but never see more than 5 % of the dataset in one batch."""
        ref, ref_bs = self._reference(net.dim)
        estimate = feature_map_elements(net, patch, n_classes)
        bs = round(ref / estimate * ref_bs)
        return self._cap_batch(bs, patch, n_voxels_dataset)

    def _cap_batch(self, bs: int, patch: Sequence[int], n_voxels_dataset: float) -> int:
        five_percent = round(n_voxels_dataset * self.settings.max_dataset_covered / np.prod(patch, dtype=np.float64))
        return int(max(min(bs, five_percent), self.settings.min_batch_size))

    # ---- one configuration -----------------------------------------------------------------------------------
    def _network(self, topo, dim: int) -> NetworkPlan:
        n = len(topo.strides)
        c = self.settings.convs_per_stage
        return NetworkPlan(self.features(n, dim), topo.kernel_sizes, topo.strides, (c,) * n, (c,) * (n - 1))

    def initial_patch(self, spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
        """Aspect ∝ 1/spacing at the volume of edge^dim, clipped to the median shape.

        Not rounded after clipping: a median of 64.5 voxels must pad up to 72, as in nnU-Net.
        """
        tmp = 1 / np.asarray(spacing, float)
        edge = self.settings.initial_patch_edge_2d if len(spacing) == 2 else self.settings.initial_patch_edge_3d
        patch = [round(float(i)) for i in tmp * (edge ** len(spacing) / np.prod(tmp)) ** (1 / len(spacing))]
        return [min(float(p), float(m)) for p, m in zip(patch, median_shape)]

    def plan_configuration(self, spacing: Sequence[float], median_shape: Sequence[float], n_voxels_dataset: float,
                           channel_names: Sequence[str], n_classes: int, median_relative_size: float,
                           ) -> ConfigurationPlan:
        """Patch, topology and batch size for one target spacing (array order)."""
        spacing = [float(s) for s in spacing]
        dim = len(spacing)
        n_in = len(channel_names)
        topo = pool_and_conv_props(spacing, self.initial_patch(spacing, median_shape))
        net = self._network(topo, dim)
        while self.too_large(net, topo.patch_size, n_in, n_classes):
            patch = list(topo.patch_size)
            axis = int(np.argsort([p / m for p, m in zip(patch, median_shape)])[-1])
            # Subtract the divisor recomputed one step down, so valid sizes like 224 (= 7·32) are not skipped.
            trial = list(patch)
            trial[axis] -= topo.shape_must_be_divisible_by[axis]
            divisor = pool_and_conv_props(spacing, trial).shape_must_be_divisible_by
            patch[axis] -= divisor[axis]
            topo = pool_and_conv_props(spacing, patch)
            net = self._network(topo, dim)
        bs = self.batch_size(net, topo.patch_size, n_in, n_classes, n_voxels_dataset)
        schemes = tuple(scheme_for_channel(c) for c in channel_names)
        use_mask = tuple((s in MASKABLE) and median_relative_size < 0.75 for s in schemes)
        return ConfigurationPlan(
            spacing=tuple(spacing), patch_size=tuple(int(p) for p in topo.patch_size), batch_size=int(bs),
            median_image_size_in_voxels=tuple(float(m) for m in median_shape),
            normalization_schemes=schemes, use_mask_for_norm=use_mask,
            resampling_data_order=3, resampling_data_order_z=0, resampling_seg_order=1, resampling_seg_order_z=0,
            resampling_probabilities_order=1, batch_dice=False, network=net,
            estimated_forward_gflops=forward_flops(net, topo.patch_size, n_in, n_classes, batch_size=bs) / 1e9)

    # ---- the whole plan --------------------------------------------------------------------------------------
    def plan(self, dataset: RawDataset, fp: Fingerprint) -> Plans:
        """Plans every configuration nnU-Net would make for this dataset."""
        target = self.target_spacing(fp)
        forward, backward = self.transpose(target)
        fwd = list(forward)
        new_shapes = [compute_new_shape(shape, sp, target) for sp, shape in zip(fp.spacings, fp.shapes_after_crop)]
        median_shape = np.median(np.asarray(new_shapes, float), axis=0)[fwd]
        spacing_t = target[fwd]
        n_vox = float(np.prod(median_shape, dtype=np.float64) * dataset.num_training)
        args = dict(channel_names=dataset.channel_names, n_classes=len(dataset.labels),
                    median_relative_size=fp.median_relative_size_after_cropping)
        configs: dict[str, ConfigurationPlan] = {}
        if median_shape[0] != 1:
            full = self.plan_configuration(spacing_t, median_shape, n_vox, **args)
            low = self._plan_lowres(full, median_shape, dataset.num_training, args)
            configs["3d_fullres"] = _with_batch_dice(full, low is not None)
            if low is not None:
                configs["3d_lowres"] = _with_batch_dice(low, False)
        configs["2d"] = _with_batch_dice(self.plan_configuration(spacing_t[1:], median_shape[1:], n_vox, **args), True)
        return Plans(
            dataset_name=dataset.name, preset=self.preset, channel_names=dataset.channel_names,
            labels=dict(dataset.labels),
            original_median_spacing_after_transp=tuple(float(s) for s in np.median(fp.spacings, 0)[fwd]),
            original_median_shape_after_transp=tuple(int(round(s)) for s in np.median(fp.shapes_after_crop, 0)[fwd]),
            transpose_forward=tuple(forward), transpose_backward=tuple(backward),
            foreground_intensity_properties_per_channel=fp.foreground_intensity_properties_per_channel,
            configurations=configs)

    def _plan_lowres(self, full: ConfigurationPlan, median_shape: np.ndarray, num_training: int,
                     args: dict) -> ConfigurationPlan | None:
        """nnU-Net's 3d_lowres search: coarsen the spacing by 3 % steps until the patch covers ≥ 25 %."""
        full_spacing = np.asarray(full.spacing, float)
        median_vox = float(np.prod(median_shape, dtype=np.float64))
        patch_vox = float(np.prod(full.patch_size, dtype=np.float64))
        low_spacing = full_spacing.copy()
        low = None
        while patch_vox / median_vox < self.settings.lowres_creation_threshold:
            max_spacing = low_spacing.max()
            coarse = max_spacing / low_spacing > 2
            if np.any(coarse):
                low_spacing[coarse] *= self.settings.lowres_spacing_increase
            else:
                low_spacing *= self.settings.lowres_spacing_increase
            median_vox = float(np.prod(full_spacing / low_spacing * median_shape, dtype=np.float64))
            low_shape = tuple(round(float(i)) for i in full_spacing / low_spacing * median_shape)
            low = self.plan_configuration(low_spacing, low_shape, median_vox * num_training, **args)
            patch_vox = float(np.prod(low.patch_size, dtype=np.float64))
        if low is not None and np.prod(median_shape, dtype=np.float64) / median_vox < 2:
            logger.info("3d_lowres dropped: its images would be less than 2x smaller than 3d_fullres")
            return None
        return low


def _with_batch_dice(cfg: ConfigurationPlan, batch_dice: bool) -> ConfigurationPlan:
    return replace(cfg, batch_dice=batch_dice)
