"""Keep-largest-connected-component postprocessing, and nnU-Net's rule for deciding it.

The rule (decided on a fold's validation predictions): for each foreground label, removing every component
but the largest is kept only if it raises the mean Dice over the labels and lowers no label's Dice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from sauronnet.evaluation import dice_per_class, nanmean
from sauronnet.serialization import read_json

POSTPROCESSING_FILE = "postprocessing.json"


def keep_largest_component(seg: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Returns a copy of ``seg`` where each label in ``labels`` keeps only its largest connected component
    (full connectivity); removed voxels become background."""
    out = seg.copy()
    structure = np.ones((3,) * seg.ndim, bool)
    for label in labels:
        components, n = ndimage.label(seg == label, structure)
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return out


def decide_postprocessing(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
                          labels: Sequence[int]) -> list[int]:
    """The labels for which keep-largest-component helps (nnU-Net's rule, applied label by label)."""

    def mean_dice(preds) -> dict[int, float]:
        per_case = [dice_per_class(p, r, labels) for p, r in zip(preds, references)]
        return {c: nanmean(d[c] for d in per_case) for c in labels}

    chosen: list[int] = []
    current = list(predictions)
    base = mean_dice(current)
    for label in labels:
        trial = [keep_largest_component(p, [label]) for p in current]
        scores = mean_dice(trial)
        no_worse = all(not (scores[c] < base[c] - 1e-12) for c in labels if np.isfinite(base[c]))
        if no_worse and nanmean(scores.values()) > nanmean(base.values()):
            chosen.append(int(label))
            current, base = trial, scores
    return chosen


def agreed_keep_largest(model_dir: Path, folds: Sequence[str]) -> list[int]:
    """The labels every fold's validation chose for keep-largest-component (``fold_F/postprocessing.json``; a fold
    without the file chose none)."""
    keep: set[int] | None = None
    for f in folds:
        path = Path(model_dir) / f"fold_{f}" / POSTPROCESSING_FILE
        labels = set(read_json(path)["keep_largest_component"]) if path.is_file() else set()
        keep = labels if keep is None else keep & labels
    return sorted(keep or ())
