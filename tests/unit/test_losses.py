import math

import numpy as np
import pytest
import torch

from sauronnet.losses import (DeepSupervisionLoss, deep_supervision_weights, dice_ce_loss, distillation_loss,
                              soft_dice_loss)


def test_deep_supervision_weights():
    np.testing.assert_allclose(deep_supervision_weights(4), np.array([1, 0.5, 0.25, 0]) / 1.75)
    np.testing.assert_allclose(deep_supervision_weights(1), [1.0])


def test_soft_dice_by_hand():
    # two voxels, classes {0, 1}; logits chosen so softmax gives p1 = [0.75, 0.25]
    l = math.log(3)
    logits = torch.tensor([[[0.0, l], [l, 0.0]]]).permute(0, 2, 1)  # (B=1, K=2, S=2)
    target = torch.tensor([[[1, 0]]])  # voxel 0 is class 1
    # class 1: intersect 0.75, sum_pred 1.0, sum_gt 1 -> dice = 1.5 / 2
    assert float(soft_dice_loss(logits, target, batch_dice=False)) == pytest.approx(-(1.5 + 1e-5) / (2 + 1e-5))


def test_batch_dice_pools_the_batch():
    logits = torch.zeros(2, 2, 2)  # p1 = 0.5 everywhere
    target = torch.tensor([[[1, 1]], [[0, 0]]])
    per_sample = float(soft_dice_loss(logits, target, batch_dice=False))
    pooled = float(soft_dice_loss(logits, target, batch_dice=True))
    # sample 1: 2*1/(2+1) ; sample 2: smooth/(1+smooth) ~ 0 ; pooled: 2*1/(2+2)
    assert per_sample == pytest.approx(-(2 / 3 + 1e-5 / (1 + 1e-5)) / 2, abs=1e-5)
    assert pooled == pytest.approx(-0.5, abs=1e-5)


def test_dice_ce_adds_cross_entropy():
    logits = torch.zeros(1, 3, 4)
    target = torch.zeros(1, 1, 4)
    expected = math.log(3) + float(soft_dice_loss(logits, target, False))
    assert float(dice_ce_loss(logits, target, False)) == pytest.approx(expected)


def test_deep_supervision_loss_downsamples_targets_and_skips_lowest():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    full = torch.zeros(1, 2, 4, 4)
    half = torch.randn(1, 2, 2, 2)
    low = torch.full((1, 2, 1, 1), float("nan"), requires_grad=True)  # weight 0: must not be evaluated
    loss = DeepSupervisionLoss(3, batch_dice=False)([full, half, low], target)
    w = deep_supervision_weights(3)
    expected = w[0] * dice_ce_loss(full, target, False) + w[1] * dice_ce_loss(half, target[..., ::2, ::2], False)
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()  # ... but stays in the graph with a zero gradient (DDP then sees no unused parameter)
    assert low.grad is not None and not low.grad.any()


def test_distillation_loss_by_hand():
    # one voxel, two classes: teacher p = (0.8, 0.2), student p = (0.5, 0.5)
    teacher = [torch.log(torch.tensor([0.8, 0.2])).reshape(1, 2, 1, 1)]
    student = [torch.zeros(1, 2, 1, 1)]
    expected = 0.8 * np.log(0.8 / 0.5) + 0.2 * np.log(0.2 / 0.5)
    assert float(distillation_loss(student, teacher, np.array([1.0]))) == pytest.approx(expected, rel=1e-6)
    # the student's own logits: nothing to learn; an output of weight 0 is not read (NaN there changes nothing)
    same = [torch.randn(2, 3, 4, 4), torch.full((2, 3, 2, 2), float("nan"))]
    assert float(distillation_loss(same, [s.clone() for s in same], np.array([1.0, 0.0]))) == pytest.approx(0, abs=1e-6)


def test_distillation_loss_pulls_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    student = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 4, 4, requires_grad=True)]
    weights = np.array([2 / 3, 1 / 3])
    before = distillation_loss(student, teacher, weights)
    before.backward()
    assert all(t.grad is None for t in teacher)
    with torch.no_grad():
        stepped = [s - 1.0 * s.grad for s in student]
    assert float(distillation_loss(stepped, teacher, weights)) < float(before.detach())
