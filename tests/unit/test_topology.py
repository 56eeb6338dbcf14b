import pytest

from planners.topology import pad_shape, pool_and_conv_props


def test_pad_shape():
    assert pad_shape([64, 65, 64.5], [8, 16, 8]) == (64, 80, 72)


def test_toy_anisotropic_topology():
    # DESIGN.md §4: 1x1x2.5 mm, ~64³ voxels -> kernels [1,3,3] then [3,3,3]x4, strides [1,2,2] then [2,2,2]x3
    t = pool_and_conv_props([2.5, 1.0, 1.0], [64, 70, 62])
    assert t.strides == ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert t.kernel_sizes == ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert t.num_pool_per_axis == (3, 4, 4)
    assert t.patch_size == (64, 80, 64)


def test_single_axis_needs_twelve_voxels():
    # only the first axis may still pool (others at the minimum edge); 11 < 12 stops it
    t = pool_and_conv_props([1.0, 1.0], [11, 4])
    assert t.strides == ((1, 1),)
    t = pool_and_conv_props([1.0, 1.0], [12, 4])
    assert t.strides == ((1, 1), (2, 1))


@pytest.mark.parametrize("spacing, patch, strides", [
    ([1.0, 1.0, 1.0], [8, 8, 8], ((1, 1, 1), (2, 2, 2))),
    ([5.0, 0.7, 0.7], [28, 256, 256], ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2),
                                       (1, 2, 2))),
])
def test_pooling_table(spacing, patch, strides):
    assert pool_and_conv_props(spacing, patch).strides == strides
