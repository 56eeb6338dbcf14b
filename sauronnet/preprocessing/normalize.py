"""Intensity normalisation schemes (nnU-Net v2's ``CTNormalization`` / ``ZScoreNormalization`` ...).

Scheme names stored in plans: ``ct``, ``zscore``, ``none``, ``rescale_to_0_1``. The scheme follows from the
channel name in dataset.json: "CT" (any case) gives ``ct``, "noNorm" gives ``none``, "rescale_to_0_1" gives
``rescale_to_0_1``, anything else ``zscore``.
"""
from __future__ import annotations

import numpy as np

from sauronnet.fingerprint import IntensityStats

SCHEMES = ("ct", "zscore", "none", "rescale_to_0_1")
#: Schemes that leave voxels outside the nonzero mask at zero when ``use_mask_for_norm`` is on.
MASKABLE = frozenset({"zscore"})
_EPS = 1e-8


def scheme_for_channel(channel_name: str) -> str:
    """nnU-Net's channel-name → scheme mapping (case-insensitive)."""
    name = channel_name.lower()
    if name == "ct":
        return "ct"
    if name == "nonorm":
        return "none"
    if name == "rescale_to_0_1":
        return "rescale_to_0_1"
    return "zscore"


def normalize_channel(image: np.ndarray, scheme: str, use_mask: bool, seg: np.ndarray | None,
                      stats: IntensityStats | None) -> np.ndarray:
    """Normalises one channel in place (it is converted to float32 first).

    Args:
        image: (Z, Y, X).
        scheme: one of :data:`SCHEMES`.
        use_mask: z-score only inside ``seg >= 0`` (the nonzero mask) and leave the rest untouched.
        seg: cropped label map (Z, Y, X) with -1 outside the nonzero mask; needed when ``use_mask``.
        stats: dataset foreground intensity statistics of this channel; needed for ``ct``.

    Returns:
        float32 (Z, Y, X).
    """
    image = image.astype(np.float32, copy=False)
    if scheme == "ct":
        if stats is None:
            raise ValueError("CT normalisation needs the fingerprint's foreground intensity statistics")
        np.clip(image, stats.percentile_00_5, stats.percentile_99_5, out=image)
        image -= stats.mean
        image /= max(stats.std, _EPS)
    elif scheme == "zscore":
        if use_mask:
            if seg is None:
                raise ValueError("use_mask_for_norm needs the cropped label map (-1 outside the nonzero mask)")
            mask = seg >= 0
            vals = image[mask]
            image[mask] = (vals - vals.mean()) / max(float(vals.std()), _EPS)
        else:
            image -= image.mean()
            image /= max(float(image.std()), _EPS)
    elif scheme == "rescale_to_0_1":
        image -= image.min()
        image /= max(float(image.max()), _EPS)
    elif scheme != "none":
        raise ValueError(f"unknown normalisation scheme {scheme!r}; use one of {SCHEMES}")
    return image
