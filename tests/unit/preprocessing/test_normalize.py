import numpy as np
import pytest

from sauronnet.fingerprint import IntensityStats
from sauronnet.preprocessing.normalize import normalize_channel, scheme_for_channel


@pytest.mark.parametrize("name, scheme", [("CT", "ct"), ("ct", "ct"), ("T1", "zscore"), ("noNorm", "none"),
                                          ("rescale_to_0_1", "rescale_to_0_1")])
def test_scheme_from_channel_name(name, scheme):
    assert scheme_for_channel(name) == scheme


def test_ct_clips_to_foreground_percentiles_then_standardises():
    stats = IntensityStats(mean=50.0, median=40.0, std=10.0, min=-1000, max=3000, percentile_00_5=0.0,
                           percentile_99_5=100.0)
    out = normalize_channel(np.array([-500.0, 0.0, 50.0, 80.0, 900.0]), "ct", False, None, stats)
    np.testing.assert_allclose(out, [-5.0, -5.0, 0.0, 3.0, 5.0])
    assert out.dtype == np.float32


def test_zscore_whole_image():
    out = normalize_channel(np.array([1.0, 2.0, 3.0, 4.0]), "zscore", False, None, None)
    assert out.mean() == pytest.approx(0) and out.std() == pytest.approx(1)


def test_zscore_inside_mask_leaves_outside_untouched():
    img = np.array([0.0, 0.0, 2.0, 4.0, 6.0])
    seg = np.array([-1, -1, 0, 1, 0])
    out = normalize_channel(img.copy(), "zscore", True, seg, None)
    np.testing.assert_allclose(out[2:], (img[2:] - 4.0) / np.std([2.0, 4.0, 6.0]), rtol=1e-6)
    assert out[:2].tolist() == [0.0, 0.0]


def test_constant_image_does_not_divide_by_zero():
    out = normalize_channel(np.full(4, 7.0), "zscore", False, None, None)
    assert np.isfinite(out).all() and (out == 0).all()
