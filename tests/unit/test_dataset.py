import json

import numpy as np
import pytest

from sauronnet.dataset import DatasetError, load_raw_dataset, verify_dataset
from tests.conftest import make_raw_dataset, write_image


def test_valid_dataset_pairs_cases(tmp_path):
    folder = make_raw_dataset(tmp_path, channels=("CT", "T2"))
    ds = load_raw_dataset(folder)
    assert ds.channel_names == ("CT", "T2")
    assert list(c.case_id for c in ds.training) == [f"c{i:02d}" for i in range(5)]
    assert ds.training[0].images[1].name == "c00_0001.nii.gz"
    assert ds.training[0].label.name == "c00.nii.gz"
    assert ds.foreground_labels == (1,)
    assert verify_dataset(ds, progress=False) == []


def _problems(folder):
    try:
        ds = load_raw_dataset(folder)
    except DatasetError as e:
        return e.problems
    return verify_dataset(ds, progress=False)


def test_missing_channel(tmp_path):
    folder = make_raw_dataset(tmp_path, channels=("CT", "T2"))
    (folder / "imagesTr" / "c01_0001.nii.gz").unlink()
    (p,) = _problems(folder)
    assert "case c01 lacks channel file(s) c01_0001.nii.gz" in p


def test_missing_label(tmp_path):
    folder = make_raw_dataset(tmp_path)
    (folder / "labelsTr" / "c02.nii.gz").unlink()
    (p,) = _problems(folder)
    assert p.startswith(str(folder / "labelsTr" / "c02.nii.gz")) and "label file missing" in p


def test_num_training_mismatch(tmp_path):
    folder = make_raw_dataset(tmp_path)
    spec = json.loads((folder / "dataset.json").read_text())
    spec["numTraining"] = 7
    (folder / "dataset.json").write_text(json.dumps(spec))
    (p,) = _problems(folder)
    assert "numTraining is 7 but imagesTr holds 5 cases" in p


def test_missing_dataset_json_key(tmp_path):
    folder = make_raw_dataset(tmp_path)
    spec = json.loads((folder / "dataset.json").read_text())
    spec["modality"] = spec.pop("channel_names")
    (folder / "dataset.json").write_text(json.dumps(spec))
    (p,) = _problems(folder)
    assert "missing key(s) ['channel_names']" in p and "now called 'channel_names'" in p


def test_region_labels_rejected(tmp_path):
    folder = make_raw_dataset(tmp_path)
    spec = json.loads((folder / "dataset.json").read_text())
    spec["labels"]["both"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(spec))
    (p,) = _problems(folder)
    assert "region" in p


@pytest.mark.parametrize("what, kwargs, expected", [
    ("shape", {}, "shape (8, 12, 13) != (8, 12, 12)"),
    ("spacing", {"spacing": (1.0, 1.0, 3.0)}, "spacing"),
    ("origin", {"origin": (5.0, 0.0, 0.0)}, "origin"),
    ("direction", {"direction": (0, 1, 0, 1, 0, 0, 0, 0, 1)}, "direction"),
])
def test_label_geometry_mismatch(tmp_path, what, kwargs, expected):
    folder = make_raw_dataset(tmp_path)
    shape = (8, 12, 13) if what == "shape" else (8, 12, 12)
    write_image(folder / "labelsTr" / "c03.nii.gz", np.zeros(shape, np.uint8),
                **({"spacing": (1.0, 1.0, 2.0)} | kwargs))
    (p,) = _problems(folder)
    assert p.startswith(str(folder / "labelsTr" / "c03.nii.gz")) and expected in p and "resample it" in p


def test_undeclared_label_value(tmp_path):
    folder = make_raw_dataset(tmp_path)
    seg = np.zeros((8, 12, 12), np.uint8)
    seg[0, 0, 0] = 3
    write_image(folder / "labelsTr" / "c04.nii.gz", seg, spacing=(1.0, 1.0, 2.0))
    (p,) = _problems(folder)
    assert "c04.nii.gz: label value(s) [3] are not declared" in p


def test_nan_in_image(tmp_path):
    # .mha keeps NaN (ITK's NIfTI writer stores it as 0).
    folder = make_raw_dataset(tmp_path, file_ending=".mha")
    img = np.ones((8, 12, 12), np.float32)
    img[1, 1, 1] = np.nan
    img[2, 2, 2] = np.inf
    write_image(folder / "imagesTr" / "c00_0000.mha", img, spacing=(1.0, 1.0, 2.0))
    (p,) = _problems(folder)
    assert "c00_0000.mha: 2 NaN/inf voxel(s)" in p


def test_unreadable_file(tmp_path):
    folder = make_raw_dataset(tmp_path)
    (folder / "imagesTr" / "c01_0000.nii.gz").write_bytes(b"garbage")
    (p,) = _problems(folder)
    assert "c01_0000.nii.gz: SimpleITK cannot read" in p


def test_all_problems_reported_together(tmp_path):
    folder = make_raw_dataset(tmp_path)
    (folder / "imagesTr" / "c01_0000.nii.gz").write_bytes(b"garbage")
    seg = np.full((8, 12, 12), 9, np.uint8)
    write_image(folder / "labelsTr" / "c04.nii.gz", seg, spacing=(1.0, 1.0, 2.0))
    assert len(_problems(folder)) == 2


def test_test_images_are_checked(tmp_path):
    folder = make_raw_dataset(tmp_path, file_ending=".mha")
    write_image(folder / "imagesTs" / "t00_0000.mha", np.full((4, 4, 4), np.nan, np.float32))
    ds = load_raw_dataset(folder)
    assert list(c.case_id for c in ds.test) == ["t00"]
    (p,) = verify_dataset(ds, progress=False)
    assert "t00_0000.mha: 64 NaN/inf" in p
