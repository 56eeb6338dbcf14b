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
    assert list(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


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
    with pytest.raises(ValueError, match="broken.nii.gz: cannot read the NIfTI header"):
        read_image(bad)
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read_geometry(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        read_image(tmp_path / "nothere.nii.gz")


def write_dicom_series(arr, folder, spacing=(0.8, 0.8, 2.0), origin=(10.0, 20.0, 30.0)):
    """One CT slice file per z with the tags GDCM needs to order them."""
    folder.mkdir(parents=True)
    uid = "1.2.826.0.1.3680043.2.1125.4242"
    for k in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(arr[k])
        sl.SetSpacing(spacing[:2])
        position = "\\".join(str(v) for v in (origin[0], origin[1], origin[2] + k * spacing[2]))
        for tag, value in (("0008|0060", "CT"), ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"),
                           ("0020|0013", str(k + 1)), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0032", position),
                           ("0018|0050", str(spacing[2])), ("0028|0030", f"{spacing[1]}\\{spacing[0]}")):
            sl.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder_is_one_case(tmp_path):
    from sauronnet.inference.inputs import find_cases
    arr = (np.random.RandomState(0).rand(5, 16, 16) * 100).astype(np.int16)
    write_dicom_series(arr, tmp_path / "patient7")
    data, geo = read_image(tmp_path / "patient7")
    np.testing.assert_array_equal(data, arr)
    assert geo.spacing == pytest.approx((0.8, 0.8, 2.0)) and geo.origin == pytest.approx((10.0, 20.0, 30.0))
    cases, problems = find_cases([tmp_path / "patient7"], 1)
    assert problems == [] and cases[0].case_id == "patient7" and cases[0].ending == ".nii.gz"


def test_a_cut_nifti_is_refused_although_simpleitk_reads_it(tmp_path):
    import SimpleITK as sitk
    for name in ("cut.nii.gz", "cut.nii"):
        path = tmp_path / name
        img = np.random.default_rng(0).random((10, 20, 20)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(path))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        sitk.ReadImage(str(path))  # SimpleITK itself says nothing
        with pytest.raises(ValueError, match=f"{name}: the file is incomplete"):
            read_image(path)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_complete_files_pass_the_check(tmp_path, dtype):
    import SimpleITK as sitk
    path = tmp_path / "ok.nii.gz"
    img = (np.random.default_rng(1).random((10, 20, 20)) * 100).astype(dtype)
    sitk.WriteImage(sitk.GetImageFromArray(img), str(path))
    assert np.array_equal(read_image(path)[0], img.astype(np.float32))


def test_non_finite_nifti_voxels_are_found_before_simpleitk_hides_them(tmp_path):
    import SimpleITK as sitk
    img = np.ones((4, 5, 6), np.float32)
    img[1, 2, 3], img[2, 2, 2] = np.nan, np.inf
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(img), str(path))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what SimpleITK shows
    with pytest.raises(ValueError, match="nan.nii.gz: 2 NaN/inf voxel"):
        read_image(path)
