import numpy as np
import pytest
import SimpleITK as sitk

from sauronnet.io import SPACING_2D, read_geometry, read_image, read_images, read_seg, write_seg
from tests.conftest import write_image

OBLIQUE = tuple(np.array([[0.9396926, -0.3420201, 0.0], [0.3420201, 0.9396926, 0.0], [0.0, 0.0, 1.0]]).ravel())


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_round_trip(tmp_path, ending):
    seg = np.zeros((5, 6, 7), np.uint8)
    seg[1:3, 2:4, 3:6] = 2
    src = tmp_path / f"in{ending}"
    write_image(src, seg, spacing=(0.8, 0.9, 2.5), origin=(-12.5, 30.25, 7.0), direction=OBLIQUE)
    arr, geo = read_seg(src)
    assert arr.shape == (5, 6, 7)
    assert geo.spacing_zyx == pytest.approx((2.5, 0.9, 0.8))
    out = tmp_path / f"out{ending}"
    write_seg(arr, geo, out)
    back = sitk.ReadImage(str(out))
    ref = sitk.ReadImage(str(src))
    # NRRD stores spacing folded into "space directions": SimpleITK's own round trip may move the last bit.
    np.testing.assert_allclose(back.GetSpacing(), ref.GetSpacing(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(back.GetOrigin(), ref.GetOrigin(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(back.GetDirection(), ref.GetDirection(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), seg)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_2d_image_gets_a_singleton_slice(tmp_path):
    img = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    img.SetSpacing((0.5, 0.7))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    arr, geo = read_image(tmp_path / "a.nii.gz")
    assert arr.shape == (1, 3, 4)
    assert geo.spacing_zyx == pytest.approx((SPACING_2D, 0.7, 0.5))
    assert read_geometry(tmp_path / "a.nii.gz").shape == (1, 3, 4)


def test_channels_with_different_geometry_are_rejected(tmp_path):
    write_image(tmp_path / "a_0000.nii.gz", np.zeros((2, 3, 4), np.float32))
    write_image(tmp_path / "a_0001.nii.gz", np.zeros((2, 3, 4), np.float32), origin=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="a_0001.nii.gz: geometry differs.*origin"):
        read_images([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"])


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.nii.gz: SimpleITK cannot read"):
        read_image(bad)
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read_geometry(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        read_image(tmp_path / "nothere.nii.gz")
