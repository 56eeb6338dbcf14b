"""From network probabilities on the preprocessed grid back to the input's grid (nnU-Net's export rules).

Probabilities are resampled (linear, low-resolution axis nearest when anisotropic) to the cropped input shape,
turned into labels by argmax, pasted into the uncropped volume (background outside the crop box) and
transposed back, so the label map lies voxel for voxel on the input image.
"""
from __future__ import annotations

import numpy as np

from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.preprocess import CaseProperties, uncrop
from sauronnet.preprocessing.resample import resample_data


def restore_probabilities(probs: np.ndarray, props: CaseProperties, plans: Plans,
                          config: ConfigurationPlan) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → float32 (K, Z, Y, X) on the input grid.

    Outside the crop box the background probability is 1.
    """
    return uncrop(_resample_back(probs, props, config), props, plans.transpose_backward, first_channel_outside=1)


def probabilities_to_labels(probs: np.ndarray, props: CaseProperties, plans: Plans,
                            config: ConfigurationPlan) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → uint8/int16 label map (Z, Y, X) on the input grid.

    Uses less memory than :func:`restore_probabilities`: only the cropped region is held at full resolution.
    """
    labels = _resample_back(probs, props, config).argmax(0).astype(label_dtype(probs.shape[0]))
    return uncrop(labels, props, plans.transpose_backward)


def label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int16


def _resample_back(probs: np.ndarray, props: CaseProperties, config: ConfigurationPlan) -> np.ndarray:
    return resample_data(probs, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                         config.resampling_probabilities_order, config.resampling_data_order_z)
