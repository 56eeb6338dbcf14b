import numpy as np
import pytest
from skimage.transform import resize

from sauronnet.preprocessing.resample import (compute_new_shape, resample_argmax, resample_data, resample_seg,
                                             separate_z_axis)


def test_compute_new_shape_rounds_like_nnunet():
    assert compute_new_shape((20, 100, 101), (2.5, 1.0, 1.0), (2.0, 0.8, 0.8)) == (25, 125, 126)


@pytest.mark.parametrize("cur, new, axis", [
    ((1, 1, 1), (1, 1, 1), None),
    ((5, 1, 1), (5, 1, 1), 0),       # current spacing anisotropic
    ((1, 1, 1), (1, 4, 1), 1),       # only the target is
    ((3, 1, 1), (3, 1, 1), None),    # ratio exactly 3 is not > 3
    ((5, 5, 1), (5, 5, 1), None),    # two coarse axes: no single axis
])
def test_separate_z_axis(cur, new, axis):
    assert separate_z_axis(cur, new) == axis


def test_data_matches_skimage_resize():
    rng = np.random.RandomState(0)
    data = rng.normal(size=(1, 10, 12, 14)).astype(np.float32)
    new_shape = (13, 9, 20)
    ours = resample_data(data, new_shape, (1, 1, 1), (0.8, 1.3, 0.7))
    ref = resize(data[0].astype(float), new_shape, order=3, mode="edge", anti_aliasing=False)
    assert ours.shape == (1, *new_shape) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], ref, atol=1e-5)


def test_separate_z_uses_nearest_along_the_coarse_axis():
    data = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1) * np.ones((1, 4, 3, 3), np.float32)
    out = resample_data(data, (8, 6, 6), (5.0, 1.0, 1.0), (2.5, 0.5, 0.5))
    # each input slice value is repeated, never blended
    np.testing.assert_allclose(out[0, :, 2, 2], [0, 0, 1, 1, 2, 2, 3, 3], atol=1e-6)


@pytest.mark.parametrize("cur, new", [((1, 1, 1), (0.6, 1.7, 0.9)), ((5.0, 1.0, 1.0), (2.0, 0.7, 0.7))])
def test_seg_keeps_label_values(cur, new):
    rng = np.random.RandomState(1)
    seg = np.zeros((10, 16, 16), np.int16)
    seg[2:8, 3:12, 4:10] = 1
    seg[4:6, 5:9, 5:8] = 2
    seg[0, 0, :3] = -1
    seg[rng.rand(*seg.shape) > 0.97] = 3
    new_shape = compute_new_shape(seg.shape, cur, new)
    out = resample_seg(seg, new_shape, cur, new)
    assert out.shape == new_shape and out.dtype == seg.dtype
    assert set(np.unique(out)) <= {-1, 0, 1, 2, 3}
    assert {1, 2} <= set(np.unique(out))


def test_seg_identity_shape_is_a_copy():
    seg = np.ones((2, 2, 2), np.int8)
    out = resample_seg(seg, (2, 2, 2), (1, 1, 1), (1, 1, 1))
    assert np.array_equal(out, seg) and out is not seg


@pytest.mark.parametrize("cur, new", [((3.0, 1.0, 1.0), (2.0, 0.8, 0.8)),  # isotropic-enough: joint
                                      ((5.0, 1.0, 1.0), (2.5, 0.7, 0.7)),  # separate z
                                      ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))])  # no resampling
def test_argmax_one_channel_at_a_time_equals_argmax_of_all(cur, new):
    data = np.random.RandomState(4).randn(7, 6, 9, 8).astype(np.float32)
    shape = compute_new_shape(data.shape[1:], cur, new)
    expected = resample_data(data, shape, cur, new, order=1).argmax(0)
    got = resample_argmax(data, shape, cur, new, order=1)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert (data == np.random.RandomState(4).randn(7, 6, 9, 8).astype(np.float32)).all()  # input untouched


@pytest.mark.parametrize("shape, new_shape", [((10, 12, 14), (13, 9, 20)),   # up and down at once
                                              ((1, 5, 7), (3, 5, 2)),         # a single-voxel axis
                                              ((6, 1), (6, 4)),               # 2D slice
                                              ((37,), (5,))])                 # strong downsampling
def test_linear_resampling_matches_skimage_resize(shape, new_shape):
    data = np.random.RandomState(5).normal(size=(1, *shape)).astype(np.float32)
    ours = resample_data(data, new_shape, (1,) * len(shape), (1,) * len(shape), order=1)
    ref = resize(data[0].astype(float), new_shape, order=1, mode="edge", anti_aliasing=False)
    assert ours.shape == (1, *new_shape) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], ref, atol=1e-6)
