"""From network probabilities on the preprocessed grid back to the input's grid (nnU-Net's export rules).

Probabilities are resampled (linear, low-resolution axis nearest when anisotropic) to the cropped input shape,
turned into labels by argmax, pasted into the uncropped volume (background outside the crop box) and
transposed back, so the label map lies voxel for voxel on the input image.
"""
from __future__ import annotations

import numpy as np

from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.preprocess import CaseProperties
from sauronnet.preprocessing.resample import resample_data


def restore_probabilities(probs: np.ndarray, props: CaseProperties, plans: Plans,
                          config: ConfigurationPlan) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → float32 (K, Z, Y, X) on the input grid.

    Outside the crop box the background probability is 1.
    """
    cropped = resample_data(probs, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                            config.resampling_probabilities_order, config.resampling_data_order_z)
    full = np.zeros((probs.shape[0], *props.shape_before_cropping), np.float32)
    full[0] = 1.0
    full[(slice(None),) + tuple(slice(a, b) for a, b in props.bbox)] = cropped
    return full.transpose([0, *[a + 1 for a in plans.transpose_backward]])


def probabilities_to_labels(probs: np.ndarray, props: CaseProperties, plans: Plans,
                            config: ConfigurationPlan) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → uint8/int16 label map (Z, Y, X) on the input grid.

    Uses less memory than :func:`restore_probabilities`: only the cropped region is held at full resolution.
    """
    cropped = resample_data(probs, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                            config.resampling_probabilities_order, config.resampling_data_order_z)
    dtype = np.uint8 if probs.shape[0] <= 256 else np.int16
    full = np.zeros(props.shape_before_cropping, dtype)
    full[tuple(slice(a, b) for a, b in props.bbox)] = cropped.argmax(0).astype(dtype)
    return full.transpose(plans.transpose_backward)
