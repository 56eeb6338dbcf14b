"""Plans: what the planner decided, as typed frozen dataclasses written to ``plans.json``.

A human may read and edit plans.json; loading is strict (unknown or missing keys raise with the file name).
Spatial tuples are in array order after ``transpose_forward`` (the largest-spacing axis first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sauronnet.fingerprint import IntensityStats
from sauronnet.serialization import load_dataclass, write_json_atomic


@dataclass(frozen=True)
class NetworkPlan:
    """nnU-Net PlainConvUNet topology.

    Attributes:
        features_per_stage: output channels of each encoder stage (the decoder mirrors them).
        kernel_sizes: conv kernel per stage.
        strides: stride of each stage's first conv (stage 0: all ones); also the transposed-conv kernels.
        n_conv_per_stage_encoder: conv blocks per encoder stage.
        n_conv_per_stage_decoder: conv blocks per decoder stage (one fewer stage than the encoder).
    """

    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_conv_per_stage_encoder: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.features_per_stage)
        if not (len(self.kernel_sizes) == len(self.strides) == len(self.n_conv_per_stage_encoder) == n
                and len(self.n_conv_per_stage_decoder) == n - 1):
            raise ValueError(f"network plan lists disagree on the number of stages ({n}): {self}")
        if n < 1 or any(f < 1 for f in self.features_per_stage):
            raise ValueError(f"features_per_stage must be positive widths, got {list(self.features_per_stage)}")
        dims = {len(k) for k in self.kernel_sizes} | {len(s) for s in self.strides}
        if len(dims) != 1 or dims.pop() not in (2, 3):
            raise ValueError("kernel_sizes and strides must all have 2 or 3 entries per stage, got "
                             f"{list(self.kernel_sizes)} and {list(self.strides)}")
        if any(k < 1 for ks in self.kernel_sizes for k in ks) or any(s < 1 for st in self.strides for s in st):
            raise ValueError(f"kernel_sizes and strides must be positive, got {list(self.kernel_sizes)} and "
                             f"{list(self.strides)}")
        if any(c < 1 for c in (*self.n_conv_per_stage_encoder, *self.n_conv_per_stage_decoder)):
            raise ValueError("n_conv_per_stage_encoder/decoder must be at least 1 per stage")

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def dim(self) -> int:
        return len(self.strides[0])


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration (``3d_fullres``, ``2d``, ``3d_lowres``).

    Attributes:
        spacing: target spacing, transposed array order, mm (2 values for 2d).
        patch_size: training patch, voxels.
        batch_size: training batch size.
        median_image_size_in_voxels: median case shape at the target spacing.
        normalization_schemes: per channel, see :mod:`sauronnet.preprocessing.normalize`.
        use_mask_for_norm: per channel, normalise inside the nonzero mask only.
        resampling_*: spline orders for images, label maps (one-hot) and exported probabilities; ``_z`` is the
            order along a separately resampled low-resolution axis.
        batch_dice: Dice computed over the whole batch rather than per sample.
        network: the U-Net topology.
        estimated_forward_gflops: one training forward pass of a whole batch (with deep-supervision heads),
            convolutions only, 1 MAC = 2 FLOP.
    """

    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    batch_size: int
    median_image_size_in_voxels: tuple[float, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    resampling_data_order: int
    resampling_data_order_z: int
    resampling_seg_order: int
    resampling_seg_order_z: int
    resampling_probabilities_order: int
    batch_dice: bool
    network: NetworkPlan
    estimated_forward_gflops: float

    def __post_init__(self) -> None:
        dim = self.network.dim
        if len(self.spacing) != dim or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be {dim} positive numbers (mm), got {list(self.spacing)}")
        if len(self.patch_size) != dim or any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size must be {dim} positive sizes, got {list(self.patch_size)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if len(self.normalization_schemes) != len(self.use_mask_for_norm):
            raise ValueError("normalization_schemes and use_mask_for_norm must list one entry per channel")
        orders = (self.resampling_data_order, self.resampling_data_order_z, self.resampling_seg_order,
                  self.resampling_seg_order_z, self.resampling_probabilities_order)
        if any(not 0 <= o <= 5 for o in orders):
            raise ValueError(f"resampling orders must lie in 0..5, got {list(orders)}")


@dataclass(frozen=True)
class Plans:
    """Everything a trainer and a predictor need to know about a dataset (``plans.json``)."""

    dataset_name: str
    preset: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    original_median_spacing_after_transp: tuple[float, ...]
    original_median_shape_after_transp: tuple[int, ...]
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    foreground_intensity_properties_per_channel: tuple[IntensityStats, ...]
    configurations: dict[str, ConfigurationPlan]

    @property
    def num_classes(self) -> int:
        """Network output channels: background plus every foreground label."""
        return len(self.labels)

    def configuration(self, name: str) -> ConfigurationPlan:
        """The named configuration; a ``ValueError`` lists the available ones."""
        if name not in self.configurations:
            raise ValueError(f"configuration {name!r} is not in the plans of {self.dataset_name} "
                             f"(preset {self.preset}); available: {sorted(self.configurations)}")
        return self.configurations[name]

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self)

    @classmethod
    def load(cls, path: str | Path) -> Plans:
        return load_dataclass(cls, path)
