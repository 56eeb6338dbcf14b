"""Plans: what the planner decided, as typed frozen dataclasses written to ``plans.json``.

A human may read and edit plans.json; loading is strict (unknown or missing keys raise with the file name).
Spatial tuples are in array order after ``transpose_forward`` (the largest-spacing axis first).
"""
from __future__ import annotations

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
