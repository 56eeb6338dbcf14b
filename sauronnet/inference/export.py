"""From network probabilities on the preprocessed grid back to the input's grid (nnU-Net's export rules).

Probabilities (or, for imported nnU-Net models, logits — nnU-Net v2 resamples logits and applies the softmax
afterwards) are resampled (linear, low-resolution axis nearest when anisotropic) to the cropped input shape,
turned into labels by argmax, pasted into the uncropped volume (background outside the crop box) and
transposed back, so the label map lies voxel for voxel on the input image.
"""
from __future__ import annotations

import numpy as np

from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.preprocess import CaseProperties, uncrop
from sauronnet.preprocessing.resample import resample_argmax, resample_data


def restore_probabilities(probs: np.ndarray, props: CaseProperties, plans: Plans,
                          config: ConfigurationPlan, logits: bool = False) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → float32 (K, Z, Y, X) on the input grid.

    Outside the crop box the background probability is 1. With ``logits``, ``probs`` are logits: they are
    resampled as such and turned into probabilities afterwards (nnU-Net v2's order, used for imported models).
    """
    back = _resample_back(probs, props, config)
    if logits:
        back = softmax(back)
    return uncrop(back, props, plans.transpose_backward, first_channel_outside=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of float32 (K, ...), in place (no copy of K volumes: 118 classes of a CT are GBs)."""
    np.subtract(logits, logits.max(0, keepdims=True), out=logits)
    np.exp(logits, out=logits)
    logits /= logits.sum(0, keepdims=True)
    return logits


def probabilities_to_labels(probs: np.ndarray, props: CaseProperties, plans: Plans,
                            config: ConfigurationPlan) -> np.ndarray:
    """float32 (K, z, y, x) on the preprocessed grid → uint8/int16 label map (Z, Y, X) on the input grid.

    ``probs`` may as well be logits (same argmax). Uses far less memory than :func:`restore_probabilities`: the
    channels are resampled one at a time into a running argmax over the cropped region.
    """
    labels = resample_argmax(probs, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                             config.resampling_probabilities_order, config.resampling_data_order_z,
                             label_dtype(probs.shape[0]))
    return uncrop(labels, props, plans.transpose_backward)


def label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int16


def _resample_back(probs: np.ndarray, props: CaseProperties, config: ConfigurationPlan) -> np.ndarray:
    return resample_data(probs, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                         config.resampling_probabilities_order, config.resampling_data_order_z)
