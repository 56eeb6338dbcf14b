import numpy as np

from sauronnet.inference.postprocessing import decide_postprocessing, keep_largest_component


def test_keeps_only_the_largest_component_per_label():
    seg = np.zeros((1, 10, 10), np.uint8)
    seg[0, :3, :3] = 1  # 9 voxels
    seg[0, 8, 8] = 1  # a stray voxel
    seg[0, 5:7, 5:7] = 2  # label 2 untouched when not asked
    seg[0, 0, 9] = 2
    out = keep_largest_component(seg, [1])
    assert out[0, 8, 8] == 0 and (out[0, :3, :3] == 1).all()
    assert out[0, 0, 9] == 2 and (out == 2).sum() == 5


def test_rule_keeps_it_only_where_it_helps_and_hurts_no_label():
    ref = np.zeros((1, 12, 12), np.uint8)
    ref[0, :4, :4] = 1
    ref[0, 6:9, 6:9] = 2
    ref[0, 11, 0:2] = 2  # label 2 truly has two components
    pred = ref.copy()
    pred[0, 10, 10] = 1  # a false-positive island of label 1
    assert decide_postprocessing([pred], [ref], [1, 2]) == [1]
