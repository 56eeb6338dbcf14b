import numpy as np

from sauronnet.preprocessing.crop import OUTSIDE_LABEL, bbox_of, crop_to_nonzero


def test_crop_to_nonzero_box_and_outside_label():
    data = np.zeros((2, 6, 7, 8), np.float32)
    data[0, 1:4, 2:6, 3:6] = 1.0
    data[1, 4, 5, 6] = 2.0  # the second channel widens the box
    data[0, 2, 3, 4] = 0.0  # an interior hole is filled, not cut out
    seg = np.zeros((6, 7, 8), np.uint8)
    seg[2, 3, 3] = 1
    cropped, s, box = crop_to_nonzero(data, seg)
    assert box == ((1, 5), (2, 6), (3, 7))
    assert cropped.shape == (2, 4, 4, 4)
    assert s[2 - 1, 3 - 2, 3 - 3] == 1
    assert s[1, 1, 1] == 0  # the filled hole is inside the mask: background, not outside
    assert s[3, 0, 0] == OUTSIDE_LABEL  # outside the nonzero mask


def test_empty_mask_keeps_everything():
    assert bbox_of(np.zeros((3, 4, 5), bool)) == ((0, 3), (0, 4), (0, 5))


def test_without_seg_gives_mask_map():
    data = np.zeros((1, 3, 3, 3), np.float32)
    data[0, 1, 1, 1] = 5
    _, s, box = crop_to_nonzero(data)
    assert box == ((1, 2), (1, 2), (1, 2)) and s.tolist() == [[[0]]]
