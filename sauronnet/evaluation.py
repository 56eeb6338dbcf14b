"""Segmentation metrics.

Conventions: a class absent from both reference and prediction has Dice NaN (it is left out of means, as in
nnU-Net); absent from the reference but predicted, Dice 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion(pred: np.ndarray, ref: np.ndarray, label: int) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of ``label``."""
    p, r = pred == label, ref == label
    tp = int(np.count_nonzero(p & r))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """2·TP / (2·TP + FP + FN); NaN when the class is in neither map."""
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else float("nan")


def dice_per_class(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice of every label in ``labels`` (arrays of identical shape)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    return {int(c): dice_from_counts(*confusion(pred, ref, c)) for c in labels}


def nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaN; NaN if every value is NaN."""
    v = np.asarray(list(values), float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
