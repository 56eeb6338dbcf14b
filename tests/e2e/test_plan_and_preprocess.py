"""The commands as a user runs them, in-process: sauron_demo_data, then sauron_plan_and_preprocess."""
import json
import shutil

import numpy as np
import pytest

from sauronnet import cli
from sauronnet.fingerprint import Fingerprint
from sauronnet.plans import Plans
from sauronnet.serialization import load_dataclass
from tests.conftest import SMALL_DEMO, make_raw_dataset, write_image


def test_demo_then_plan_and_preprocess(data_roots, capsys):
    raw, pre, _ = data_roots
    assert cli.demo_data_main(["--train", str(SMALL_DEMO.n_train), "--test", "2"]) == 0
    assert cli.plan_and_preprocess_main(["-d", "1", "--preset", "cpu", "-c", "all", "--verify",
                                         "--no-progress", "-np", "2"]) == 0
    out = capsys.readouterr().out
    assert "3d_fullres" in out and "GFLOP" in out and "preprocessed 6 cases (3d_fullres)" in out
    ds = pre / "Dataset001_Demo"
    fp = load_dataclass(Fingerprint, ds / "dataset_fingerprint.json")
    assert len(fp.case_ids) == 6
    plans = Plans.load(ds / "cpu" / "plans.json")
    assert plans.preset == "cpu" and plans.labels == {"background": 0, "lesion": 1, "vessel": 2}
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 6
    assert len(json.loads((ds / "splits_final.json").read_text())) == 5
    for c in plans.configurations:
        files = sorted(p.name for p in (ds / "cpu" / c).iterdir())
        assert len(files) == 3 * 6 and "demo_000_seg.npy" in files
    seg = np.load(ds / "cpu" / "3d_fullres" / "demo_000_seg.npy")
    assert {1, 2} <= set(np.unique(seg))


def test_rerun_with_other_preset_by_name(data_roots, capsys):
    raw, pre, _ = data_roots
    shutil.copytree(make_raw_dataset(raw.parent / "src"), raw / "Dataset005_Tiny")
    for preset in ("cpu", "nnunet", "nnunet"):
        assert cli.plan_and_preprocess_main(["-d", "Dataset005_Tiny", "--preset", preset, "--no-progress"]) == 0
    assert (pre / "Dataset005_Tiny" / "cpu" / "plans.json").is_file()
    assert (pre / "Dataset005_Tiny" / "nnunet" / "3d_fullres" / "c00.npy").is_file()


def _break(kind, folder):
    if kind == "missing_label":
        (folder / "labelsTr" / "c01.nii.gz").unlink()
        return "c01.nii.gz"
    if kind == "bad_label_value":
        seg = np.full((8, 12, 12), 7, np.uint8)
        write_image(folder / "labelsTr" / "c02.nii.gz", seg, spacing=(1.0, 1.0, 2.0))
        return "c02.nii.gz: label value(s) [7]"
    if kind == "spacing":
        write_image(folder / "labelsTr" / "c03.nii.gz", np.zeros((8, 12, 12), np.uint8), spacing=(1.0, 1.0, 2.5))
        return "c03.nii.gz: spacing"
    if kind == "unreadable":
        (folder / "imagesTr" / "c04_0000.nii.gz").write_bytes(b"\x00" * 10)
        return "c04_0000.nii.gz: SimpleITK cannot read"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing_label", "bad_label_value", "spacing", "unreadable"])
@pytest.mark.parametrize("verify", [False, True])
def test_broken_dataset_fails_and_writes_nothing(data_roots, capsys, kind, verify):
    raw, pre, _ = data_roots
    folder = make_raw_dataset(raw)
    expected = _break(kind, folder)
    argv = ["-d", "5", "--no-progress"] + (["--verify"] if verify else [])
    assert cli.plan_and_preprocess_main(argv) == 1
    err = capsys.readouterr().err
    assert any(line.startswith("error: ") and expected in line for line in err.splitlines()), err
    assert "nothing was written" in err
    assert not pre.exists()


def test_unknown_dataset(data_roots, capsys):
    assert cli.plan_and_preprocess_main(["-d", "42"]) == 1
    assert "no dataset with id 42" in capsys.readouterr().err


def test_help_explains_the_environment(capsys):
    with pytest.raises(SystemExit) as e:
        cli.plan_and_preprocess_main(["--help"])
    assert e.value.code == 0
    assert "SAURON_RAW" in capsys.readouterr().out


def test_missing_env_vars_default_under_sauron_data(monkeypatch, tmp_path):
    for k in ("SAURON_RAW", "SAURON_PREPROCESSED", "SAURON_RESULTS"):
        monkeypatch.delenv(k, raising=False)
    paths = cli.paths_from_env()
    assert str(paths.raw) == "sauron_data/raw" and str(paths.results) == "sauron_data/results"
