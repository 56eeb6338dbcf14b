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


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between two binary masks' surfaces.

    The max of the two directed 95th percentiles (MONAI's ``compute_hausdorff_distance(percentile=95)``).
    NaN if both masks are empty, +inf if exactly one is.
    """
    from scipy.ndimage import binary_erosion, distance_transform_edt

    pred, ref = pred.astype(bool), ref.astype(bool)
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return float("inf")
    sp = pred & ~binary_erosion(pred)
    sr = ref & ~binary_erosion(ref)
    d_to_ref = distance_transform_edt(~sr, sampling=spacing)
    d_to_pred = distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(d_to_ref[sp], 95), np.percentile(d_to_pred[sr], 95)))


def case_metrics(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int], spacing: Sequence[float]) -> dict:
    """Per label: Dice, IoU, HD95 (mm), reference and predicted volumes (mm³) and voxel counts."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    voxel = float(np.prod(spacing))
    out = {}
    for c in labels:
        tp, fp, fn = confusion(pred, ref, c)
        union = tp + fp + fn
        out[str(c)] = {"dice": dice_from_counts(tp, fp, fn), "iou": tp / union if union else float("nan"),
                       "hd95": hd95(pred == c, ref == c, spacing), "volume_ref": (tp + fn) * voxel,
                       "volume_pred": (tp + fp) * voxel, "n_ref": tp + fn, "n_pred": tp + fp}
    return out


def _json_number(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def evaluate_folders(ref_dir, pred_dir, labels: Sequence[int] | None = None) -> dict:
    """Scores every reference file that has a prediction of the same name; see :func:`case_metrics`.

    Raises:
        FileNotFoundError: a folder is missing or a reference has no prediction.
        ValueError: a prediction's grid differs from its reference's.
    """
    from pathlib import Path

    from sauronnet.inference.inputs import ENDINGS, split_ending
    from sauronnet.io import read_seg

    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for d in (ref_dir, pred_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: folder not found")
    refs = sorted(p for p in ref_dir.iterdir() if split_ending(p)[1] in ENDINGS and not p.name.startswith("."))
    if not refs:
        raise FileNotFoundError(f"{ref_dir}: no label maps")
    pairs = []
    for r in refs:
        p = pred_dir / r.name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no prediction for reference {r}")
        pairs.append((r, p))
    loaded = []
    for r, p in pairs:
        ref, g_ref = read_seg(r)
        pred, g_pred = read_seg(p)
        diff = g_ref.mismatch(g_pred)
        if diff:
            raise ValueError(f"{p}: {diff} compared with the reference {r}; predictions must lie on the "
                             "reference grid")
        loaded.append((split_ending(r)[0], pred, ref, g_ref.spacing_zyx))
    if labels is None:
        labels = sorted({int(v) for _, _, ref, _ in loaded for v in np.unique(ref)} - {0})
    cases = []
    for case_id, pred, ref, spacing in loaded:
        m = case_metrics(pred, ref, labels, spacing)
        cases.append({"case": case_id, "metrics": m})
    mean = {}
    for c in labels:
        per = [x["metrics"][str(c)] for x in cases]
        mean[str(c)] = {k: _json_number(nanmean([m[k] for m in per if np.isfinite(m[k])]))
                        for k in ("dice", "iou", "hd95")}
        mean[str(c)]["hd95_infinite"] = sum(1 for m in per if np.isinf(m["hd95"]))
    for x in cases:
        for m in x["metrics"].values():
            for k in ("dice", "iou", "hd95"):
                m[k] = _json_number(m[k])
    fg = nanmean([m["dice"] if m["dice"] is not None else np.nan for m in mean.values()])
    return {"labels": list(labels), "mean": mean, "foreground_mean_dice": _json_number(fg), "cases": cases}
