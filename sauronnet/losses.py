"""Dice + cross-entropy with deep supervision (nnU-Net v2's ``DC_and_CE_loss`` + ``DeepSupervisionWrapper``).

Layouts: logits ``(B, K, *S)`` (BCZYX or BCYX); targets ``(B, 1, *S)`` integer labels stored as float or long.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool, smooth: float = 1e-5,
                   include_background: bool = False) -> torch.Tensor:
    """Negative mean soft Dice over classes (nnU-Net's ``MemoryEfficientSoftDiceLoss``).

    With ``batch_dice`` the sums run over the batch as well, so one Dice per class for the whole batch.
    """
    probs = torch.softmax(logits, dim=1)
    with torch.no_grad():
        onehot = torch.zeros_like(probs).scatter_(1, target.long(), 1)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = tuple(range(2, probs.ndim))
    intersect = (probs * onehot).sum(axes)
    sum_pred, sum_gt = probs.sum(axes), onehot.sum(axes)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
    dice = (2 * intersect + smooth) / torch.clip(sum_gt + sum_pred + smooth, 1e-8)
    return -dice.mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool) -> torch.Tensor:
    """Cross-entropy + soft Dice, weighted 1:1."""
    ce = F.cross_entropy(logits, target[:, 0].long())
    return ce + soft_dice_loss(logits, target, batch_dice)


def deep_supervision_weights(n_outputs: int) -> np.ndarray:
    """1/2^i per output (highest resolution first), the lowest resolution at 0, normalised to sum 1."""
    w = np.array([1 / 2 ** i for i in range(n_outputs)])
    if n_outputs > 1:
        w[-1] = 0
    return w / w.sum()


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour label map at a deep-supervision output's resolution (voxel centres aligned)."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest-exact")


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of :func:`dice_ce_loss` over the deep-supervision outputs.

    ``forward(outputs, target)``: ``outputs`` a list (highest resolution first) or a single tensor; ``target``
    ``(B, 1, *S)`` at full resolution (downsampled here for the lower outputs).
    """

    def __init__(self, n_outputs: int, batch_dice: bool):
        super().__init__()
        self.weights = deep_supervision_weights(n_outputs)
        self.batch_dice = batch_dice

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return dice_ce_loss(outputs, target, self.batch_dice)
        total = outputs[0].new_zeros(())
        for w, out in zip(self.weights, outputs):
            if w > 0:
                total = total + float(w) * dice_ce_loss(out, downsample_target(target, out.shape[2:]),
                                                        self.batch_dice)
        return total
