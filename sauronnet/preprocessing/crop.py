"""Cropping to the nonzero region (nnU-Net's ``crop_to_nonzero``)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

#: Value written into the label map where the image is zero outside the body (so normalisation can mask it).
OUTSIDE_LABEL = -1


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels where any channel is nonzero, holes filled.

    Args:
        data: (C, Z, Y, X).

    Returns:
        bool (Z, Y, X).
    """
    mask = np.any(data != 0, axis=0)
    return binary_fill_holes(mask)


def bbox_of(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box ``((z0, z1), (y0, y1), (x0, x1))`` of ``mask``; the full extent if it is empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        box.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    return tuple(box)


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """Crops image and label map to the bounding box of the nonzero mask.

    Args:
        data: (C, Z, Y, X).
        seg: integer (Z, Y, X) or None.

    Returns:
        cropped ``data`` (C, z, y, x); cropped label map int16 (z, y, x) where background outside the nonzero
        mask is set to :data:`OUTSIDE_LABEL` (an all-zero/-1 map if ``seg`` is None); the bounding box.
    """
    mask = nonzero_mask(data)
    box = bbox_of(mask)
    sl = tuple(slice(a, b) for a, b in box)
    mask = mask[sl]
    data = data[(slice(None),) + sl]
    if seg is None:
        out = np.where(mask, 0, OUTSIDE_LABEL).astype(np.int16)
    else:
        out = seg[sl].astype(np.int16)
        out[(out == 0) & ~mask] = OUTSIDE_LABEL
    return data, out, box
