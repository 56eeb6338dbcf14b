"""Dice + cross-entropy with deep supervision (nnU-Net v2's ``DC_and_CE_loss`` + ``DeepSupervisionWrapper``).

Layouts: logits ``(B, K, *S)`` (BCZYX or BCYX); targets ``(B, 1, *S)`` integer labels stored as float or long.

In a distributed run each process passes its :class:`sauronnet.distributed.World`: per-sample means are weighted
by the process's share of the global batch and batch Dice sums its statistics over the processes, so that DDP's
gradient average equals the gradient of the loss of the global batch in one process.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sauronnet.distributed import World

_ONE = World()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool, smooth: float = 1e-5,
                   include_background: bool = False, world: World = _ONE) -> torch.Tensor:
    """Negative mean soft Dice over classes (nnU-Net's ``MemoryEfficientSoftDiceLoss``).

    With ``batch_dice`` the sums run over the (global) batch as well, so one Dice per class for the whole batch.
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
        stats = world.sum(torch.stack([intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)]))
        intersect, sum_pred, sum_gt = stats[0], stats[1], stats[2]
    dice = (2 * intersect + smooth) / torch.clip(sum_gt + sum_pred + smooth, 1e-8)
    return -dice.mean() if batch_dice else -world.share * dice.mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool, world: World = _ONE) -> torch.Tensor:
    """Cross-entropy + soft Dice, weighted 1:1."""
    ce = F.cross_entropy(logits, target[:, 0].long())
    return world.share * ce + soft_dice_loss(logits, target, batch_dice, world=world)


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


def distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      weights: np.ndarray) -> torch.Tensor:
    """KL(teacher ‖ student) of the softmax over classes, averaged over samples and voxels, summed over the
    deep-supervision outputs with ``weights`` (outputs of weight 0 are skipped).

    ``student``, ``teacher``: logits ``(B, K, *S)`` per output, highest resolution first; the teacher's carry no
    gradient. 0 when the student's probabilities equal the teacher's.
    """
    total = student[0].new_zeros(())
    for w, s, t in zip(weights, student, teacher):
        if w > 0:
            log_t = F.log_softmax(t.detach().float(), 1)
            kl = (log_t.exp() * (log_t - F.log_softmax(s.float(), 1))).sum(1)
            total = total + float(w) * kl.mean()
    return total


class _ZeroGradient(torch.autograd.Function):
    """0 in the forward (the input's values are never read, NaN or not) and a zero gradient in the backward: an
    output with loss weight 0 stays in the graph, so every parameter receives a gradient in every step and
    DistributedDataParallel needs no search for unused parameters."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.new_zeros(ctx.shape)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of :func:`dice_ce_loss` over the deep-supervision outputs.

    ``forward(outputs, target, world)``: ``outputs`` a list (highest resolution first) or a single tensor;
    ``target`` ``(B, 1, *S)`` at full resolution (downsampled here for the lower outputs); ``world`` this
    process's share of a distributed training batch (default: one process).
    """

    def __init__(self, n_outputs: int, batch_dice: bool):
        super().__init__()
        self.weights = deep_supervision_weights(n_outputs)
        self.batch_dice = batch_dice

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                world: World = _ONE) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return dice_ce_loss(outputs, target, self.batch_dice, world)
        total = outputs[0].new_zeros(())
        for w, out in zip(self.weights, outputs):
            if w > 0:
                total = total + float(w) * dice_ce_loss(out, downsample_target(target, out.shape[2:]),
                                                        self.batch_dice, world)
            else:
                total = total + _ZeroGradient.apply(out)
        return total
