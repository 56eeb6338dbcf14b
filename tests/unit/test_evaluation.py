import math

import numpy as np
import pytest

from sauronnet.evaluation import case_metrics, dice_per_class, hd95


def test_dice_by_hand():
    ref = np.zeros((4, 4), int)
    ref[:2, :2] = 1  # 4 voxels
    pred = np.zeros((4, 4), int)
    pred[:2, :1] = 1  # 2 voxels, both inside
    pred[3, 3] = 2
    d = dice_per_class(pred, ref, [1, 2, 3])
    assert d[1] == pytest.approx(2 * 2 / (2 + 4))
    assert d[2] == 0.0  # predicted, not in the reference
    assert math.isnan(d[3])  # in neither


def test_hd95_known_answers():
    a = np.zeros((1, 10, 10), bool)
    a[0, 2:5, 2:5] = True
    b = np.zeros_like(a)
    b[0, 2:5, 5:8] = True  # the same square shifted by 3 voxels along x
    assert hd95(a, a, (1.0, 1.0, 1.0)) == 0.0
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0)  # spacing in mm along x
    assert math.isinf(hd95(a, np.zeros_like(a), (1, 1, 1)))
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a), (1, 1, 1)))


def test_case_metrics_volumes():
    ref = np.zeros((2, 3, 4), int)
    ref[0] = 1
    pred = np.zeros_like(ref)
    pred[0, :2] = 1
    m = case_metrics(pred, ref, [1], (2.0, 1.0, 0.5))["1"]
    assert m["volume_ref"] == 12 * 1.0 and m["volume_pred"] == 8 * 1.0
    assert m["iou"] == pytest.approx(8 / 12) and m["dice"] == pytest.approx(16 / 20)
