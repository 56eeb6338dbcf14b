import json

import numpy as np
import SimpleITK as sitk

from sauronnet.demo import DemoSpec, make_case, write_demo_dataset
from tests.conftest import SMALL_DEMO


def test_cases_are_deterministic_and_seed_dependent():
    a, b = make_case(SMALL_DEMO, 3), make_case(SMALL_DEMO, 3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a[0]), sitk.GetArrayFromImage(b[0]))
    c = make_case(DemoSpec(**{**SMALL_DEMO.__dict__, "seed": 1}), 3)
    assert not np.array_equal(sitk.GetArrayFromImage(a[0]), sitk.GetArrayFromImage(c[0]))


def test_case_content():
    img, seg = make_case(SMALL_DEMO, 0)
    arr, lab = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(seg)
    assert set(np.unique(lab)) == {0, 1, 2}
    assert arr[lab == 1].mean() > arr[(lab == 0) & (arr != 0)].mean() > arr[lab == 2].mean()
    assert (arr == 0).any()  # zero outside the body
    assert img.GetSpacing() == (1.0, 1.0, 2.5)
    assert img.GetOrigin() != (0.0, 0.0, 0.0)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3)) and np.isclose(np.linalg.det(direction), 1.0)
    assert seg.GetDirection() == img.GetDirection() and seg.GetOrigin() == img.GetOrigin()


def test_layout(small_demo_raw):
    spec = json.loads((small_demo_raw / "dataset.json").read_text())
    assert spec["numTraining"] == SMALL_DEMO.n_train and spec["labels"] == {"background": 0, "lesion": 1, "vessel": 2}
    assert len(list((small_demo_raw / "imagesTr").iterdir())) == SMALL_DEMO.n_train
    assert len(list((small_demo_raw / "imagesTs").iterdir())) == SMALL_DEMO.n_test
    assert sorted(p.name for p in (small_demo_raw / "labelsTs").iterdir()) == [
        p.name.replace("_0000", "") for p in sorted((small_demo_raw / "imagesTs").iterdir())]


def test_existing_folder_needs_overwrite(tmp_path):
    spec = DemoSpec(n_train=1, n_test=0, size_xyz=(20, 20, 8))
    write_demo_dataset(tmp_path, spec)
    try:
        write_demo_dataset(tmp_path, spec)
        raise AssertionError("expected FileExistsError")
    except FileExistsError as e:
        assert "--overwrite" in str(e)
    write_demo_dataset(tmp_path, spec, overwrite=True)
    assert list(p.name for p in tmp_path.iterdir()) == [spec.folder_name]  # no temporary folder left
